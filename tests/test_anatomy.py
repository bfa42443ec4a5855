"""Inside the model: norms step by step, FFN steps, the residual stream as an exact sum, direct logit attribution."""
import pytest
import torch
import torch.nn.functional as F
from conftest import NEW_FAMILIES, VOCAB, tiny_hf

from core.analysis.anatomy import decompose, direct_logit_attribution, inside_block, norm_steps
from core.inputs import InputError
from core.model.attention import softcap
from core.weights import zoo
from core.weights.convert import from_transformers

TEXT = "The capital of France is"


@pytest.fixture(scope="module", params=["smollm2-135m", "tiny-gpt-char", "tiny-moe", *NEW_FAMILIES])
def traced(request):
    """A real model on TEXT, or a random model of a 2026 family (conftest) on random tokens."""
    if request.param in NEW_FAMILIES:
        model = from_transformers(tiny_hf(request.param))
        ids = torch.randint(1, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
    else:
        model = zoo.load(request.param, "cpu")
        ids = torch.tensor([model.tokenizer.encode(TEXT)])
    logits, cache = model.run_with_cache(ids)
    return model, logits[0], cache.remove_batch_dim()


def test_layernorm_and_rmsnorm_steps_equal_torch():
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(64, generator=g) * 3 + 1 for _ in range(3))
    ln, rms = norm_steps(x, False, w, b, 1e-5), norm_steps(x, True, w, None, 1e-5)
    torch.testing.assert_close(ln["out"], F.layer_norm(x, (64,), w, b, 1e-5))
    torch.testing.assert_close(rms["out"], F.rms_norm(x, (64,), w, 1e-5))
    torch.testing.assert_close(ln["mean_square"], x.var(unbiased=False))  # centred: the variance
    torch.testing.assert_close(rms["mean_square"], x.pow(2).mean())       # not centred: the mean square
    assert abs(float(ln["normalized"].mean())) < 1e-5 and float(rms["normalized"].mean()) != pytest.approx(0, abs=1e-3)


def test_the_pieces_sum_to_the_final_residual_stream(traced):
    model, _, cache = traced
    last = cache["resid_post", model.cfg.n_layers - 1]
    for pos in (0, last.shape[0] - 1):
        labels, pieces = decompose(model, cache, pos)
        assert len(labels) == len(pieces)
        assert (pieces.sum(0) - last[pos]).norm() <= 1e-4 * last[pos].norm()


def test_direct_logit_attributions_add_up_to_the_logit(traced):
    model, logits, cache = traced
    pos = logits.shape[0] - 1
    token = int(logits[pos].argmax())
    _, pieces = decompose(model, cache, pos)
    dla = direct_logit_attribution(model, pieces, token)
    total = dla["direct"].sum() + dla["constant"]          # the logit before Gemma 2's soft cap, where it has one
    assert float(softcap(total, model.cfg.logit_softcap)) == pytest.approx(float(logits[pos, token]), abs=1e-3)
    assert float(softcap(torch.tensor(dla["logit"]), model.cfg.logit_softcap)) == pytest.approx(
        float(logits[pos, token]), abs=1e-3)


def test_the_block_view_reruns_the_models_own_steps(traced):
    model, _, cache = traced
    layer, pos = model.cfg.n_layers // 2, 2
    view = inside_block(model, cache, layer, pos)
    block = model.blocks[layer]
    norm, name = (block.ln1, "ln1") if block.ln1 is not None else (block.ln1_post, "ln1_post")   # OLMo 2: after
    own = "rmsnorm" if norm.rms else "layernorm"
    at = lambda hook: cache[f"blocks.{layer}.{name}.{hook}"][pos]
    assert view["norms"][0] is norm
    if name == "ln1":
        torch.testing.assert_close(view["ln1"][own]["out"], norm(cache["resid_pre", layer][pos]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view["ln1"][own]["normalized"], at("hook_normalized"), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view["ln1"][own]["scale"], at("hook_scale")[0], rtol=1e-5, atol=1e-5)
    ffn_out = sum(f["weight"] * f["out"] for f in view["ffns"])
    if model.cfg.out_norm:                                    # Gemma, OLMo 2: the FFN's sum goes through ln2_post
        ffn_out = block.ln2_post(ffn_out)
    torch.testing.assert_close(ffn_out, cache["mlp_out", layer][pos], rtol=1e-4, atol=1e-5)
    if "pre" in cache.layer(layer):  # a dense FFN: its neurons are hook_pre / hook_post
        torch.testing.assert_close(view["ffns"][0]["post"], cache["post", layer][pos], rtol=1e-5, atol=1e-5)
    else:
        routed = [f["expert"] for f in view["ffns"] if f["expert"] != "shared"]   # Qwen2-MoE's shared expert
        assert routed == cache["expert_indices", layer][pos].tolist()
        assert len(view["ffns"]) - len(routed) == (1 if model.cfg.d_shared else 0)
    sizes = [n["size"] for n in view["neurons"]]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 8


def test_post_norm_and_headless_models_are_refused_plainly(minilm):
    ids = torch.tensor([minilm.tokenizer.encode("hello world")])
    _, cache = minilm.run_with_cache(ids)
    with pytest.raises(InputError, match="post-norm"):
        decompose(minilm, cache.remove_batch_dim(), 0)
    bert = zoo.load("tiny-bert-word", "cpu")
    _, cache = bert.run_with_cache(torch.tensor([bert.tokenizer.encode("the king is")]))
    _, pieces = decompose(bert, cache.remove_batch_dim(), 0)  # pre-norm: the sum still holds
    with pytest.raises(InputError, match="needs a decoder"):
        direct_logit_attribution(bert, pieces, 5)
