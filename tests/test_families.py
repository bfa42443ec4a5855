"""The 2026 families on random configs, beyond the shared suites (logits, padding, hooks, KV-cache generation run
there for every family in conftest's NEW_FAMILIES): each layer's attention pattern and residual stream equal to
transformers', sliding-window layers seeing only their window, Gemma 2's soft caps, Qwen2-MoE's routing."""
import pytest
import torch
from conftest import DECODERS, NEW_FAMILIES, VOCAB, assert_close, tiny_hf

from core.model.cache import kinds
from core.weights import zoo
from core.weights.convert import from_transformers

SLIDING = {"mistral": [0, 1], "qwen2": [1], "gemma2": [0], "gemma3": [0]}   # layers with a 5-token window


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def eager_pair(request):
    hf = tiny_hf(request.param)
    hf.set_attn_implementation("eager")  # transformers returns attention patterns only from its eager path
    return request.param, from_transformers(hf), hf


def test_every_layers_pattern_and_residual_stream_match_transformers(eager_pair, ids):
    family, ours, hf = eager_pair
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True, output_attentions=True)
    _, cache = ours.run_with_cache(ids)
    for i in range(ours.cfg.n_layers):
        assert_close(cache["pattern", i], out.attentions[i])
        assert_close(cache["resid_pre", i], out.hidden_states[i])


@pytest.mark.parametrize("family", sorted(SLIDING))
def test_sliding_layers_see_their_window_and_global_layers_everything(family, ids):
    model = from_transformers(tiny_hf(family))
    _, cache = model.run_with_cache(ids, names=kinds("pattern"))
    T = ids.shape[1]
    q, k = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for i in range(model.cfg.n_layers):
        pattern = cache["pattern", i]                                          # (B, H, T, T)
        window = model.cfg.window(i)
        assert (window == 5) == (i in SLIDING[family])
        visible = (k <= q) & ((q - k < window) if window else True)
        assert pattern[..., ~visible].abs().max() == 0 and (pattern[..., visible] > 0).all()


def test_gemma2s_soft_caps_bound_its_scores_and_logits(ids):
    model = from_transformers(tiny_hf("gemma2"))
    logits, cache = model.run_with_cache(ids, names=kinds("attn_scores"))
    scores = cache["attn_scores", 1]                                           # the global layer: nothing masked
    visible = scores[torch.isfinite(scores)]
    assert visible.abs().max() <= model.cfg.attn_softcap == 2.0 and visible.abs().max() > 1.5   # tanh saturates
    assert logits.abs().max() <= model.cfg.logit_softcap == 3.0 and logits.abs().max() > 2.0


def test_qwen2_moe_routes_like_transformers_with_its_gated_shared_expert(ids):
    hf = tiny_hf("qwen2_moe")
    ours = from_transformers(hf)
    seen = []
    handles = [layer.mlp.gate.register_forward_hook(lambda m, i, out: seen.append(out)) for layer in hf.model.layers]
    try:
        with torch.no_grad():
            hf(ids)
    finally:
        for h in handles:
            h.remove()
    _, cache = ours.run_with_cache(ids)
    for i, (logits, weights, experts) in enumerate(seen):
        assert_close(cache["router_logits", i].flatten(0, 1), logits)
        assert torch.equal(cache["expert_indices", i].flatten(0, 1), experts)
        assert_close(cache["expert_weights", i].flatten(0, 1), weights)
        assert (weights.sum(-1) < 1 - 1e-3).all()                               # Qwen2-MoE does not renormalise
        assert cache[f"blocks.{i}.moe.hook_shared_out"].abs().max() > 0


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_a_converted_family_survives_the_zoos_checkpoint(family, tmp_path, ids):
    model = from_transformers(tiny_hf(family))
    zoo.save_checkpoint(model, tmp_path)
    again = zoo.load_checkpoint(tmp_path)
    assert again.cfg == model.cfg
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))


def test_every_family_is_in_the_shared_suites():
    assert set(NEW_FAMILIES) <= set(DECODERS) and VOCAB == 101
