"""The attention-heads and LM-head tabs on real models: heads, GQA, ablation, sampling stages, lens."""
from urllib.parse import parse_qs, urlsplit

import pytest
import torch
from scipy.stats import chisquare

from core.analysis.lens import logit_lens
from core.inference.sampling import SamplingSettings, draw, stages
from core.inputs import InputError
from core.model.attention import ZeroHeads, kv_head_of, pattern_summary, zero_heads
from core.weights import zoo
from explainers.activations import run
from explainers.tabs import attention, lm_head, lm_head_figures

MODELS = ["smollm2-135m", "tiny-gpt-char", "tiny-moe", "tiny-bert-word", "minilm-l6"]
DECODERS = ["smollm2-135m", "tiny-gpt-char", "tiny-moe"]
CAT = "The cat sat on the"


def ids_of(name, text=CAT):
    return tuple(zoo.load(name, "cpu").tokenizer.encode(text))


# --- attention heads ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_one_panel_per_head_and_one_tile_per_layer_head(name):
    cfg = zoo.load(name, "cpu").cfg
    layer_fig, head_fig, qkvz_fig, note, grid_fig, summary_fig, gqa_fig, *_ = attention.update_all(
        name, "the cat sat on the mat", cfg.n_layers - 1, cfg.n_heads - 1, [])
    assert len(layer_fig.data) == cfg.n_heads
    assert {t.hovertemplate.split("<br>")[0] for t in layer_fig.data} == {f"head {h}" for h in range(cfg.n_heads)}
    tiles = png_levels(grid_fig.data[0].source)                      # a PNG: one pixel per weight, 64 levels + blank
    tokens = zoo.load(name, "cpu").tokenizer.tokens("the cat sat on the mat")
    T = len(tokens)
    assert tiles.shape == (cfg.n_layers * (T + 1), cfg.n_heads * (T + 1))
    assert (tiles == 64).sum() == cfg.n_layers * (T + 1) * cfg.n_heads * (T + 1) - cfg.n_layers * cfg.n_heads * T * T
    patterns = run(name, tuple(t.id for t in tokens)).cache.stack("pattern")
    last = tiles[-(T + 1):-1, -(T + 1):-1]                            # the last layer's last head
    assert (last == (patterns[-1, -1].numpy() * 63 + 0.5).astype(int)).all()
    assert len(qkvz_fig.data) == 4 and all(len(fig.data) for fig in (summary_fig, gqa_fig, head_fig))
    cells = grid_fig.data[1]  # a click on a thumbnail opens that head: an invisible cell over each tile
    assert (len(cells.y), len(cells.x)) == (cfg.n_layers, cfg.n_heads)
    assert cells.x[-1] == (cfg.n_heads - 1) * (T + 1) + T / 2 and cells.y[-1] == (cfg.n_layers - 1) * (T + 1) + T / 2
    opened = parse_qs(urlsplit(cells.customdata[-1][-2]).query)
    assert opened["tab"] == ["attention"] and opened["layer"] == [str(cfg.n_layers - 1)]
    assert opened["head"] == [str(cfg.n_heads - 2)] and opened["text"] == ["the cat sat on the mat"]


def png_levels(source: str):
    """The palette index of every pixel of a figures.png data URI."""
    import base64
    import io

    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def test_gqa_map_matches_smollm2_config():
    cfg = zoo.load("smollm2-135m", "cpu").cfg
    assert (cfg.n_heads, cfg.n_kv_heads) == (9, 3)
    fig = attention.gqa_figure(cfg)
    share = torch.tensor(fig.data[0].z)                              # (G, H)
    assert share.shape == (3, 9) and (share.sum(0) == 1).all() and (share.sum(1) == 3).all()
    assert [int(share[:, h].argmax()) for h in range(9)] == kv_head_of(9, 3) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    per_token_kib = list(fig.data[1].y)                               # MHA, this model, MQA
    assert per_token_kib == [2 * 30 * g * 64 * 4 / 1024 for g in (9, 3, 1)]
    _, _, qkvz, *_ = attention.update_head("smollm2-135m", CAT, 0, 4)
    assert "K/V head 1" in qkvz.layout.annotations[1].text


@pytest.mark.parametrize("name", DECODERS + ["tiny-bert-word"])
def test_ablating_none_is_bit_identical_and_a_head_changes_the_prediction(name):
    model = zoo.load(name, "cpu")
    ids = ids_of(name)
    with torch.no_grad():
        plain = model(torch.tensor([ids]))[0]
    every = lambda recorded: torch.stack([recorded.logits(p) for p in range(len(ids))])  # noqa: E731
    assert torch.equal(every(run(name, ids, ZeroHeads(()))), every(run(name, ids)))
    torch.testing.assert_close(every(run(name, ids)), plain, rtol=0, atol=1e-4)  # explicit attention vs SDPA
    changed = every(run(name, ids, ZeroHeads(((0, 0), (model.cfg.n_layers - 1, 1)))))
    assert (changed[-1].softmax(-1) - plain[-1].softmax(-1)).abs().sum() > 1e-3
    fig, note = attention.update_ablation(name, CAT, [])
    assert "identical" in note and [b.x for b in fig.data[:1]] == [b.x for b in fig.data[1:]]
    fig, note = attention.update_ablation(name, CAT, ["L0 H0", f"L{model.cfg.n_layers - 1} H1"])
    assert "Zeroed 2 head(s)" in note


def test_zero_heads_zeroes_exactly_the_chosen_heads():
    model = zoo.load("tiny-gpt-char", "cpu")
    ids = torch.tensor([model.tokenizer.encode("to be or not")])
    _, plain = model.run_with_cache(ids, names="blocks.1.attn.hook_z")
    expected = plain["blocks.1.attn.hook_z"].clone()                 # (1, T, H, D)
    expected[:, :, 2] = 0
    with model.hooks(zero_heads([(1, 2)])):
        _, cache = model.run_with_cache(ids, names="blocks.1.hook_attn_out")
    with torch.no_grad():
        want = model.blocks[1].attn.o_proj(expected.flatten(2))
    torch.testing.assert_close(cache["blocks.1.hook_attn_out"], want, rtol=0, atol=1e-6)


def test_pattern_summary_on_hand_made_patterns():
    T = 5
    previous = torch.zeros(T, T)
    previous[0, 0] = 1
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1               # every query reads the token before it
    first = torch.zeros(T, T)
    first[:, 0] = 1
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    s = pattern_summary(torch.stack([previous, first, uniform]))
    assert s["previous"].tolist() == [1.0, 0.25, pytest.approx(sum(1 / t for t in range(2, T + 1)) / (T - 1))]
    assert s["first"][1] == 1 and s["entropy"][0] == 0 and s["entropy"][1] == 0
    assert s["entropy"][2] == pytest.approx(sum(torch.log(torch.tensor(t, dtype=torch.float)) for t in range(1, T + 1)) / T)


def test_attention_bad_input_gets_plain_messages():
    with pytest.raises(InputError, match="empty"):
        attention.update_all("tiny-gpt-char", "  ", 0, 0, [])
    *_, note, layer, head = attention.update_head("tiny-gpt-char", "x" * 10_000, 99, -3)
    assert "first 32" in note and "layer was 99" in note and "head was -3" in note
    assert (layer.maximum, layer.value, head.maximum, head.value) == (3, 3, 3, 0)
    for text in ["👩‍👩‍👧 family", "مرحبا بالعالم", "a\x00b"]:
        assert attention.update_all("smollm2-135m", text, 0, 0, [])[0].data
    with pytest.raises(InputError, match="not in this model"):
        attention.update_ablation("tiny-gpt-char", CAT, ["L9 H0"])
    with pytest.raises(InputError, match="not a head"):
        attention.update_ablation("tiny-gpt-char", CAT, ["head three"])
    fig, note = attention.update_ablation("minilm-l6", CAT, [])
    assert fig is None and "no output head" in note


# --- LM head -----------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [(1.0, 0, 1.0), (0.7, 20, 0.9), (1.5, 5, 0.5), (0.0, 0, 1.0)])
def test_every_stage_shown_equals_core_sampling(settings):
    T, k, p = settings
    name = "smollm2-135m"
    fig, note, lab, *_ = lm_head.update(name, CAT, -1, T, k, p, 0, 200)
    logits = run(name, ids_of(name)).logits(-1)
    st = stages(logits, SamplingSettings(T, k, p))
    order = logits.topk(lm_head_figures.SHOWN).indices
    for panel, (key, _) in enumerate(lm_head_figures.STAGES):
        shown = torch.tensor(fig.data[panel].x)
        want = st[key][order]
        assert torch.equal(shown, want.masked_fill(torch.isinf(want), 0).float())
        assert [t == "cut" for t in fig.data[panel].text] == torch.isinf(want).tolist()
    assert torch.allclose(torch.tensor(fig.data[-1].x), st["probs"][order])
    assert f"**{int(torch.isfinite(st['top_p']).sum()):,}** after top-p" in note


@pytest.mark.parametrize("name", DECODERS)
def test_temperature_zero_always_picks_the_argmax(name):
    argmax = int(run(name, ids_of(name)).logits(-1).argmax())
    for seed in range(5):
        text, rows, state = lm_head.next_token(name, CAT, 0, 50, 0.9, seed, None)
        assert state["ids"] == list(ids_of(name)) + [argmax] and rows[0][2] == "100.0%"


def test_next_token_appends_step_by_step_and_fills_masks():
    name = "smollm2-135m"
    text, rows, state = lm_head.next_token(name, CAT, 0.8, 40, 0.95, 3, None)
    text, rows, state = lm_head.next_token(name, text, 0.8, 40, 0.95, 3, state)
    assert len(rows) == 2 and len(state["ids"]) == len(ids_of(name)) + 2 and text.startswith(CAT)
    assert all(r[3] for r in rows)                                   # every step lists its candidates
    again = lm_head.next_token(name, CAT, 0.8, 40, 0.95, 3, None)
    assert again[2]["ids"] == state["ids"][:-1]                      # seeded: the same first draw
    text, rows, _ = lm_head.next_token("tiny-bert-word", "to be or not to [MASK]", 0, 0, 1.0, 0, None)
    assert "[mask]" not in text.lower() and text.startswith("to be or not to ")
    with pytest.raises(InputError, match="MASK"):
        lm_head.next_token("tiny-bert-word", "to be or not to be", 1, 0, 1.0, 0, None)
    with pytest.raises(InputError, match="no output head"):
        lm_head.next_token("minilm-l6", CAT, 1, 0, 1.0, 0, None)


def test_sampling_lab_frequencies_converge_to_the_distribution():
    logits = run("smollm2-135m", ids_of("smollm2-135m")).logits(-1)
    probs = stages(logits, SamplingSettings(1.0, 12, 1.0))["probs"]
    kept = probs > 0
    counts = draw(probs, 100_000, seed=1)
    assert counts.sum() == 100_000 and (counts[~kept] == 0).all()
    expected = probs[kept].double() / probs[kept].double().sum() * 100_000
    assert chisquare(counts[kept].double(), expected).pvalue > 1e-3
    tv = lambda n: 0.5 * (draw(probs, n, 2).float() / n - probs).abs().sum()
    assert tv(100_000) < tv(100) / 5


@pytest.mark.parametrize("name", DECODERS + ["tiny-bert-word"])
def test_logit_lens_last_layer_is_the_models_prediction(name):
    model = zoo.load(name, "cpu")
    ids = torch.tensor(ids_of(name, "to be or not to be, that is"))
    lens = logit_lens(model, run(name, tuple(ids.tolist())).cache.accumulated_resid(), k=3)
    with torch.no_grad():
        probs = model(ids[None])[0].softmax(-1)
    assert lens["top_ids"].shape == (model.cfg.n_layers + 1, len(ids), 3)
    assert torch.equal(lens["top_ids"][-1, :, 0], probs.argmax(-1))
    torch.testing.assert_close(lens["top_probs"][-1, :, 0], probs.max(-1).values)
    torch.testing.assert_close(lens["final_prob"][-1], probs.max(-1).values)
    fig = lm_head.update_lens(name, "to be or not to be, that is")
    assert fig.data[0].z.shape == (model.cfg.n_layers + 1, len(ids))


def test_a_sampling_slider_reuses_the_forward_pass():
    name = "smollm2-135m"
    model = zoo.load(name, "cpu")
    runs = []
    handle = model.embed.register_forward_hook(lambda *a: runs.append(1))
    try:
        lm_head.update(name, "A fresh sentence for the counter", -1, 1.0, 50, 0.9, 0, 200)
        first = len(runs)
        for T, k, p in [(0.5, 50, 0.9), (1.2, 5, 0.5), (0, 0, 1.0)]:
            lm_head.update(name, "A fresh sentence for the counter", -1, T, k, p, 1, 500)
    finally:
        handle.remove()
    assert first == 1 and len(runs) == 1


@pytest.mark.parametrize("text", ["", "   ", "x" * 10_000, "👩‍👩‍👧 family", "مرحبا بالعالم", "a\x00b\x07c", "日本語"])
def test_lm_head_answers_odd_text_plainly(text):
    if not text.strip():
        with pytest.raises(InputError, match="empty"):
            lm_head.update("smollm2-135m", text, -1, 1, 50, 0.9, 0, 200)
        return
    fig, note, *_ = lm_head.update("smollm2-135m", text, -1, 1, 50, 0.9, 0, 200)
    assert fig.data and ("first 2000" in note) == (len(text) > 2000)


@pytest.mark.parametrize("settings, message", [
    ((-0.5, 50, 0.9), "temperature must be from 0 to 10"), ((1.0, 50, 0.0), "top-p must be above 0"),
    ((1.0, 50, 1.5), "top-p must be from 0 to 1"), (("hot", 50, 0.9), "temperature must be a number"),
    ((float("nan"), 50, 0.9), "temperature must be from 0 to 10"), ((1.0, -4, 0.9), None), ((1.0, 10**9, 0.9), None)])
def test_lm_head_settings_out_of_range(settings, message):
    T, k, p = settings
    if message:
        with pytest.raises(InputError, match=message):
            lm_head.update("tiny-gpt-char", "to be", -1, T, k, p, 0, 200)
        return
    _, note, *_ = lm_head.update("tiny-gpt-char", "to be", -1, T, k, p, 0, 200)
    assert ("every token is kept" in note) if k > 0 else ("top-k was -4" in note)
