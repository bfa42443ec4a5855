"""Multi-head attention tab: every head's pattern, one head in detail, GQA sharing, and ablation."""
from __future__ import annotations

import math

import gradio as gr
import plotly.graph_objects as go
import torch

from core.inputs import InputError, text_to_tokens
from core.model.attention import Attention, ZeroHeads, kv_head_of, pattern_summary, repeat_kv, zero_heads
from core.model.kv_cache import cache_bytes
from explainers.activations import prediction_position, run
from explainers.draw.figures import axis, compare_figure, figure, grid, on, png, scale, token_labels
from explainers.draw.widgets import FittedSlider, code_panel, fit_head, fit_layer
from explainers.page.inputs import get_model, join_notes
from explainers.page.links import view_link
from explainers.page.tab import View

TITLE = "Attention heads"
INTRO = r"""### Many heads, each looking at the text its own way
A layer splits its width into **heads**. Each head h has its own projections of the same input,
its own pattern over the tokens and its own output; the outputs are concatenated and mixed:

$$\text{head}_h = \text{softmax}\Big(\frac{Q_h K_h^\top}{\sqrt{d_k}} + M\Big) V_h, \qquad
\text{MHA}(x) = [\text{head}_1; \dots; \text{head}_H]\, W_O$$

Some heads look at the previous token, some at the first token (a resting place), some at
related words. **Grouped-query attention** (SmolLM2) lets several query heads share one key/value
head, which shrinks the KV cache. **Ablation** zeroes a head's output and shows what the model then predicts."""

MAX_TOKENS = 32


def _grid_shape(n: int) -> tuple[int, int]:
    rows = math.ceil(n / 6)
    return rows, math.ceil(n / rows)


def layer_figure(patterns: torch.Tensor, labels: list[str], layer: int) -> go.Figure:
    """Every head of one layer: patterns (H, T, S) as small heatmaps with token labels."""
    H = patterns.shape[0]
    rows, cols = _grid_shape(H)
    layout = grid(cols, rows, [f"head {h}" for h in range(H)], gap=(0.02, 0.14 / rows),  # a title clear of the row above
                  x=dict(showticklabels=len(labels) <= 12 and cols <= 4, tickfont=dict(size=9), tickangle=-60),
                  y=dict(autorange="reversed", showticklabels=False, tickfont=dict(size=9)))
    for row in range(rows):  # the queries are the same in every plot of a row: label them once
        layout[axis("y", row * cols)]["showticklabels"] = True
    heads = [dict(type="heatmap", z=patterns[h].numpy(), x=labels, y=labels, coloraxis="coloraxis", **on(h),
                  hovertemplate=f"head {h}<br>query %{{y}}<br>key %{{x}}<br>%{{z:.3f}}<extra></extra>") for h in range(H)]
    return figure(heads, **layout, coloraxis=dict(colorscale=scale("Blues"), cmin=0, cmax=1), height=230 * rows + 90,
                  title=dict(text=f"Layer {layer}: every head's pattern (rows: query token, columns: key token)"),
                  margin=dict(t=80))


def grid_figure(patterns: torch.Tensor, links: list[list[str]] | None = None) -> go.Figure:
    """All layers x heads as thumbnails tiled into one image (a PNG: see figures.png), patterns (L, H, T, S); with
    `links` (L x H views), a click on a thumbnail opens that head (an invisible cell over each)."""
    L, H, T, S = patterns.shape
    tiles = torch.full((L * (T + 1), H * (S + 1)), float("nan"))           # one blank row/column between tiles
    for layer in range(L):
        for h in range(H):
            tiles[layer * (T + 1):layer * (T + 1) + T, h * (S + 1):h * (S + 1) + S] = patterns[layer, h]
    thumbnails = dict(type="image", source=png(tiles.numpy(), scale("Blues"), 0, 1), hoverinfo="skip")
    traces = [thumbnails]
    if links:
        traces.append(dict(type="heatmap", z=[[0] * H for _ in range(L)], x=[h * (S + 1) + S / 2 for h in range(H)],
                           y=[layer * (T + 1) + T / 2 for layer in range(L)], customdata=links, showscale=False,
                           colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]],
                           text=[[f"L{layer} H{h}" for h in range(H)] for layer in range(L)],
                           hovertemplate="%{text}<extra>click to open</extra>"))
    return figure(traces, title=dict(text="Every layer × head (thumbnails; darker = more weight; click one to open it)"),
                  height=min(1400, 60 + 34 * L),
                  xaxis=dict(tickvals=[h * (S + 1) + S / 2 for h in range(H)], ticktext=[f"H{h}" for h in range(H)],
                             side="top", showgrid=False, zeroline=False),
                  yaxis=dict(tickvals=[layer * (T + 1) + T / 2 for layer in range(L)],
                             ticktext=[f"L{layer}" for layer in range(L)], showgrid=False, zeroline=False,
                             scaleanchor=False),  # the image fills the plot: its pixels need not be square
                  margin=dict(t=70))


def arcs(pattern: torch.Tensor, labels: list[str], threshold: float = 0.05) -> list[dict]:
    """BertViz-style lines from each query (right) to the keys it reads (left), darker = more weight."""
    T, S = pattern.shape
    weights = pattern.tolist()  # plain floats: indexing a tensor element by element is far slower
    traces = []
    for lo, hi in [(0.05, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.01)]:
        xs, ys = [], []
        for t in range(T):
            for s in range(S):
                if lo <= weights[t][s] < hi and weights[t][s] >= threshold:
                    xs += [1, 0, None]
                    ys += [t, s, None]
        traces.append(dict(type="scatter", x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                           line=dict(color=f"rgba(37,99,235,{min(1.0, hi):.2f})", width=1 + 4 * lo)))
    for side, n, position in [(0, S, "middle left"), (1, T, "middle right")]:  # keys left, queries right
        traces.append(dict(type="scatter", x=[side] * n, y=list(range(n)), mode="text", text=labels[:n],
                           textposition=position, hoverinfo="skip", showlegend=False))
    return traces


def head_figure(pattern: torch.Tensor, labels: list[str], layer: int, head: int) -> go.Figure:
    layout = grid(2, titles=[f"L{layer} H{head}: pattern", "the same as lines: key ← query"], gap=(0.12, 0),
                  widths=[0.55, 0.45], y=dict(autorange="reversed", tickfont=dict(size=10)))
    layout["xaxis"].update(tickangle=-60, tickfont=dict(size=10))
    layout["xaxis2"].update(range=[-0.9, 1.9], visible=False)
    layout["yaxis2"].update(visible=False)
    heatmap = dict(type="heatmap", z=pattern.numpy(), x=labels, y=labels, colorscale=scale("Blues"), zmin=0, zmax=1,
                   hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>")
    return figure([heatmap, *(dict(trace, **on(1)) for trace in arcs(pattern, labels))], **layout,
                  height=max(420, 18 * len(labels) + 120), plot_bgcolor="white")


def qkvz_figure(q, k, v, z, labels: list[str], head: int, kv: int, rope: bool) -> go.Figure:
    """The head's vectors, one row per token: Q (T, D), K and V of its K/V head, and its output z."""
    rotated = " after RoPE" if rope else ""  # two lines each: four titles side by side, beside the lesson too
    titles = [f"Q{rotated}<br>(head {head})", f"K{rotated}<br>(K/V head {kv})", f"V<br>(K/V head {kv})",
              f"z = pattern · V<br>(head {head})"]
    layout = grid(4, titles=titles, gap=(0.03, 0), x=dict(title=dict(text="dimension", font=dict(size=10))),
                  y=dict(autorange="reversed", showticklabels=False, tickfont=dict(size=10)))
    layout["yaxis"]["showticklabels"] = True
    maps = [dict(type="heatmap", z=m.numpy(), y=labels, colorscale=scale("RdBu"), zmid=0, showscale=False, **on(i),
                 hovertemplate="token %{y}<br>dim %{x}<br>%{z:.3f}<extra></extra>") for i, m in enumerate([q, k, v, z])]
    return figure(maps, **layout, height=max(320, 16 * len(labels) + 120), margin=dict(t=70))


def summary_figure(stats: dict[str, torch.Tensor]) -> go.Figure:
    """Layers x heads heatmaps of entropy, previous-token weight and first-token weight."""
    titles = {"entropy": "entropy (nats): low = focused", "previous": "weight on the previous token",
              "first": "weight on the first token"}
    layout = grid(3, titles=list(titles.values()), gap=(0.06, 0),
                  x=dict(title=dict(text="head"), dtick=1 if stats["entropy"].shape[1] <= 12 else None),
                  y=dict(title=dict(text="layer"), autorange="reversed"))
    maps = [dict(type="heatmap", z=stats[key].numpy(), colorscale=scale("Viridis" if key == "entropy" else "Blues"),
                 zmin=0, zmax=None if key == "entropy" else 1, showscale=False, **on(i),
                 hovertemplate=f"layer %{{y}} head %{{x}}<br>{key} %{{z:.3f}}<extra></extra>")
            for i, key in enumerate(titles)]
    return figure(maps, **layout, height=min(800, 140 + 16 * stats["entropy"].shape[0]))


def gqa_figure(cfg) -> go.Figure:
    """Which query heads share which K/V head, and the KV-cache bytes per token against MHA and MQA."""
    H, G = cfg.n_heads, cfg.n_kv_heads
    share = torch.zeros(G, H)
    for h, g in enumerate(kv_head_of(H, G)):
        share[g, h] = 1
    variants = {f"MHA ({H} K/V heads)": H, f"this model ({G})": G, "MQA (1)": 1}
    kib = [cache_bytes(cfg.n_layers, g, cfg.d_head, 1) / 1024 for g in variants.values()]
    layout = grid(2, titles=["query head → the K/V head it reads", "KV cache per token (fp32)"], gap=(0.15, 0),
                  widths=[0.55, 0.45])
    layout["yaxis"].update(autorange="reversed")
    layout["yaxis2"].update(title=dict(text="KiB per token"), range=[0, 1.25 * max(kib)])
    sharing = dict(type="heatmap", z=share.numpy(), x=[f"Q{h}" for h in range(H)], y=[f"KV{g}" for g in range(G)],
                   colorscale=[[0, "#f3f4f6"], [1, "#2563eb"]], showscale=False, xgap=2, ygap=2,
                   hovertemplate="%{x} reads %{y}: %{z}<extra></extra>")
    bytes_bar = dict(type="bar", x=list(variants), y=kib, showlegend=False,
                     marker=dict(color=["#9ca3af", "#2563eb", "#9ca3af"]),
                     text=[f"{b:.1f} KiB" for b in kib], textposition="outside", **on(1))
    return figure([sharing, bytes_bar], **layout, height=max(260, 40 * G + 160))


def _tokens(model_name: str, text: str):
    model = get_model(model_name)
    return (model, *text_to_tokens(model, text, MAX_TOKENS))


def head_choices(model_name: str, chosen=()):
    """The heads to zero, fitted to the model (keeping chosen heads it has)."""
    cfg = get_model(model_name).cfg
    choices = [f"L{layer} H{head}" for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    return gr.Dropdown(choices=choices, value=[c for c in chosen or () if c in choices])


def parse_heads(chosen, cfg) -> tuple[tuple[int, int], ...]:
    """'L3 H2' labels -> sorted (layer, head) pairs, refusing ones this model lacks."""
    pairs = set()
    for label in chosen or []:
        try:
            layer, head = (int(part[1:]) for part in str(label).split())
        except ValueError:
            raise InputError(f"'{label}' is not a head; pick heads like 'L0 H1' from the list.") from None
        if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
            raise InputError(f"'{label}' is not in this model: it has {cfg.n_layers} layers of {cfg.n_heads} heads.")
        pairs.add((layer, head))
    return tuple(sorted(pairs))


def update_head(model_name: str, text: str, layer, head):
    """One layer's heads, one head's pattern and its Q, K, V and z, read from the shared forward; then the layer and
    head sliders fitted to the model."""
    model, tokens, notice = _tokens(model_name, text)
    layer_fit, head_fit = fit_layer(model, layer), fit_head(model, head)
    layer, head = layer_fit.value, head_fit.value
    cache = run(model_name, tuple(t.id for t in tokens)).cache
    labels = token_labels(tokens)
    kv = kv_head_of(model.cfg.n_heads, model.cfg.n_kv_heads)[head]
    rope = model.cfg.positions == "rope"
    q, k = cache["rot_q" if rope else "q", layer], cache["rot_k" if rope else "k", layer]    # (T, H|G, D)
    pattern = cache["pattern", layer]                                                         # (H, T, T)
    return (layer_figure(pattern, labels, layer), head_figure(pattern[head], labels, layer, head),
            qkvz_figure(q[:, head], k[:, kv], cache["v", layer][:, kv], cache["z", layer][:, head], labels, head, kv,
                        rope),
            join_notes(notice, layer_fit.note, head_fit.note), layer_fit.slider, head_fit.slider)


def update_ablation(model_name: str, text: str, chosen):
    model, tokens, _ = _tokens(model_name, text)
    if model.unembed is None:
        return None, (f"**{model_name}** has no output head (it gives sentence embeddings), so there are no "
                      "next-token probabilities to compare. Pick a decoder such as smollm2-135m.")
    heads = parse_heads(chosen, model.cfg)
    ids = tuple(t.id for t in tokens)
    position = prediction_position(model, ids)
    before = run(model_name, ids).logits(position).softmax(-1)
    after = run(model_name, ids, ZeroHeads(heads) if heads else None).logits(position).softmax(-1)
    label = f"position {position} ('{tokens[position].piece}')"
    if not heads:
        note = "No head zeroed: the two sides are identical. Pick heads above to remove them."
    else:
        tv = 0.5 * (before - after).abs().sum().item()
        note = (f"Zeroed {len(heads)} head(s). The distribution moved by a total variation of **{tv:.3f}** "
                f"(0 = unchanged, 1 = completely different). Orange tokens are in only one of the two top-10s.")
    return compare_figure(before, after, model.tokenizer, f"Next-token probabilities at {label}",
                          "after zeroing the chosen heads"), note


def update_all(model_name: str, text: str, layer, head, chosen):
    model, tokens, _ = _tokens(model_name, text)
    patterns = run(model_name, tuple(t.id for t in tokens)).cache.stack("pattern")             # (L, H, T, T)
    *head_view, layer_slider, head_slider = update_head(model_name, text, layer, head)
    links = [[view_link("attention", model_name, text=text, layer=i, head=h) for h in range(patterns.shape[1])]
             for i in range(patterns.shape[0])]
    return (*head_view, grid_figure(patterns, links), summary_figure(pattern_summary(patterns)), gqa_figure(model.cfg),
            *update_ablation(model_name, text, chosen), layer_slider, head_slider)


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="The cat sat on the mat because the cat was tired")
    ex = gr.Examples([["The cat sat on the mat because the cat was tired"],
                      ["Mr and Mrs Dursley of number four, Privet Drive, were proud to say that they were "
                       "perfectly normal"], ["1 2 3 4 5 6 7 8 1 2 3 4 5 6 7 8"]], [text])
    with gr.Row():
        layer = FittedSlider(0, 63, value=0, step=1, label="Layer")
        head = FittedSlider(0, 31, value=0, step=1, label="Head")
    notice = gr.Markdown()
    layer_plot = gr.Plot(label="One layer, every head")
    head_plot = gr.Plot(label="One head")
    qkvz_plot = gr.Plot(label="Q, K, V and z of that head")
    gr.Markdown("### Ablation: zero some heads and watch the prediction change")
    chosen = gr.Dropdown([], multiselect=True, label="Heads to zero (through hook_z)")
    ablation_note = gr.Markdown()
    ablation_plot = gr.Plot()
    gr.Markdown("### Every head at a glance\nWhat each head does on average over this text: entropy of its "
                "pattern, how much it looks at the previous token and at the first token.")
    summary_plot = gr.Plot()
    grid_plot = gr.Plot()
    gr.Markdown("### Grouped-query attention")
    gqa_plot = gr.Plot()
    code_panel(Attention.forward, repeat_kv, pattern_summary, zero_heads, kv_head_of, cache_bytes)
    all_inputs = [page.model, text, layer, head, chosen]
    all_outputs = [layer_plot, head_plot, qkvz_plot, notice, grid_plot, summary_plot, gqa_plot,
                   ablation_plot, ablation_note, layer, head]
    page.on([text.submit, ex.load_input_event], update_all, all_inputs, all_outputs, api="attention")
    page.on([layer.release, head.release], update_head, [page.model, text, layer, head],
            [layer_plot, head_plot, qkvz_plot, notice, layer, head], api="attention_head")
    page.on([chosen.input], update_ablation, [page.model, text, chosen], [ablation_plot, ablation_note],
            api="ablation")
    return View(links=dict(text=text, layer=layer, head=head, ablate=chosen),
                draws=[page.event(head_choices, [page.model, chosen], chosen, remember=False),  # keeps a link's heads
                       page.event(update_all, all_inputs, all_outputs)])
