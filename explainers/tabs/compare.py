"""Two models side by side: one text through any two models of the zoo, read from the forward the other tabs share."""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import plotly.graph_objects as go

from core.analysis.compare import attention_entropy, depths, stream_length, top_k_overlap, top_k_texts, uniform_entropy
from core.inference.sampling import SamplingSettings, stages
from core.inputs import clean_text, text_to_tokens
from core.weights.tokenizers import visible
from explainers.activations import ATTENTION_TOKENS, Run, prediction_position, run
from explainers.draw.figures import SAFE_COLOURS, axis, chips_html, figure, grid, on
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model, join_notes, model_choices
from explainers.page.links import view_link
from explainers.page.tab import View

TITLE = "Two models side by side"
INTRO = r"""### One text, two models
Pick any two models of the zoo. Each reads the same text with **its own tokenizer**, so they may see a different
number of tokens. Their depths differ too, so layers are placed by **depth**: block i of L sits at (i + 1) / L, and
0 is the embeddings. Below: each model's tokens, its ten most likely next tokens (temperature 1, no filter, as the
LM head tab shows them), the length of the residual stream at the last token, and how spread out attention is:
its **entropy** −Σ p log p in nats, averaged over heads and query positions (0 = every query looks at
one token; the dotted line is attention spread evenly over what each query may see). Where both are decoders,
the **overlap** of their top-10 is counted by the tokens' text, since the two vocabularies number tokens
differently. The numbers are the ones each model's own tabs show: click a link, or a point of the entropy plot."""

K = 10                                       # tokens in each top-k list, and the overlap's k
SETTINGS = SamplingSettings(1.0, 0, 1.0)    # the LM head tab at temperature 1, top-k and top-p off
COLOURS = (SAFE_COLOURS[0], SAFE_COLOURS[5])  # left, right


def _available(preferred: str, names: list[str], other: str = "") -> str:
    """preferred if it can load here, else the first model that is not `other`."""
    return preferred if preferred in names else next((n for n in names if n != other), names[0] if names else "")


@dataclass
class Side:
    """One model's reading of the text: its tokens (each model's own cut), the shared forward and its top-k."""
    name: str
    model: object
    tokens: list
    forward: Run
    top: list[tuple[str, float]] | None   # None: an encoder, no next token
    notice: str


def read(model_name: str, text: str) -> Side:
    """The model's tokens of the text (the last ATTENTION_TOKENS, for which the patterns are recorded), its recorded
    forward and, for a decoder, its next-token top-K."""
    model = get_model(model_name)
    tokens, notice = text_to_tokens(model, text, ATTENTION_TOKENS, keep="last")
    ids = tuple(t.id for t in tokens)
    forward = run(model_name, ids)
    top = None
    if model.cfg.causal and model.unembed is not None:
        probs = stages(forward.logits(prediction_position(model, ids)), SETTINGS)["probs"]
        top = top_k_texts(probs, model.tokenizer, K)
    return Side(model_name, model, tokens, forward, top, f"{model_name}: {notice}" if notice else "")


def why_no_top(side: Side) -> str:
    """Why a model has no next-token list (the tab says so in the figure and under it)."""
    if side.model.unembed is None:
        return f"{side.name} is an encoder with no output head (it gives sentence embeddings): it predicts no tokens."
    return (f"{side.name} is an encoder, a masked LM: it reads the whole text at once and fills in [MASK]; it does "
            "not predict a next token.")


def links_html(side: Side, text: str) -> str:
    """The model's name, its tokens as chips and links to the tabs that explain its numbers."""
    c = side.model.cfg
    tabs = [("overview", "Overview"), ("attention", "Attention heads"),
            ("residual", "Residual stream") if c.pre_norm else ("block", "Block: norm & FFN")]
    tabs += [("lm_head", "LM head & sampling")] if side.model.unembed is not None else []
    links = " · ".join(f"<a data-view href='{html.escape(view_link(tab, side.name, text=text))}'>{title}</a>"
                       for tab, title in tabs)
    kind = "decoder" if c.causal else "encoder"
    return (f"<h4 style='margin:6px 0 2px'>{html.escape(side.name)} <small>({kind}, {c.n_layers} layers, "
            f"{c.n_heads} heads, width {c.d_model}, vocabulary {c.vocab_size:,})</small></h4>"
            f"<div>{len(side.tokens)} tokens · open in {links}</div>" + chips_html(side.tokens))


def top_figure(sides: list[Side], shared: set[str]) -> go.Figure:
    """Each model's K most likely next tokens; a bar in its model's colour is in both lists, a grey one in this one."""
    layout = grid(2, titles=[s.name for s in sides], gap=(0.22, 0),
                  x=dict(tickformat=".0%", rangemode="tozero"),
                  y=dict(autorange="reversed", showgrid=False, tickfont=dict(size=13)))
    bars, notes = [], []
    for i, (side, colour) in enumerate(zip(sides, COLOURS)):
        x_axis, y_axis = layout[axis("x", i)], layout[axis("y", i)]
        if side.top is None:  # an encoder: its panel says so where the bars would be
            x_axis.update(visible=False), y_axis.update(visible=False)
            notes.append(dict(text="no next token:<br>" + ("no output head" if side.model.unembed is None else
                                                           "a masked LM fills in [MASK]"),
                              xref="paper", yref="paper", x=sum(x_axis["domain"]) / 2, y=0.5,
                              showarrow=False, font=dict(size=14, color="#6b7280")))
            continue
        y_axis.update(tickvals=list(range(K)), ticktext=[f"'{visible(t)}'" for t, _ in side.top])  # quoted: ',' shows
        bars.append(dict(type="bar", orientation="h", x=[p for _, p in side.top], y=list(range(K)), showlegend=False,
                         marker=dict(color=[colour if t in shared else "#d1d5db" for t, _ in side.top]),
                         text=[f"{p:.1%}" for _, p in side.top], textposition="outside", cliponaxis=False,
                         hovertemplate="%{customdata}: %{x:.2%}<extra></extra>",
                         customdata=[visible(t) for t, _ in side.top], **on(i)))
    layout["annotations"] = layout.get("annotations", []) + notes
    return figure(bars, **layout, height=400, margin=dict(t=80, l=60, r=40),
                  title=dict(text=f"Next-token top-{K} at temperature 1 (coloured: in both lists; grey: in this one)"))


def depth_figure(sides: list[Side], title: str, y_title: str, series, log: bool = False) -> go.Figure:
    """One line per model over depth 0..1; series(side) -> [(trace name, x, y, dash, links or None)]."""
    traces = []
    for side, colour in zip(sides, COLOURS):
        for name, x, y, dash, links in series(side):
            traces.append(dict(type="scatter", mode="lines+markers" if dash == "solid" else "lines", name=name,
                               x=x, y=y, line=dict(color=colour, dash=dash, width=3 if dash == "solid" else 1.5),
                               customdata=links, hovertemplate=f"{name}<br>depth %{{x:.2f}}: %{{y:.3f}}<extra></extra>"))
    return figure(traces, title=dict(text=title), height=360, margin=dict(t=60),
                  xaxis=dict(title=dict(text="depth (block i of L at (i + 1) / L; 0 = embeddings)"), range=[-0.03, 1.03]),
                  yaxis=dict(title=dict(text=y_title), type="log" if log else "linear"),
                  legend=dict(orientation="h", x=1, xanchor="right", y=1.15))


def residual_series(side: Side):
    length = stream_length(side.forward.cache.accumulated_resid())            # (L + 1,)
    return [(f"{side.name} ‖stream‖", depths(side.model.cfg.n_layers).tolist(), length.tolist(), "solid", None)]


def entropy_series(side: Side, text: str):
    L = side.model.cfg.n_layers
    entropy = attention_entropy(side.forward.cache.stack("pattern"))            # (L,)
    x = depths(L)[1:].tolist()
    links = [view_link("attention", side.name, text=text, layer=i) for i in range(L)]
    even = uniform_entropy(side.forward.cache["mask", 0])
    return [(f"{side.name}", x, entropy.tolist(), "solid", links),
            (f"{side.name}: even over what it may see", [0, 1], [even, even], "dot", None)]


def overlap_note(sides: list[Side], shared: list[str]) -> str:
    """The overlap of the two top-K lists as a number and the tokens, or plainly why there is none."""
    encoders = [why_no_top(s) for s in sides if s.top is None]
    if encoders:
        return (f"**No top-{K} overlap:** comparing next tokens needs two decoders. " + " ".join(encoders) +
                " The tokens, the residual streams and attention of both are compared here all the same.")
    tokens = ", ".join(f"`{visible(t)}`" for t in shared) or "none"
    return (f"**Top-{K} overlap: {len(shared)} of {K}** tokens are in both lists (matched by their text: the two "
            f"vocabularies number tokens differently): {tokens}.")


def update(left: str, right: str, text: str):
    """Both models' tokens, next-token top-K, stream length and attention entropy; the overlap of their top-K."""
    sides = [read(left, text), read(right, text)]
    shown = clean_text(text)[0]  # what the linked tabs read
    shared = top_k_overlap(sides[0].top, sides[1].top) if all(s.top for s in sides) else []
    same = "The same model on both sides: every number matches. " if left == right else ""
    notice = join_notes(same, *(s.notice for s in sides))
    residual = depth_figure(sides, "Length of the residual stream at the last token, by depth", "length (log scale)",
                            residual_series, log=True)
    entropy = depth_figure(sides, "Attention entropy per layer (mean over heads and query positions); click a point",
                           "entropy (nats)", lambda s: entropy_series(s, shown))
    return (notice, links_html(sides[0], shown), links_html(sides[1], shown), top_figure(sides, set(shared)),
            overlap_note(sides, shared), residual, entropy)


def build(page) -> View:
    names = [name for _, name in model_choices()]
    gr.Markdown(INTRO)
    with gr.Row():
        left = gr.Dropdown(model_choices(), value=_available("tiny-gpt-char", names), label="Left model")
        right = gr.Dropdown(model_choices(), value=_available("smollm2-135m", names, "tiny-gpt-char"),
                            label="Right model")
    text = gr.Textbox(label="Text", value="The capital of France is")
    examples = [[a, b, t] for a, b, t in [("tiny-gpt-char", "smollm2-135m", "The capital of France is"),
                                           ("tiny-gpt-char", "tiny-moe", "ROMEO: But soft, what light through yonder"),
                                           ("smollm2-135m", "minilm-l6", "The cat sat on the mat.")]
                if a in names and b in names]
    ex = gr.Examples(examples, [left, right, text])
    notice = gr.Markdown()
    with gr.Row():
        left_tokens, right_tokens = gr.HTML(), gr.HTML()
    top_plot = gr.Plot()
    overlap = gr.Markdown()
    residual_plot = gr.Plot()
    entropy_plot = gr.Plot()
    code_panel(stream_length, attention_entropy, uniform_entropy, top_k_texts, top_k_overlap)
    inputs = [left, right, text]
    outputs = [notice, left_tokens, right_tokens, top_plot, overlap, residual_plot, entropy_plot]
    page.on([text.submit, left.input, right.input, ex.load_input_event], update, inputs, outputs, api="compare")
    return View(links=dict(text=text, left=left, right=right), draws=[page.event(update, inputs, outputs)])
