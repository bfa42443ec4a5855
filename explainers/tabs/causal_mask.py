"""Causal mask tab: masked self-attention step by step, other masks tried live, causality proven."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
import torch

from core.analysis.embeddings import prefix_change
from core.inputs import InputError, clean_text, fitted, text_to_tokens
from core.model.attention import Attention, MaskOverride, build_mask, head_steps, left_pad, mask_of_kind
from core.model.cache import act_name
from explainers.activations import run_upto
from explainers.draw.figures import axis, figure, grid, on, scale, token_labels
from explainers.draw.widgets import FittedSlider, code_panel, fit_head, fit_layer
from explainers.page.inputs import get_model, join_notes
from explainers.page.tab import View

TITLE = "Causal mask"
INTRO = r"""### Masked self-attention, one step at a time
For one head, every query position t scores every key position s with a dot product, scales it,
adds a **mask**, and turns each row into weights that sum to 1:

$$\text{pattern} = \text{softmax}\Big(\frac{QK^\top}{\sqrt{d_k}} + M\Big), \qquad z = \text{pattern}\,V$$

A **causal** mask puts −∞ above the diagonal so a token never sees the future (decoders such as
GPT and SmolLM2); a **bidirectional** encoder (BERT, MiniLM) uses no such mask. A **sliding window**
also hides keys too far back, **padding** hides filler tokens in a batch, and **ALiBi** adds a
penalty that grows with distance instead of position embeddings. The numbers below are the model's own."""

MASKS = ["model's own", "causal", "bidirectional", "sliding window", "ALiBi"]
MAX_WINDOW = 16  # the sliding window's widest setting (a model's own window is read from its config)
STEPS = [("qk", "Q·Kᵀ"), ("scaled", "÷ √d_k"), ("scores", "+ mask"), ("pattern", "softmax")]


MAX_TOKENS = 24


def compute_steps(model, cache, layer: int, head: int) -> dict:
    """One head's stages from a recorded forward (batch dimension removed)."""
    rope = model.cfg.positions == "rope"
    q, k = cache["rot_q" if rope else "q", layer], cache["rot_k" if rope else "k", layer]
    return head_steps(q, k, cache["v", layer], cache["mask", layer], head, model.cfg.attn_scale, model.cfg.attn_softcap)


def colour_range(z: torch.Tensor, centred: bool) -> dict:
    """A panel's own colour range over its finite values: symmetric about 0 for signed scores, from 0 for weights."""
    finite = z[torch.isfinite(z)]
    top = float(finite.abs().max()) if finite.numel() else 1.0
    return dict(zmin=-top, zmax=top) if centred else dict(zmin=0.0, zmax=float(finite.max()) if finite.numel() else 1.0)


def steps_figure(steps: dict, labels: list[str], attn_scale: float | None = None, cap: float | None = None) -> go.Figure:
    titles = [t for _, t in STEPS] + ["z = pattern · V"]
    # the divisor spelled out (√64 = 8), or a model's own attention scale (Granite: 1/D, Gemma: 1/sqrt(its scalar))
    titles[1] = f"÷ √d_k = ÷ {steps['z'].shape[-1] ** 0.5:.3g}" if attn_scale is None else f"× {attn_scale:.3g}"
    if cap is not None:  # Gemma 2 squashes the scaled scores into (-cap, cap)
        titles[1] += f", {cap:g}·tanh(·/{cap:g})"
    layout = grid(5, titles=titles, gap=(0.08, 0),  # room for each colour bar's ticks beside the lesson's sidebar
                  x=dict(tickfont=dict(size=10), tickangle=-60),
                  y=dict(autorange="reversed", tickfont=dict(size=10), showticklabels=False))
    layout["yaxis"]["showticklabels"] = True  # the rows are the same queries in every panel: label them once
    panels = [(key, steps[key]) for key, _ in STEPS] + [("z", steps["z"])]
    maps = []
    for i, (key, z) in enumerate(panels):
        # each panel its own colour range and bar beside it: dividing by sqrt(d_k) would wash out a shared one,
        # and without the bars Q·Kᵀ and ÷ √d_k would look the same
        right = layout[axis("x", i)]["domain"][1]
        bar = dict(x=right + 0.004, xanchor="left", len=0.9, thickness=8, outlinewidth=0)  # ticks: the figure's font
        columns = "dim" if key == "z" else "key"
        maps.append(dict(type="heatmap", z=z.masked_fill(torch.isinf(z), float("nan")).numpy(),  # -inf drawn blank
                         y=labels, **on(i), colorbar=bar, **colour_range(z, key != "pattern"),
                         colorscale=scale("Blues" if key == "pattern" else "RdBu"),
                         hovertemplate=f"query %{{y}}<br>{columns} %{{x}}<br>%{{z:.3f}}<extra></extra>",
                         **({} if key == "z" else dict(x=labels))))
    return figure(maps, **layout, height=420, margin=dict(t=60, r=55))


def update(model_name: str, text: str, layer, head, mask: str, window):
    """One head's steps from scores to output with the chosen mask, a note, then the layer and head sliders fitted
    to the model."""
    model = get_model(model_name)
    tokens, notice = text_to_tokens(model, text, MAX_TOKENS)
    layer_fit, head_fit = fit_layer(model, layer), fit_head(model, head)
    layer, head = layer_fit.value, head_fit.value
    if mask not in MASKS:
        raise InputError(f"Choose a mask among: {', '.join(MASKS)}.")
    window, note_window = fitted("window", window, 1, MAX_WINDOW, f"the widths go from 1 to {MAX_WINDOW}")
    change = None if mask == "model's own" else MaskOverride(mask, window)
    cache = run_upto(model_name, tuple(t.id for t in tokens), change, layer).cache
    labels = token_labels(tokens)
    fig = steps_figure(compute_steps(model, cache, layer, head), labels, model.cfg.attn_scale, model.cfg.attn_softcap)
    return (fig, join_notes(notice, layer_fit.note, head_fit.note, note_window, own_window(model.cfg, layer, mask)),
            layer_fit.slider, head_fit.slider)


def own_window(cfg, layer: int, mask: str) -> str:
    """Say when the layer's own mask is a sliding window (Mistral, Qwen2's upper layers, Gemma's local layers)."""
    if mask != "model's own" or not cfg.sliding_window:
        return ""
    window = cfg.window(layer)
    others = "" if cfg.window_layers is None else \
        f" {len(cfg.window_layers)} of this model's {cfg.n_layers} layers slide; the rest see every earlier token."
    if window is None:
        return f"Layer {layer} is a global layer: its queries see every earlier token.{others}"
    return (f"Layer {layer} slides: each query sees only the last {window:,} tokens, itself included "
            f"(a longer text than that shows the band).{others}")


def padding_figure(pattern: torch.Tensor, labels: list[str], title: str) -> go.Figure:
    pattern_map = dict(type="heatmap", z=pattern.numpy(), x=labels, y=labels, colorscale=scale("Blues"),
                       hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>")
    return figure([pattern_map], title=dict(text=title), height=420,
                  yaxis=dict(autorange="reversed"))


def update_padding(model_name: str, long_text: str, short_text: str, layer, head):
    model = get_model(model_name)
    layer, _ = fitted("layer", layer, 0, model.cfg.n_layers - 1)
    head, _ = fitted("head", head, 0, model.cfg.n_heads - 1)
    longer, shorter = sorted((text_to_tokens(model, t, MAX_TOKENS)[0] for t in (long_text, short_text)), key=len,
                             reverse=True)
    a, b = [t.id for t in longer], [t.id for t in shorter]
    pad = model.cfg.pad_token_id if model.cfg.pad_token_id is not None else 0
    ids, attention_mask = left_pad([a, b], pad)
    _, cache = model.run_with_cache(ids.to(model.device), names=act_name("pattern", layer), logits=False,
                                    attention_mask=attention_mask.to(model.device))
    pattern = cache["pattern", layer][1, head].cpu()
    pattern[: len(a) - len(b)] = float("nan")  # padded queries' outputs are never used: drawn blank
    labels = ["[pad]"] * (len(a) - len(b)) + [t.piece for t in shorter]
    labels = [f"{i}:{p}" for i, p in enumerate(labels)]
    title = f"the shorter prompt in a batch of two: its {len(a) - len(b)} padded keys get weight 0"
    return padding_figure(pattern, labels, title)


def verdict(diff: float, cfg) -> str:
    if diff == 0:
        return "unchanged (exactly 0)"
    if cfg.causal and cfg.n_experts and diff < 1e-4:
        # each expert runs on the tokens routed to it; the edit regroups them, and a matrix
        # product of another shape rounds the last bits differently
        return "unchanged up to float rounding (experts batch tokens by routing)"
    return "changed"


def update_causality(model_name: str, text: str, edited: str):
    text, _ = clean_text(text)
    edited, _ = clean_text(edited)
    rows = []
    names = [model_name] + [n for n in ("minilm-l6", "smollm2-135m") if n != model_name]
    for name in names:
        try:
            model = get_model(name)
        except InputError:  # not installed here
            continue
        tok = model.tokenizer
        shared, diff = prefix_change(model, tok.encode(text)[: model.cfg.n_ctx], tok.encode(edited)[: model.cfg.n_ctx])
        kind = "causal" if model.cfg.causal else "bidirectional"
        rows.append([name, kind, shared, f"{diff:.3g}", verdict(diff, model.cfg)])
    return rows


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="Your journey starts with one step")
    with gr.Row():
        layer = FittedSlider(0, 63, value=0, step=1, label="Layer")
        head = FittedSlider(0, 31, value=0, step=1, label="Head")
        mask = gr.Radio(MASKS, value="model's own", label="Mask")
        window = gr.Slider(1, MAX_WINDOW, value=3, step=1, label="Sliding window width")
    notice = gr.Markdown()
    steps_plot = gr.Plot()
    ex = gr.Examples([["Your journey starts with one step"], ["The cat sat on the mat"]], [text])
    gr.Markdown("### Padding: two prompts of different length in one batch")
    with gr.Row():
        long_text = gr.Textbox(label="Longer prompt", value="The cat sat on the warm mat by the door")
        short_text = gr.Textbox(label="Shorter prompt", value="A dog barked")
    padding_plot = gr.Plot()
    gr.Markdown("### Proof of causality: edit the end, compare the earlier outputs\n"
                "The largest change of the final hidden state over the tokens both texts share.")
    with gr.Row():
        original = gr.Textbox(label="Text", value="The cat sat on the mat")
        edited = gr.Textbox(label="Edited ending", value="The cat sat on the sofa")
    causality = gr.Dataframe(headers=["model", "attention", "shared tokens", "max difference", "earlier outputs"],
                             interactive=False)
    code_panel(Attention.forward, build_mask, head_steps, mask_of_kind, left_pad, prefix_change)
    inputs = [page.model, text, layer, head, mask, window]
    outputs = [steps_plot, notice, layer, head]
    page.on([text.submit, layer.release, head.release, mask.change, window.release, ex.load_input_event], update,
            inputs, outputs, api="causal_mask")
    pad_inputs = [page.model, long_text, short_text, layer, head]
    page.on([long_text.submit, short_text.submit], update_padding, pad_inputs, padding_plot, api="padding")
    page.on([original.submit, edited.submit], update_causality, [page.model, original, edited], causality,
            api="causality")
    return View(links=dict(text=text, layer=layer, head=head, mask=mask, window=window),
                draws=[page.event(update, inputs, outputs),
                       page.event(update_padding, pad_inputs, padding_plot),
                       page.event(update_causality, [page.model, original, edited], causality)])
