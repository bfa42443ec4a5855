"""Residual stream tab: the final vector of a position as the sum of what every part wrote, and each part's
direct effect on the predicted token's logit."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
import torch

from core.analysis.anatomy import decompose, direct_logit_attribution
from core.inputs import InputError, clean_text, text_to_tokens
from core.model.attention import softcap
from explainers.activations import ATTENTION_TOKENS, run
from explainers.draw.figures import figure, piece, scale
from explainers.draw.widgets import FittedSlider, code_panel, fit_position
from explainers.page.inputs import get_model, join_notes
from explainers.page.links import view_link
from explainers.page.tab import View

TITLE = "Residual stream"
INTRO = r"""### The residual stream is a sum
In a pre-norm model nothing ever overwrites the stream: the embedding starts it, and every attention
head and every FFN only **adds** a vector to it. So the last vector of a position is exactly

$$x_{\text{final}} = \text{embedding} + \sum_{\text{layers}} \Big(\sum_{\text{heads}} \text{head}_h + \text{FFN}\Big)$$

The final norm divides that sum by one number (its **scale**) and the unembedding reads it, so with the
scale frozen at its value each piece's **direct effect** on a token's logit adds up to the logit:

$$\text{logit}_t = \sum_i \frac{w_t \cdot (g \odot \text{piece}_i)}{\text{scale}} + \text{constant}$$

Click a bar or a head to open it."""

MAX_TOKENS = ATTENTION_TOKENS
COLOURS = {"attention": "#2563eb", "FFN": "#f97316", "embeddings": "#6b7280"}


def target_token(model, logits_row: torch.Tensor, token_text) -> tuple[int, str]:
    """The token to explain: the model's top prediction, or the first token of what the user typed."""
    if not str(token_text or "").strip():
        return int(logits_row.argmax()), ""
    text, _ = clean_text(token_text, 100)
    ids = model.tokenizer.encode(text)
    if not ids:
        raise InputError(f"{text!r} gives no token in this model's vocabulary; try a word the model knows.")
    note = f"{text!r} is {len(ids)} tokens; the first, {piece(model.tokenizer, ids[0])!r}, is explained." \
        if len(ids) > 1 else ""
    return ids[0], note


def by_part(labels: list[str], direct: torch.Tensor) -> tuple[list[str], list[float], list[str]]:
    """Direct effects summed per part: the embeddings, then each layer's attention (all heads and the bias) and FFN."""
    names, values, kinds = [], [], []
    for label, value in zip(labels, direct.tolist()):
        layer, _, rest = label.partition(" ")
        part = "embeddings" if not rest else ("FFN" if rest == "FFN" else "attention")
        name = "embeddings" if part == "embeddings" else f"{layer} {'FFN' if part == 'FFN' else 'attn'}"
        if names and names[-1] == name:
            values[-1] += value
        else:
            names.append(name), values.append(value), kinds.append(part)
    return names, values, kinds


def contributions_figure(names, values, kinds, links: list[str], token: str, logit: float, constant: float) -> go.Figure:
    bars = [dict(type="bar", x=[n for n, k in zip(names, kinds) if k == kind], y=[v for v, k in zip(values, kinds)
            if k == kind], name=kind, marker=dict(color=COLOURS[kind]), customdata=[u for u, k in zip(links, kinds)
            if k == kind], hovertemplate="%{x}: %{y:+.3f}<extra>click to open</extra>") for kind in COLOURS]
    title = f"Direct effect of each part on the logit of {token!r}<br><sub>sum {sum(values):+.2f} + constant " \
            f"{constant:+.2f} = {logit:.2f}</sub>"
    return figure(bars, title=dict(text=title), barmode="relative", height=400, margin=dict(t=80),
                  xaxis=dict(type="category", categoryorder="array", categoryarray=names, tickangle=-60,
                             tickfont=dict(size=10)),
                  yaxis=dict(title=dict(text="logit change")), legend=dict(orientation="h", x=1, xanchor="right", y=1.1))


def heads_figure(per_head: torch.Tensor, links: list[list[str]], token: str) -> go.Figure:
    """Layers x heads: each head's direct effect on the token's logit."""
    limit = float(per_head.abs().max()) or 1.0
    L, H = per_head.shape
    cells = dict(type="heatmap", z=per_head.numpy(), x=[f"H{h}" for h in range(H)], y=[f"L{i}" for i in range(L)],
                 colorscale=scale("RdBu"), reversescale=True, zmin=-limit, zmax=limit, xgap=1, ygap=1, customdata=links,
                 colorbar=dict(title=dict(text="logit")), hovertemplate="%{y} %{x}: %{z:+.3f}<extra>click to open</extra>")
    return figure([cells], title=dict(text=f"Each head's direct effect on {token!r}"),
                  yaxis=dict(autorange="reversed"), height=max(300, 90 + 16 * L))


def growth_figure(stream_norms: list[float], attn_norms: list[float], mlp_norms: list[float]) -> go.Figure:
    """How long the stream is after the embeddings and after each block, and how long each sublayer's addition is."""
    L = len(attn_norms)
    layers = ["embeddings"] + [f"after L{i}" for i in range(L)]
    traces = [dict(type="scatter", x=layers, y=stream_norms, mode="lines+markers", name="‖stream‖",
                   line=dict(color="#111827", width=3)),
              dict(type="bar", x=layers[1:], y=attn_norms, name="‖attention's output‖", marker=dict(color="#2563eb")),
              dict(type="bar", x=layers[1:], y=mlp_norms, name="‖FFN's output‖", marker=dict(color="#f97316"))]
    return figure(traces, title=dict(text="The stream grows as every layer adds to it"), barmode="group", height=340,
                  yaxis=dict(type="log", title=dict(text="length (log scale)")),
                  xaxis=dict(type="category", tickangle=-60, tickfont=dict(size=10)),
                  legend=dict(orientation="h", x=1, xanchor="right", y=1.12))


def update(model_name: str, text: str, position, token_text):
    """The note, the pieces of the stream and their direct effects, then the position slider fitted to the text."""
    model = get_model(model_name)
    tokens, notice = text_to_tokens(model, text, MAX_TOKENS, keep="last")
    position = fit_position(model, tokens, position)
    pos = len(tokens) - 1 if position.value == -1 else position.value
    ids = tuple(t.id for t in tokens)
    traced = run(model_name, ids)
    try:
        labels, pieces = decompose(model, traced.cache, pos)
        token, note_token = target_token(model, traced.logits(pos), token_text) if model.unembed else (0, "")
        dla = direct_logit_attribution(model, pieces, token)
    except InputError as e:  # said on the tab, not as an error: this runs whenever the model changes
        return join_notes(f"**{e}**", position.note), None, None, None, position.slider
    L, H = model.cfg.n_layers, model.cfg.n_heads
    final = traced.cache["resid_post", L - 1][pos]
    gap = float((pieces.sum(0) - final).abs().max())
    name = piece(model.tokenizer, token)
    text_link = dict(text=clean_text(text)[0])
    names, values, kinds = by_part(labels, dla["direct"])
    part_links = [view_link("embeddings", model_name, **text_link) if kind == "embeddings" else
                  view_link("attention", model_name, layer=n.split()[0][1:], **text_link) if kind == "attention" else
                  view_link("block", model_name, layer=n.split()[0][1:], position=pos, **text_link)
                  for n, kind in zip(names, kinds)]
    heads = torch.tensor([[float(dla["direct"][labels.index(f"L{i} H{h}")]) for h in range(H)] for i in range(L)])
    head_links = [[view_link("attention", model_name, layer=i, head=h, **text_link) for h in range(H)] for i in range(L)]
    stream = traced.cache.accumulated_resid()[:, pos].norm(dim=-1).tolist()
    attn = [float(traced.cache["attn_out", i][pos].norm()) for i in range(L)]
    mlp = [float(traced.cache["mlp_out", i][pos].norm()) for i in range(L)]
    head = (f"Position **{pos}** ({tokens[pos].piece!r}), explaining the logit of **{name!r}** "
            f"(the model gives it {float(traced.logits(pos).softmax(-1)[token]):.1%}). "
            f"The {len(labels)} pieces sum to the final stream within **{gap:.1e}** (largest difference in any "
            f"dimension). Direct effects {float(dla['direct'].sum()):+.3f} + constant {dla['constant']:+.3f} = "
            f"**{float(dla['direct'].sum()) + dla['constant']:.3f}**; the model's logit is **{dla['logit']:.3f}**"
            + (f" before its ±{cap:g} soft cap ({cap:g}·tanh(·/{cap:g}) makes it "
               f"{float(softcap(torch.tensor(dla['logit']), cap)):.3f})" if (cap := model.cfg.logit_softcap) else "")
            + ". "
            f"The approximation: the final norm's divisor is frozen at {dla['scale']:.3f} (it depends on all the "
            "pieces together), and a piece's *direct* effect leaves out what later layers do with it.")
    return (join_notes(head, notice, position.note, note_token),
            contributions_figure(names, values, kinds, part_links, name, dla["logit"], dla["constant"]),
            heads_figure(heads, head_links, name), growth_figure(stream, attn, mlp), position.slider)


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="The capital of France is")
    ex = gr.Examples([["The capital of France is"], ["1 2 3 4 5 6"], ["ROMEO: But soft, what light through yonder"]],
                     [text])
    with gr.Row():
        position = FittedSlider(-1, MAX_TOKENS - 1, value=-1, step=1, label="Position (−1 = the last token)")
        token = gr.Textbox(label="Token to explain (empty = the model's top prediction)", max_lines=1)
    notice = gr.Markdown()
    parts_plot = gr.Plot()
    heads_plot = gr.Plot()
    growth_plot = gr.Plot()
    code_panel(decompose, direct_logit_attribution)
    inputs, outputs = [page.model, text, position, token], [notice, parts_plot, heads_plot, growth_plot, position]
    page.on([text.submit, ex.load_input_event, position.release, token.submit], update, inputs, outputs, api="residual")
    return View(links=dict(text=text, position=position, token=token), draws=[page.event(update, inputs, outputs)])
