"""KV cache: the same numbers as a full forward, the same tokens as transformers."""
import pytest
import torch
from conftest import assert_close

from core import HookedTransformer, ModelConfig
from core.inference.generation import generate
from core.model.kv_cache import KVCache, cache_bytes

EXTRA_DECODERS = {
    "alibi": ModelConfig(positions="alibi", n_ctx=64),
    "sinusoidal-window": ModelConfig(positions="sinusoidal", sliding_window=5, n_ctx=64),
    "mqa-rope": ModelConfig(positions="rope", norm="rmsnorm", n_kv_heads=1, gated_ffn=True, act="silu", n_ctx=64),
}


def incremental_logits(model, ids, prefill: int):
    """Prefill `prefill` tokens, then feed the rest one at a time through the cache."""
    cache = KVCache(model.cfg.n_layers)
    with torch.no_grad():
        steps = [model(ids[:, :prefill], kv_cache=cache)]
        steps += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(prefill, ids.shape[1])]
    return torch.cat(steps, dim=1), cache


def test_incremental_logits_equal_full_forward(decoder_pair, ids):
    _, model, _ = decoder_pair
    got, cache = incremental_logits(model, ids, prefill=7)
    with torch.no_grad():
        assert_close(got, model(ids))
    assert len(cache) == ids.shape[1]


@pytest.mark.parametrize("name", EXTRA_DECODERS)
def test_incremental_logits_equal_full_forward_other_positions(name):
    torch.manual_seed(0)
    model = HookedTransformer(EXTRA_DECODERS[name]).eval()
    ids = torch.randint(0, 256, (1, 20))
    got, _ = incremental_logits(model, ids, prefill=3)
    with torch.no_grad():
        assert_close(got, model(ids))


def test_greedy_tokens_match_with_and_without_cache_and_transformers(decoder_pair):
    _, model, hf = decoder_pair
    prompt = [5, 17, 42, 8, 99]
    cached = generate(model, prompt, 24, use_cache=True).new_ids
    uncached = generate(model, prompt, 24, use_cache=False).new_ids
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None,
                          pad_token_id=0, min_new_tokens=24)
    assert cached == uncached == ref[0, len(prompt):].tolist()


def test_smollm2_greedy_matches_with_and_without_cache(smollm2):
    prompt = smollm2.tokenizer.encode("The capital of France is")
    cached = generate(smollm2, prompt, 12, use_cache=True)
    uncached = generate(smollm2, prompt, 12, use_cache=False)
    assert cached.new_ids == uncached.new_ids
    assert smollm2.tokenizer.decode(cached.new_ids).startswith(" Paris")


def test_cache_size_formula_matches_the_real_tensors(decoder_pair, ids):
    _, model, _ = decoder_pair
    _, cache = incremental_logits(model, ids[:1], prefill=4)
    c = model.cfg
    assert cache.nbytes() == cache_bytes(c.n_layers, c.n_kv_heads, c.d_head, ids.shape[1], 4)


def test_generation_refuses_to_run_past_the_context():
    model = HookedTransformer(ModelConfig(n_ctx=16)).eval()
    with pytest.raises(ValueError, match="exceed the context"):
        generate(model, [1, 2, 3], 20)
