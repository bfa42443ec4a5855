"""The 2026 families on random configs, beyond the shared suites (logits, padding, hooks, KV-cache generation run
there for every family in conftest's NEW_FAMILIES): each layer's attention pattern and residual stream equal to
transformers', Gemma 2's soft caps, Qwen2-MoE's routing, the tabs on each family (sliding windows: test_masks)."""
import functools
import math

import pytest
import torch
from conftest import DECODERS, NEW_FAMILIES, VOCAB, assert_close, tiny_hf

from core.model.cache import kinds
from core.weights import zoo
from core.weights.convert import from_transformers


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


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "mistral"])
def test_the_causal_mask_tabs_steps_soft_cap_and_slide_as_the_model_does(family, ids):
    from explainers.tabs.causal_mask import compute_steps, own_window
    model = from_transformers(tiny_hf(family))
    _, cache = model.run_with_cache(ids[:1])
    cache = cache.remove_batch_dim()
    for layer in range(model.cfg.n_layers):
        steps = compute_steps(model, cache, layer, head=3)
        assert_close(steps["pattern"], cache["pattern", layer][3])
        note = own_window(model.cfg, layer, "model's own")
        assert ("slides: each query sees only the last 5 tokens" in note) == (model.cfg.window(layer) == 5)
    assert own_window(model.cfg, 0, "causal") == ""


@functools.cache
def model_handlers() -> list:
    """The page's handlers that take a model, the train group's runs aside (the page is built once)."""
    from test_product import handlers
    return [fn for fn in (p.values[0] for p in handlers())
            if fn.concurrency_id != "train" and any(getattr(c, "label", None) == "Model" for c in fn.inputs)]


def every_tab(name: str) -> list:
    """Each page handler that takes a model, called with its defaults on that model: what it raised when that
    was not a plain refusal."""
    import gradio as gr
    from test_product import call
    failed = []
    for fn in model_handlers():
        try:
            call(fn, [name if getattr(c, "label", None) == "Model" else c.value for c in fn.inputs])
        except gr.Error as e:
            if "Something went wrong" in e.message:
                failed.append((fn.name, e.message))
    return failed


@pytest.fixture
def in_zoo(monkeypatch, request):
    """A random model of the family served by the zoo as `random-FAMILY`, one character per token id."""
    import threading

    from core.weights.tokenizers import CharTokenizer
    from explainers.activations import forget_runs
    model = from_transformers(tiny_hf(request.param)).requires_grad_(False)
    model.tokenizer = CharTokenizer(["\n"] + [chr(c) for c in range(32, 32 + VOCAB - 1)])
    model.name = name = f"random-{request.param}"
    monkeypatch.setattr(zoo, "SPECS", {**zoo.SPECS, name: zoo.Spec(name, name, "a test", lambda: model, lambda: None)})
    monkeypatch.setitem(zoo._locks, name, threading.Lock())
    yield name
    forget_runs()
    for key in [k for k in zoo._loaded if k[0] == name]:
        zoo._loaded.pop(key)


# The two families with the most mechanisms; every family draws every tab through the hub path in the slow tier
# (tests/test_load_by_name.py)
@pytest.mark.parametrize("in_zoo", ["gemma3", "qwen2_moe"], indirect=True)
def test_every_tab_draws_on_the_family(in_zoo):
    assert every_tab(in_zoo) == []


def test_a_weight_the_converter_does_not_read_is_refused_not_dropped():
    """A config flag that adds a tensor (here a bias on Llama's down-projection, mlp_bias without the check that
    refuses it) must not vanish silently: the converter names what it did not read."""
    import core.weights.convert as convert
    hf = tiny_hf("llama")
    hf.model.layers[0].mlp.down_proj.bias = torch.nn.Parameter(torch.ones(32))
    with pytest.raises(ValueError, match="does not convert: model.layers.0.mlp.down_proj.bias"):
        convert.from_transformers(hf)


@pytest.mark.parametrize("family", ["llama", "olmo2", "mistral"])
def test_a_window_is_applied_only_where_transformers_applies_it(family, ids):
    """A stray sliding_window in Llama's or OLMo 2's config.json is ignored by transformers, and Mistral applies its
    window to every layer whatever layer_types says: the converted model follows each."""
    hf = tiny_hf(family)
    hf.config.sliding_window = 4
    hf.config.layer_types = ["sliding_attention", "full_attention"]
    model = from_transformers(hf)
    assert (model.cfg.sliding_window, model.cfg.window_layers) == ((4, None) if family == "mistral" else (None, None))
    with torch.no_grad():
        assert_close(model(ids), hf(ids).logits)


@pytest.mark.parametrize("in_zoo", ["gemma2"], indirect=True)
def test_the_residual_tab_gives_gemma_2s_logit_before_and_after_its_soft_cap(in_zoo):
    from explainers.tabs import residual
    notice = residual.update(in_zoo, "ROMEO: But soft", -1, "")[0]
    raw = float(notice.split("the model's logit is **")[1].split("**")[0])
    capped = float(notice.split("makes it ")[1].split(")")[0])
    assert "before its ±3 soft cap" in notice and capped == pytest.approx(3 * math.tanh(raw / 3), abs=2e-3)
