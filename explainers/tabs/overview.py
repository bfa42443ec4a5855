"""Overview tab: the whole model at a glance, for one text: every stage from tokens to the next token, with
the residual stream's length at every position after every sublayer. Each stage opens the tab that explains it."""
from __future__ import annotations

import html

import gradio as gr
import plotly.graph_objects as go
import torch

from core.analysis.anatomy import stream_lengths
from core.device import describe
from core.inputs import clean_text, text_to_tokens
from core.model.transformer import HookedTransformer, active_parameters, parameter_groups
from explainers.activations import ATTENTION_TOKENS, prediction_position, run
from explainers.draw.figures import figure, grid, on, scale, token_labels, top_tokens
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model
from explainers.page.links import view_link
from explainers.page.tab import View

TITLE = "Overview"
INTRO = """### The whole model, for your text
A transformer turns text into **tokens**, each token into a vector (**embedding**), and passes
those vectors up a stack of **blocks**. In each block, a norm then **attention** (mixing
information between positions) adds its result to the running **residual stream**; a norm then
the **feed-forward network** (transforming each position alone) adds its own. After the last block
a final norm and the **unembedding** turn the last vector into a score per vocabulary entry
(**logits**), and softmax into probabilities. Click any stage, or any cell of the figure, to open
the tab that explains it with this text."""

MAX_TOKENS = ATTENTION_TOKENS
SHOWN = 8


def model_facts(model) -> list[tuple[str, str]]:
    c = model.cfg
    ffn = (f"{c.n_experts} experts, top-{c.top_k}, each " if c.n_experts else "") + c.ffn_name
    width = f"{c.d_expert or c.d_ff} per expert" if c.n_experts else str(c.d_ff)
    return [
        ("Family", c.family), ("Layers", str(c.n_layers)),
        ("Attention heads (H)", str(c.n_heads)), ("Key/value heads (G)", f"{c.n_kv_heads} — {c.attention_kind}"),
        ("Width (C)", str(c.d_model)), ("Head width (D)", str(c.d_head)), ("FFN width (F)", width),
        ("Feed-forward", ffn), ("Vocabulary (V)", f"{c.vocab_size:,}"), ("Context", f"{c.n_ctx:,} tokens"),
        ("Positions", c.positions), ("Norm", f"{c.norm}, {c.norm_placement}"),
        ("Attention", "causal (decoder)" if c.causal else "bidirectional (encoder)"),
        ("Tokenizer", getattr(model.tokenizer, "kind", "none")),
        *([("Family extras", "; ".join(c.mechanisms()))] if c.mechanisms() else []),
        ("Parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
        ("Active per token", f"{active_parameters(model):,}"), ("Device", describe(model.device)),
    ]


def facts_markdown(facts: list[tuple[str, str]]) -> str:
    return "| Property | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in facts)


def parameters_figure(groups: dict[str, int]) -> go.Figure:
    bars = dict(type="bar", x=list(groups.values()), y=list(groups), orientation="h",
                text=[f"{v / 1e6:.2f}M" for v in groups.values()], textposition="auto")
    return figure([bars], title=dict(text="Where the parameters are"), xaxis=dict(title=dict(text="parameters")),
                  height=320, margin=dict(b=40), yaxis=dict(autorange="reversed"))


def flow_figure(names: list[str], norms: torch.Tensor, labels: list[str], links: list[list[str]],
                top: list[tuple[str, float, int]] | None, top_link: str, where: str) -> go.Figure:
    """Left: the residual stream's length at every stage (rows, bottom to top as the model runs) and position;
    right: the probabilities the model ends with. Cells and bars carry the link of the tab explaining them."""
    log = norms.clamp_min(1e-6).log10()
    ticks = [t for t in range(-1, 5) if float(log.min()) - 1 <= t <= float(log.max()) + 1]
    cells = dict(type="heatmap", z=log.numpy(), x=labels, y=names, customdata=links, xgap=1, ygap=1,
                 text=[[f"{v:.1f}" for v in row] for row in norms.tolist()], colorscale=scale("Viridis"),
                 colorbar=dict(title=dict(text="‖stream‖"), tickvals=ticks, ticktext=[f"{10 ** t:g}" for t in ticks],
                               x=0.57 if top else 1.0, len=0.6, y=0, yanchor="bottom", thickness=14),
                 hovertemplate="%{y}, %{x}: length %{text}<extra>click to open</extra>")
    layout = grid(2, widths=[0.62, 0.38], gap=(0.16, 0), titles=["the residual stream's length after each stage",
                                                                 f"next token {where}" if top else "no output head"])
    layout["yaxis"].update(type="category", tickfont=dict(size=10))  # first stage at the bottom, as the data flows up
    layout["xaxis"].update(type="category", tickangle=-60, tickfont=dict(size=10))
    traces = [cells]
    if top:
        traces.append(dict(type="bar", x=[p for _, p, _ in top], y=[t for t, _, _ in top], orientation="h",
                           text=[f"{p:.1%}" for _, p, _ in top], textposition="auto", showlegend=False,
                           customdata=[top_link] * len(top), marker=dict(color="#2563eb"),
                           hovertemplate="%{y}: %{x:.1%}<extra>click to open</extra>", **on(1)))
        layout["yaxis2"].update(autorange="reversed", type="category", domain=[0.62, 1])  # beside the last layers
        layout["xaxis2"].update(tickformat=".0%")
    height = min(600, max(420, 140 + 14 * len(names)))  # 61 stages on SmolLM2: thinner rows, the screen kept
    return figure(traces, **layout, height=height, margin=dict(t=40))


STAGE_STYLE = ("display:inline-flex;flex-direction:column;padding:6px 10px;margin:3px 0;border-radius:8px;"
               "background:#eff6ff;border:1px solid #93c5fd;color:#111827;text-decoration:none;line-height:1.3")


def stages_html(stages: list[tuple[str, str, str]]) -> str:
    """The model as a row of linked stages: (title, what it did to this text, link)."""
    boxes = [f"<a class='stage' data-view href='{html.escape(link)}' style='{STAGE_STYLE}'><b>{html.escape(title)}</b>"
             f"<span style='font-size:0.85em'>{html.escape(detail)}</span></a>" for title, detail, link in stages]
    arrow = "<span style='margin:0 4px;color:#6b7280;font-size:1.3em'>→</span>"
    return "<div class='flow' style='display:flex;flex-wrap:wrap;align-items:center'>" + arrow.join(boxes) + "</div>"


def stages(model: HookedTransformer, model_name: str, tokens, norms: torch.Tensor, top, text: str) -> list[tuple]:
    c, T = model.cfg, len(tokens)
    link = lambda tab, **kw: view_link(tab, model_name, text=text, **kw)
    ffn = f"MoE: {c.n_experts} experts, top-{c.top_k}" if c.n_experts else f"FFN: {c.ffn_name}, {c.d_ff:,} neurons"
    rows = [("Tokens", f"{T} tokens of {c.vocab_size:,}", link("tokenizer")),
            ("Embedding", f"{c.d_model} numbers each" + (", + positions" if c.positions in ("learned", "sinusoidal")
                                                         else f", {c.positions} positions"), link("embeddings")),
            ("Mask", "causal: past only" if c.causal else "bidirectional", link("causal_mask")),
            (f"{c.n_layers} × attention", f"{c.n_heads} heads, {c.n_kv_heads} K/V ({c.attention_kind})",
             link("attention", layer=0)),
            (f"{c.n_layers} × {'MoE' if c.n_experts else 'FFN'}", ffn,
             link("moe", layer=0) if c.n_experts else link("block", layer=0)),
            ("Residual stream", f"length {float(norms[0, -1]):.1f} → {float(norms[-1, -1]):.1f} at the last token",
             link("residual") if c.pre_norm else link("block", layer=c.n_layers - 1))]
    if top:
        rows += [("Final norm + unembedding", f"{c.norm}, then {c.vocab_size:,} logits", link("lm_head")),
                 ("Next token", f"{top[0][0]!r} {top[0][1]:.0%}", link("lm_head"))]
    else:
        rows.append(("Output", f"{c.d_model} numbers per token (no head: a sentence embedding)", link("embeddings")))
    return rows


def update_flow(model_name: str, text: str):
    model = get_model(model_name)
    tokens, notice = text_to_tokens(model, text, MAX_TOKENS, keep="last")
    ids = tuple(t.id for t in tokens)
    traced = run(model_name, ids)
    names, norms = stream_lengths(traced.cache, model.cfg.n_layers)
    shown = clean_text(text)[0]  # what the linked tabs read
    block_tab = "moe" if model.cfg.n_experts else "block"
    links = [[view_link("embeddings", model_name, text=shown)] * len(ids)]
    for i in range(model.cfg.n_layers):
        links.append([view_link("attention", model_name, text=shown, layer=i)] * len(ids))
        links.append([view_link(block_tab, model_name, text=shown, layer=i, position=j) for j in range(len(ids))])
    top, where = None, ""
    if model.unembed is not None:
        pos = prediction_position(model, ids)
        top = top_tokens(traced.logits(pos).softmax(-1), model.tokenizer, SHOWN)
        where = f"after {tokens[pos].piece!r}" if model.cfg.causal else f"at {tokens[pos].piece!r}"
    fig = flow_figure(names, norms, token_labels(tokens), links, top, view_link("lm_head", model_name, text=shown), where)
    return stages_html(stages(model, model_name, tokens, norms, top, shown)), fig, notice


def update_facts(model_name: str):
    model = get_model(model_name)
    return facts_markdown(model_facts(model)), parameters_figure(parameter_groups(model))


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="The capital of France is")
    ex = gr.Examples([["The capital of France is"], ["The cat sat on the [MASK]."], ["ROMEO: But soft, what light"]],
                     [text])
    flow = gr.HTML()
    notice = gr.Markdown()
    plot = gr.Plot()
    with gr.Accordion("What this model is made of", open=False), gr.Row():
        facts = gr.Markdown()
        parameters = gr.Plot()
    code_panel(HookedTransformer.hidden, stream_lengths, parameter_groups, active_parameters)
    page.on([text.submit, ex.load_input_event], update_flow, [page.model, text], [flow, plot, notice], api="flow")
    return View(links=dict(text=text),
                draws=[page.event(update_flow, [page.model, text], [flow, plot, notice]),
                       page.event(update_facts, page.model, [facts, parameters], api="facts")])
