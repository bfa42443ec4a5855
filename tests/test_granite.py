"""GraniteMoe (IBM's granite-3.x-*-a*m MoE decoders) on a random config: what transformers computes, hook by hook,
and the MoE tab on it. Logits, padding, KV-cache generation and hook shapes run in the shared suites (conftest's
"granitemoe" family)."""
import pytest
import torch
from conftest import VOCAB, assert_close, tiny_hf
from safetensors.torch import load_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import GraniteMoeForCausalLM, PreTrainedTokenizerFast

import core.model.transformer
from core import HookedTransformer, ModelConfig
from core.analysis.anatomy import decompose, direct_logit_attribution, inside_block
from core.model.cache import kinds
from core.model.moe import route
from core.model.transformer import active_parameters
from core.weights import zoo
from core.weights.convert import from_transformers
from core.weights.tokenizers import CharTokenizer
from explainers.activations import forget_runs
from explainers.tabs import causal_mask, moe


@pytest.fixture(scope="module")
def granite():
    hf = tiny_hf("granitemoe")
    hf.set_attn_implementation("eager")  # transformers returns attention patterns only from its eager path
    return from_transformers(hf), hf


def hf_routing(hf, ids):
    """transformers' own router outputs per layer, (router logits, top-k weights, top-k experts), read by
    forward hooks on its router modules."""
    seen = []
    handles = [layer.block_sparse_moe.router.register_forward_hook(lambda m, i, out: seen.append(out))
               for layer in hf.model.layers]
    try:
        with torch.no_grad():
            out = hf(ids, output_hidden_states=True, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return out, seen


def test_the_converted_config_carries_granites_multipliers(granite):
    ours, hf = granite
    c = hf.config
    assert (ours.cfg.embed_scale, ours.cfg.attn_scale, ours.cfg.logit_divisor) == \
        (c.embedding_multiplier, c.attention_multiplier, c.logits_scaling)
    assert (ours.cfg.n_experts, ours.cfg.top_k, ours.cfg.family) == (5, 3, "moe") and ours.unembed.weight is None


def test_a_checkpoint_in_granites_hub_layout_loads_through_the_zoo(tmp_path, ids):
    """save_pretrained writes the hub's layout (experts as input_linear / output_linear, router.layer); the zoo's
    hub loader reads such a folder as it reads the hub, and core.weights.convert finds every weight."""
    hf = tiny_hf("granitemoe")
    hf.save_pretrained(tmp_path)
    assert "model.layers.0.block_sparse_moe.input_linear.weight" in load_file(tmp_path / "model.safetensors")
    words = Tokenizer(WordLevel({"[UNK]": 0, "the": 1, "cat": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path)
    model = zoo._from_hub(GraniteMoeForCausalLM, str(tmp_path))
    assert model.tokenizer.encode("the cat") == [1, 2]
    with torch.no_grad():
        assert_close(model(ids), hf(ids).logits)


def test_router_logits_expert_choices_and_weights_match_transformers(granite, ids):
    ours, hf = granite
    _, cache = ours.run_with_cache(ids, names=kinds("router_logits", "expert_weights", "expert_indices"))
    _, seen = hf_routing(hf, ids)
    B, T = ids.shape
    for i, (logits, weights, experts) in enumerate(seen):  # transformers: (B*T, E), (B*T, K), (B*T, K)
        assert_close(cache["router_logits", i], logits.view(B, T, -1))
        assert torch.equal(cache["expert_indices", i], experts.view(B, T, -1))
        assert_close(cache["expert_weights", i], weights.view(B, T, -1), atol=1e-6)


def test_residual_stream_and_attention_patterns_match_transformers(granite, ids):
    """The embedding multiplier is in hook_embed, the residual multiplier in what each block writes (so the
    stream equals transformers' hidden states), and the attention multiplier in every pattern."""
    ours, hf = granite
    final, cache = ours.run_with_cache(ids, names=kinds("embed", "resid_post", "pattern"), logits=False)
    out, _ = hf_routing(hf, ids)
    L = ours.cfg.n_layers
    assert_close(cache["embed"], out.hidden_states[0])
    for i in range(L):
        assert_close(cache["pattern", i], out.attentions[i], atol=1e-5)
        if i < L - 1:  # transformers' last hidden state is after the final norm
            assert_close(cache["resid_post", i], out.hidden_states[i + 1])
    assert_close(final, out.hidden_states[L])


def test_granites_softmax_over_the_top_k_logits_is_our_renormalised_top_k():
    """Granite keeps the k largest router logits and softmaxes only them; Mixtral (and core.model.moe.route) softmaxes
    all E, keeps the k largest and renormalises. The denominators cancel: the same experts, the same weights."""
    logits = torch.randn(1000, 32, generator=torch.Generator().manual_seed(0))
    top_logits, granite_experts = logits.topk(8, dim=-1)
    weights, experts = route(logits, 8)
    assert torch.equal(experts, granite_experts)
    torch.testing.assert_close(weights, top_logits.softmax(-1))


def test_the_residual_stream_tools_stay_exact_with_granites_multipliers(granite, ids):
    """Pieces (scaled embedding, each head, each FFN) sum to the stream; their direct effects, through the logit
    divisor, sum to the logit; the chosen experts' weighted outputs sum to hook_mlp_out."""
    ours, _ = granite
    logits, cache = ours.run_with_cache(ids[:1])
    logits, cache, pos = logits[0], cache.remove_batch_dim(), ids.shape[1] - 1
    labels, pieces = decompose(ours, cache, pos)
    assert_close(pieces.sum(0), cache["resid_post", ours.cfg.n_layers - 1][pos])
    token = int(logits[pos].argmax())
    dla = direct_logit_attribution(ours, pieces, token)
    assert dla["direct"].sum() + dla["constant"] == pytest.approx(float(logits[pos, token]), abs=1e-4)
    inside = inside_block(ours, cache, 1, pos)
    assert_close(sum(f["weight"] * f["out"] for f in inside["ffns"]), inside["mlp_out"])


def test_the_causal_mask_tabs_steps_use_granites_attention_scale(granite, ids):
    ours, _ = granite
    _, cache = ours.run_with_cache(ids[:1], names=kinds("q", "k", "v", "rot_q", "rot_k", "mask", "pattern"))
    cache = cache.remove_batch_dim()
    steps = causal_mask.compute_steps(ours, cache, 1, 2)
    assert_close(steps["scaled"], steps["qk"] * ours.cfg.attn_scale, atol=1e-6)
    assert_close(steps["pattern"], cache["pattern", 1][2], atol=1e-6)
    fig = causal_mask.steps_figure(steps, [str(t) for t in ids[0].tolist()], ours.cfg.attn_scale)
    assert fig.layout.annotations[1].text == "× 0.125"


@pytest.fixture
def granite_in_zoo(granite, monkeypatch):
    """The random Granite served by the zoo under the real entry's name, with a character tokenizer."""
    model = granite[0]
    model.tokenizer = CharTokenizer(["\n"] + [chr(c) for c in range(32, 32 + VOCAB - 1)])   # one char per id
    model.name = zoo.GRANITE
    monkeypatch.setitem(zoo._loaded, (zoo.GRANITE, "cpu", "fp32"), model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # listed, as where the hub is reachable
    monkeypatch.setattr(moe, "SAMPLE_CHARS", 2_000)
    yield model
    forget_runs()  # nothing recorded from this stand-in outlives the test under the real model's name
    moe.corpus_load.cache_clear()


def test_moe_tab_runs_on_granite(granite_in_zoo):
    model = granite_in_zoo
    text = "ROMEO:\nBut, soft! what light"
    choices, coloured, router, load, stats, effect, note, notice, *sliders = moe.update(
        zoo.GRANITE, text, 1, 3, model.cfg.top_k, 0, 0, [], "none")
    ids = torch.tensor([model.tokenizer.encode(text)])
    _, cache = model.run_with_cache(ids, names=kinds("expert_indices"))
    assert torch.equal(torch.tensor(choices.data[0].z), cache.stack("expert_indices")[:, 0, :, 0])
    assert len(router.data[0].x) == 5 and sum(bool(t) for t in router.data[0].text) == 3   # 5 experts, top-3
    assert torch.tensor(load.data[1].z).sum(-1).allclose(torch.ones(2))
    assert "3 of 5 experts" in stats and notice == ""
    assert [s.maximum for s in sliders] == [model.cfg.n_layers - 1, len(model.tokenizer.encode(text)) - 1, 5]
    assert moe.expert_widgets(zoo.GRANITE)[0].choices == [(f"e{e}", f"e{e}") for e in range(5)]
    *_, effect, note, _, _, _, _ = moe.update(zoo.GRANITE, text, 0, -1, 1, 0, 0, ["e2"], "none")
    assert "total variation" in note


def test_the_real_model_is_1_3b_parameters_with_400m_active_and_reads_a_short_corpus_sample(monkeypatch):
    """granite-3.x-1b-a400m's shape (its config.json), built on the meta device: no memory, no weights."""
    monkeypatch.setattr(core.model.transformer, "_init_weights", lambda module: None)  # nothing to initialise on meta
    cfg = ModelConfig(family="moe", vocab_size=49155, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=8, d_ff=512,
                      positions="rope", norm="rmsnorm", act="silu", gated_ffn=True, bias=False, n_experts=32, top_k=8)
    with torch.device("meta"):
        model = HookedTransformer(cfg)
    total = sum(p.numel() for p in model.parameters())
    assert 1.30e9 < total < 1.36e9 and 0.40e9 < active_parameters(model) < 0.45e9
    assert moe.sample_chars(model) == moe.LARGE_MODEL_CHARS
