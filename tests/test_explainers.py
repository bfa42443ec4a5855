"""The tokenizer, embeddings and causal-mask tabs on real models: figures, numbers and bad input."""
import re

import numpy as np
import pytest
import torch

from core.inputs import InputError, clean_text
from core.model.attention import MaskOverride
from core.weights import zoo
from explainers.activations import run
from explainers.tabs import causal_mask, embeddings, tokenizer

ODD = ["", "   ", "x" * 10_000, "👩‍👩‍👧 family", "مرحبا بالعالم", "a\x00b\x07c", "日本語のテキスト"]
REAL = ["smollm2-135m", "minilm-l6"]


# --- tokenizer tab -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_tokenization_spans_and_round_trip(name):
    tok = zoo.load(name, "cpu").tokenizer
    text = "naïve café 👩‍👩‍👧 مرحبا"
    result = tokenizer.compute_tokenization(tok, text)
    assert result["count"] == len(result["tokens"]) > 5
    assert result["chars_per_token"] == pytest.approx(len(text) / result["count"])
    if name == "smollm2-135m":  # byte-level BPE loses nothing
        assert result["round_trip"] and any(t.piece.startswith("<") for t in result["tokens"])
    else:  # WordPiece lower-cases, strips accents and has no emoji
        assert not result["round_trip"] and result["unknown"] >= 1


def test_tokenizer_tab_shows_every_chosen_tokenizer():
    html = tokenizer.update("Hello there", REAL)
    assert all(name in html for name in REAL) and "␣there" in html and "[CLS]" in html


@pytest.mark.parametrize("text", ODD)
def test_tokenizer_tab_answers_odd_text_plainly(text):
    if not text.strip():
        with pytest.raises(InputError, match="empty"):
            tokenizer.update(text, REAL)
        return
    html = tokenizer.update(text, REAL)
    cleaned, _ = clean_text(text)
    shown = [int(n.replace(",", "")) for n in re.findall(r"<div>([\d,]+) tokens · ", html)]
    assert shown == [len(zoo.load(name, "cpu").tokenizer.tokens(cleaned)) for name in REAL]  # each tokenizer's count
    assert ("first 2000" in html) == (len(text) > 2000) and ("control character" in html) == ("\x00" in text)


def test_bpe_merge_list_grows_with_the_vocabulary():
    small, large = tokenizer.compute_bpe("summarization", 300), tokenizer.compute_bpe("summarization", 1200)
    assert len(small["merges"]) == 300 - 256 and len(large["merges"]) == 1200 - 256
    assert large["merges"][: len(small["merges"])] == small["merges"]       # later merges extend earlier ones
    counts = [len(toks) for _, toks in sorted(large["segmentations"].items())]
    assert counts == sorted(counts, reverse=True) and counts[0] == len(b"summarization")


@pytest.mark.parametrize("size", [100, 10**6, "many"])
def test_bpe_refuses_out_of_range_sizes(size):
    with pytest.raises(InputError):
        tokenizer.update_bpe("hello", size)


# --- embeddings tab ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,dims", [("PCA", "2D"), ("t-SNE", "2D"), ("UMAP", "3D")])
def test_static_embeddings_figure_has_one_trace_per_group(method, dims):
    fig, near = embeddings.update_static("smollm2-135m", ["animals", "numbers"], "king, queen", method, dims, 5, "king")
    assert [t.name for t in fig.data] == ["animals", "numbers", "typed"]
    assert fig.data[0].type == ("scatter3d" if dims == "3D" else "scatter")
    assert list(fig.data[2].customdata) == ["king", "queen"] and "cat" in list(fig.data[0].customdata)  # the hover
    assert len(near) == 10 and all(-1 <= cos <= 1 for _, cos in near)


def test_scatter_labels_go_where_they_overlap_nothing_and_the_rest_are_hovered():
    """The countries crowd together (Italy and Spain nearly on one point): no two labels drawn in one place."""
    points = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.2, 0], [0.8, 1]], dtype=float)
    fig = embeddings.scatter_figure(points, ["France", "Italy", "Spain", "Japan", "cat", "dog"], ["c"] * 4 + ["a"] * 2,
                                    "t")
    countries, animals = fig.data
    assert list(countries.text) == ["France", "Italy", "", ""] and list(animals.text) == ["cat", "dog"]  # above, below
    assert list(countries.textposition[:2]) == ["top center", "bottom center"]
    assert "2 labels would overlap: hover to read" in fig.layout.title.text
    assert list(countries.customdata) == ["France", "Italy", "Spain", "Japan"]             # every word has its hover
    fig, _ = embeddings.update_static("smollm2-135m", ["animals", "numbers", "countries"], "", "PCA", "2D", 15, "")
    for trace in fig.data:  # the lesson's picture: no two labels drawn at the same place
        shown = [(round(x, 2), round(y, 2), spot) for x, y, spot, text in
                 zip(trace.x, trace.y, trace.textposition, trace.text) if text]
        assert len(shown) == len(set(shown)) and len(shown) >= 7
    hidden = sum(list(t.text).count("") for t in fig.data)
    assert hidden == 0 or f"{hidden} label" in fig.layout.title.text


def test_contextual_bank_example_differs_only_after_the_embeddings():
    model = zoo.load("smollm2-135m", "cpu")
    scatter, line, note, _ = embeddings.update_contextual("smollm2-135m", "The bank is near the river bank.", 3, "bank")
    sims = list(line.data[0].y)
    assert len(sims) == model.cfg.n_layers + 1 and note == ""
    assert sims[0] == pytest.approx(1.0)     # RoPE: the embedding layer holds no position, same token
    assert min(sims[1:]) < 0.99              # context makes the two banks differ
    assert len(scatter.data[0].text) == len(model.tokenizer.tokens("The bank is near the river bank."))


def test_positional_figures():
    sinus, learned, rope = embeddings.update_positional("minilm-l6")
    assert sinus.data[0].z.shape == (128, 64) and learned.data[0].type == "heatmap"
    scores = rope.data[0].z
    assert abs(scores[3][1] - scores[10][8]) < 1e-4   # same offset, same score


@pytest.mark.parametrize("text", ODD)
def test_contextual_handler_answers_odd_text_plainly(text):
    if len(text.strip()) < 6:  # empty, or "abc" once the control characters go: too short to compare
        with pytest.raises(InputError, match="empty|three tokens"):
            embeddings.update_contextual("smollm2-135m", text, 1, "bank")
        return
    _, _, note, _ = embeddings.update_contextual("smollm2-135m", text, 1, "")
    if len(text) > 2000:
        assert "first 2000" in note


def test_embeddings_refuse_too_few_words_and_clamp_settings():
    with pytest.raises(InputError, match="three or more"):
        embeddings.update_static("smollm2-135m", [], "a, b", "PCA", "2D", 5, "")
    _, _, note, slider = embeddings.update_contextual("smollm2-135m", "one two three four", 999, "")
    assert "The layer was 999; smollm2-135m has 30 layers (0 = the embeddings, 30 = after the last)" in note
    assert (slider.minimum, slider.maximum, slider.value) == (0, 30, 30)


# --- causal mask tab ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_head_steps_equal_the_model_hooks(name):
    model = zoo.load(name, "cpu")
    ids = tuple(model.tokenizer.encode("Your journey starts with one step"))
    cache = run(name, ids).cache
    _, scores = model.run_with_cache(torch.tensor([ids]), names="blocks.2.attn.hook_attn_scores")
    for head in (0, model.cfg.n_heads - 1):
        steps = causal_mask.compute_steps(model, cache, 2, head)
        torch.testing.assert_close(steps["scores"], scores["attn_scores", 2][0, head])
        torch.testing.assert_close(steps["pattern"], cache["blocks.2.attn.hook_pattern"][head])
        torch.testing.assert_close(steps["z"], cache["z", 2][:, head])


def test_steps_figure_is_labelled_with_tokens():
    fig, *_ = causal_mask.update("smollm2-135m", "Your journey starts with one step", 1, 2, "model's own", 3)
    labels = list(fig.data[0].x)
    assert len(fig.data) == 5 and labels[1] == "1:␣journey"
    pattern = torch.tensor(fig.data[3].z, dtype=torch.float32)
    assert torch.all(pattern.nan_to_num().triu(1) == 0)


def test_each_step_panel_has_its_own_colour_bar_and_range():
    """Q·Kᵀ and ÷ √d_k draw the same picture: only their colour bars say one is 8 times the other (#31 item 12)."""
    fig, _, *_sliders = causal_mask.update("smollm2-135m", "Your journey starts with one step", 0, 0, "model's own", 3)
    qk, scaled, masked, pattern, z = fig.data
    assert fig.layout.annotations[1].text == "÷ √d_k = ÷ 8"
    for panel in fig.data:  # a bar beside each panel, and a range that covers its values
        assert panel.showscale is not False and panel.colorbar.x > fig.layout[panel.xaxis.replace("x", "xaxis")].domain[1]
        values = np.asarray(panel.z, dtype=float)
        assert panel.zmin <= np.nanmin(values) and np.nanmax(values) <= panel.zmax
    assert scaled.zmax == pytest.approx(qk.zmax / 8) and qk.zmin == -qk.zmax                 # signed: centred on 0
    assert masked.zmax == pytest.approx(np.nanmax(np.abs(np.asarray(masked.z, dtype=float))))  # -inf cells left out
    assert pattern.zmin == 0 and pattern.zmax == pytest.approx(np.nanmax(np.asarray(pattern.z, dtype=float)))


@pytest.mark.parametrize("mask", ["model's own", "sliding window"])
def test_the_causal_mask_tab_runs_the_blocks_up_to_its_layer_and_draws_what_the_whole_forward_gives(mask):
    from core.model.attention import MaskOverride
    from explainers.activations import forget_runs, run
    from explainers.page.inputs import get_model
    model, text, layer = get_model("smollm2-135m"), "A new text for the causal mask tab alone", 3
    ran = []
    hooks = [b.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, b in enumerate(model.blocks)]
    try:
        forget_runs()
        alone, *_ = causal_mask.update("smollm2-135m", text, layer, 2, mask, 3)
        assert ran == list(range(layer + 1))                       # blocks 0..3 of 30
        forget_runs()
        ran.clear()
        ids = tuple(t.id for t in causal_mask.text_to_tokens(model, text, causal_mask.MAX_TOKENS)[0])
        run("smollm2-135m", ids, None if mask == "model's own" else MaskOverride(mask, 3))  # the whole forward
        after_whole, *_ = causal_mask.update("smollm2-135m", text, layer, 2, mask, 3)
        assert ran == list(range(model.cfg.n_layers))              # the update ran nothing more
    finally:
        for h in hooks:
            h.remove()
    assert alone.to_json() == after_whole.to_json()


@pytest.mark.parametrize("mask", ["bidirectional", "sliding window", "ALiBi", "causal"])
def test_masks_applied_live(mask):
    name = "smollm2-135m"
    ids = tuple(zoo.load(name, "cpu").tokenizer.encode("one two three four five six seven eight"))
    p = run(name, ids, MaskOverride(mask, 3)).cache["pattern", 5]                 # (H, T, T)
    T = len(ids)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    if mask == "bidirectional":
        assert torch.all(p[:, s.expand(T, T) > t] > 0)
    else:
        assert torch.all(p[:, (s > t)] == 0)
    if mask == "sliding window":
        assert torch.all(p[:, (t - s >= 3)] == 0)


def test_padding_gives_padded_keys_no_weight():
    fig = causal_mask.update_padding("smollm2-135m", "The cat sat on the warm mat by the door", "A dog barked", 3, 1)
    z = torch.tensor(fig.data[0].z, dtype=torch.float32)
    pads = sum(label.endswith("[pad]") for label in fig.data[0].x)
    assert pads > 0 and torch.all(z[pads:, :pads] == 0) and torch.all(z[:pads].isnan())
    torch.testing.assert_close(z[pads:].sum(-1), torch.ones(z.shape[0] - pads))


def test_causality_check_is_zero_for_decoders_and_not_for_encoders():
    rows = causal_mask.update_causality("smollm2-135m", "The cat sat on the mat", "The cat sat on the sofa in the sun")
    by_model = {row[0]: row for row in rows}
    assert by_model["smollm2-135m"][3] == "0" and by_model["smollm2-135m"][4] == "unchanged (exactly 0)"
    assert float(by_model["minilm-l6"][3]) > 0


@pytest.mark.parametrize("text", ODD)
def test_causal_mask_handler_answers_odd_text_plainly(text):
    if not text.strip():
        with pytest.raises(InputError):
            causal_mask.update("smollm2-135m", text, 0, 0, "causal", 3)
        return
    fig, *_ = causal_mask.update("smollm2-135m", text, 0, 0, "causal", 3)
    assert len(fig.data) == 5


@pytest.mark.parametrize("layer,head,mask,window,note", [
    (-1, 0, "causal", 3, "The layer was -1; smollm2-135m has 30 layers, 0 to 29, so 0 is shown."),
    (0, 99, "causal", 3, "The head was 99; smollm2-135m has 9 heads a layer, 0 to 8, so 8 is shown."),
    (0, 0, "sliding window", 0, "The window was 0; the widths go from 1 to 16, so 1 is shown."),
    (0, 0, "sliding window", 10**6, "The window was 1000000; the widths go from 1 to 16, so 16 is shown.")])
def test_causal_mask_settings_out_of_range_are_moved_into_it_with_a_note(layer, head, mask, window, note):
    fig, shown, layer_slider, head_slider = causal_mask.update("smollm2-135m", "a b c", layer, head, mask, window)
    assert shown == note and fig.data
    assert (layer_slider.maximum, layer_slider.value, head_slider.maximum, head_slider.value) == \
        (29, min(max(layer, 0), 29), 8, min(head, 8))  # the sliders take the model's range and the value shown


@pytest.mark.parametrize("layer,head,mask,window,message", [
    (0, 0, "nonsense", 3, "Choose a mask among"), ("x", 0, "causal", 3, "layer must be a whole number from 0 to 29"),
    (0, None, "causal", 3, "head must be a whole number from 0 to 8")])
def test_causal_mask_settings_that_are_not_settings_are_refused(layer, head, mask, window, message):
    with pytest.raises(InputError, match=message):
        causal_mask.update("smollm2-135m", "a b c", layer, head, mask, window)


# --- every tab on the project's own tiny models -------------------------------------------------

TINY = ["tiny-gpt-char", "tiny-bert-word", "tiny-moe"]


@pytest.mark.parametrize("name", TINY)
def test_tabs_work_on_the_tiny_models(name):
    model = zoo.load(name, "cpu")
    html = tokenizer.update("The king is dead.", [name])
    assert name in html and "tokens" in html
    fig, near = embeddings.update_static(name, ["animals", "numbers"], "", "PCA", "2D", 5, "king")
    assert len(fig.data) == 2 and len(near) == 10
    _, line, *_ = embeddings.update_contextual(name, "the bank is near the river bank", 2, "bank")
    assert len(line.data[0].y) == model.cfg.n_layers + 1
    sinus, learned, rope = embeddings.update_positional(name)
    assert bool(learned.data) == (model.cfg.positions == "learned")
    if not learned.data:  # no empty axes: a sentence saying how this model tells positions apart
        assert learned.layout.xaxis.visible is False and "Nothing to draw here" in learned.layout.annotations[0].text
    last_layer, last_head = model.cfg.n_layers - 1, model.cfg.n_heads - 1
    steps, *_ = causal_mask.update(name, "to be or not to be", last_layer, last_head, "model's own", 3)
    assert len(steps.data) == 5
    rows = causal_mask.update_causality(name, "to be or not to be", "to be or not to go")
    ours = rows[0]
    tolerance = 1e-5 if model.cfg.n_experts else 0.0   # see causal_mask.verdict
    assert ours[0] == name and (float(ours[3]) <= tolerance) == model.cfg.causal
    assert ours[4].startswith("unchanged") == model.cfg.causal


def test_settings_fitted_to_a_smaller_model_or_a_shorter_text_move_into_range_and_say_why():
    """A layer or head left where SmolLM2 put it (29, 8) would be refused by the slider of a 4-layer, 4-head model;
    a position left where a longer text put it names the text, not the model."""
    from explainers.draw.widgets import fit_head, fit_layer, fit_position
    model = zoo.load("tiny-gpt-char", "cpu")
    layer, head = fit_layer(model, 29), fit_head(model, 8)
    assert (layer.value, layer.slider.maximum, layer.slider.value, head.value, head.slider.maximum) == (3, 3, 3, 3, 3)
    assert layer.note == "The layer was 29; tiny-gpt-char has 4 layers, 0 to 3, so 3 is shown."
    assert head.note == "The head was 8; tiny-gpt-char has 4 heads a layer, 0 to 3, so 3 is shown."
    assert fit_layer(model, 2)[:2] == (2, "") and fit_layer(model, 4, embeddings=True).value == 4
    position = fit_position(model, model.tokenizer.tokens("To be"), 40)
    assert (position.value, position.slider.minimum, position.slider.maximum) == (4, -1, 4)
    assert position.note == "The position was 40; the text is 5 tokens for tiny-gpt-char, positions 0 to 4 (or −1), " \
                            "so 4 is shown."


def test_the_first_tokens_massive_stream_is_named_and_does_not_squeeze_the_others():
    """SmolLM2 at layer 15: the first token's stream is ~100 times longer than the rest. It is left out of the PCA
    fit, pinned to the frame's edge with its length, and the note says what it is; the others keep their spread."""
    import numpy as np

    from core.analysis.projection import outliers
    assert outliers(np.array([[1.0, 0], [0, 1.2], [0.9, 0.9], [80, 0]])).tolist() == [False, False, False, True]
    fig, _, note, _ = embeddings.update_contextual("smollm2-135m", "The cat sat on the mat because it was tired", 15, "")
    x, y, labels = np.array(fig.data[0].x), np.array(fig.data[0].y), list(fig.data[0].text)
    assert "off the scale" in labels[0] and not any("off the scale" in label for label in labels[1:])
    assert "0:The" in note and "attention sink" in note and "times longer" in note
    rest = np.stack([x[1:], y[1:]])
    span = np.ptp(np.stack([x, y]), axis=1)
    assert (np.ptp(rest, axis=1) > 0.6 * span).all()        # the other tokens fill the frame, not one squeezed line
    assert fig.layout.title.text.startswith("layer 15 (after block 14)")
