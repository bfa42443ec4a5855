"""Block tab: one layer, one position: the residual stream in, the norm step by step, attention's output
added, the FFN's neurons, the residual stream out."""
from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import torch

from core.analysis.anatomy import ffn_steps, inside_block, mlp_steps, norm_steps, top_neurons, vocabulary_reading
from core.inputs import text_to_tokens
from core.model.mlp import ACTIVATIONS
from core.model.transformer import Block, Norm
from explainers.activations import ATTENTION_TOKENS, run
from explainers.draw.figures import figure, grid, on, piece, scale
from explainers.draw.widgets import FittedSlider, code_panel, fit_layer, fit_position
from explainers.page.inputs import get_model, join_notes
from explainers.page.tab import View

TITLE = "Block: norm & FFN"
INTRO = r"""### Inside one block
A block reads the **residual stream** (one vector per token), and adds two things to it:
attention's output, then the feed-forward network's (FFN). Before each, a **norm** rescales the
vector: LayerNorm centres it and divides by its standard deviation; RMSNorm skips the centring and
divides by the root mean square. Then a learned **gain** (and for LayerNorm a **bias**) per dimension:

$$\text{LayerNorm}(x) = g \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + b \qquad
\text{RMSNorm}(x) = g \odot \frac{x}{\sqrt{\overline{x^2} + \epsilon}}$$

The FFN widens each vector to F **neurons**, applies an activation function, and projects back:

$$\text{FFN}(x) = W_{down}\,\text{GELU}(W_{up}\,x) \qquad
\text{SwiGLU: } W_{down}\big(\text{SiLU}(W_{gate}\,x) \odot W_{up}\,x\big)$$

Each neuron writes its own direction (a column of the down-projection) into the stream, scaled by how strongly
it fired. Every number below is this model's, for this token."""

NORMS = ["before attention (ln1)", "before the FFN (ln2)"]
MAX_TOKENS = ATTENTION_TOKENS
STREAM_ROWS = [("resid_pre", "stream in"), ("attn_out", "+ attention's output"), ("resid_mid", "= after attention"),
               ("mlp_out", "+ FFN's output"), ("resid_post", "= stream out")]
SHORT = {"gelu": "GELU", "gelu_tanh": "GELU (tanh)", "relu": "ReLU", "silu": "SiLU"}
PLACEMENT = {"sandwich-norm": " This family also normalises what each sublayer returns before adding it (ln1_post, "
                              "ln2_post): the stream's 'attention's output' and 'FFN's output' are after those norms.",
             "output-norm": " This family normalises only what each sublayer returns (ln1_post, ln2_post), not its "
                            "input: the norm shown is the one after the sublayer, on its raw output."}


def _cap(values: torch.Tensor, q: float = 0.99) -> float:
    """A colour or axis limit that a few huge outliers (SmolLM2 has a few dimensions far larger than the rest) do not set."""
    return float(values.abs().flatten().float().quantile(q)) or 1.0


def stream_figure(view: dict, post_norm: bool) -> go.Figure:
    """The block as addition: the stream in, what attention and the FFN add, and the stream out, dimension by dimension."""
    rows = torch.stack([view[key] for key, _ in STREAM_ROWS]).float().cpu()          # (5, C)
    names = [label for _, label in STREAM_ROWS]
    if post_norm:
        names[2], names[4] = "= norm(in + attention)", "= norm(after attention + FFN)"
    norms = rows.norm(dim=-1).tolist()
    limit = _cap(rows)
    strip = dict(type="heatmap", z=rows.numpy(), y=[f"{n}  ‖·‖={v:.1f}" for n, v in zip(names, norms)],
                 colorscale=scale("RdBu"), reversescale=True, zmin=-limit, zmax=limit, ygap=3,
                 colorbar=dict(title=dict(text="value")),
                 hovertemplate="%{y}<br>dimension %{x}: %{z:.3f}<extra></extra>")
    return figure([strip], title=dict(text="The residual stream through this block (every dimension)"),
                  xaxis=dict(title=dict(text="dimension of the residual stream")),
                  yaxis=dict(autorange="reversed", type="category"), height=300, margin=dict(b=40))


def norm_figure(steps: dict[str, dict], own: str) -> go.Figure:
    """The norm's input, LayerNorm's and RMSNorm's normalised vector, and both after the model's gain."""
    x = steps[own]["x"]
    dims = list(range(x.shape[0]))
    colours = {"layernorm": "#2563eb", "rmsnorm": "#f97316"}
    names = {k: ("LayerNorm" if k == "layernorm" else "RMSNorm") + (" (this model)" if k == own else "") for k in steps}
    layout = grid(1, 3, titles=["the vector in, x", "divided by the scale (hook_normalized)",
                                "times the gain g (+ bias b): the norm's output"], gap=(0, 0.12))
    traces = [dict(type="scatter", x=dims, y=x.tolist(), mode="lines", line=dict(color="#6b7280", width=1),
                   name="x", showlegend=False, **on(0)),
              dict(type="scatter", x=[0, dims[-1]], y=[float(x.mean())] * 2, mode="lines", showlegend=False,
                   line=dict(color="#2563eb", dash="dash"), name="mean μ", **on(0))]
    for i, key in [(1, "normalized"), (2, "out")]:
        for kind in ("rmsnorm", "layernorm"):
            traces.append(dict(type="scatter", x=dims, y=steps[kind][key].tolist(), mode="lines", name=names[kind],
                               legendgroup=kind, showlegend=i == 1,
                               line=dict(color=colours[kind], width=2 if kind == own else 1), **on(i)))
    for i, values in enumerate([x, steps[own]["normalized"], steps[own]["out"]]):
        limit = _cap(values) * 1.3
        layout[f"yaxis{i + 1 if i else ''}"]["range"] = [-limit, limit]
    layout["xaxis3"]["title"] = dict(text="dimension (values past the axis are cut: a few dimensions are huge)")
    return figure(traces, **layout, height=560, margin=dict(t=40, b=40),
                  legend=dict(orientation="h", x=1, xanchor="right", y=1.06))


def norm_table(steps: dict[str, dict], own: str) -> str:
    """The scalars of both norms on the same vector."""
    ln, rms = steps["layernorm"], steps["rmsnorm"]
    head = "| step | LayerNorm | RMSNorm |\n|---|---|---|\n"
    rows = [("mean μ subtracted", f"{float(ln['mean']):.4f}", "— (not centred)"),
            ("variance σ² / mean square x̄²", f"{float(ln['mean_square']):.4f}", f"{float(rms['mean_square']):.4f}"),
            ("divisor √(· + ε) (hook_scale)", f"{float(ln['scale']):.4f}", f"{float(rms['scale']):.4f}"),
            ("mean after dividing", f"{float(ln['normalized'].mean()):.4f}", f"{float(rms['normalized'].mean()):.4f}"),
            ("gain g: mean, range", *[f"{float(s['weight'].mean()):.3f}, [{float(s['weight'].min()):.2f}, "
                                      f"{float(s['weight'].max()):.2f}]" for s in (ln, rms)])]
    mark = "LayerNorm" if own == "layernorm" else "RMSNorm"
    return (head + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
            + f"\n\nThis model uses **{mark}**; the other column is the same vector through the other norm with "
              "this model's gain, for comparison.")


def ffn_figure(ffns: list[dict], act: str, gated: bool) -> go.Figure:
    """Every activation function, the model's own bold, with this token's real pre-activations on it; and how big
    each neuron's write is, by its activation."""
    pre = torch.cat([f["pre"] for f in ffns]).float().cpu()
    lo, hi = float(pre.min()), float(pre.max())
    xs = torch.linspace(min(lo, -3.0), max(hi, 3.0), 241)
    layout = grid(2, titles=[f"activation functions;<br>dots: this token's {pre.numel():,} "  # two lines: side by side
                             + ("gate values" if gated else "pre-activations"),
                             "what each neuron writes:<br>‖activation × its output column‖"], gap=(0.08, 0))
    traces = [dict(type="scatter", x=xs.tolist(), y=fn(xs).tolist(), mode="lines", name=SHORT[name],
                   line=dict(width=3 if name == act else 1, dash="solid" if name == act else "dot"), **on(0))
              for name, fn in ACTIVATIONS.items()]
    for f in ffns:
        label = "this token" if f["expert"] is None else f"expert {f['expert']} (weight {f['weight']:.2f})"
        traces.append(dict(type="scatter", x=f["pre"].tolist(), y=f["act"].tolist(),
                           mode="markers", name=label, marker=dict(size=4, opacity=0.6), **on(0)))
        size = f["write_size"].float().cpu()
        traces.append(dict(type="scatter", x=f["post"].tolist(), y=size.tolist(), mode="markers", showlegend=False,
                           name=label, marker=dict(size=4, opacity=0.6),
                           hovertemplate="neuron %{customdata}: activation %{x:.3f}, writes %{y:.3f}<extra></extra>",
                           customdata=list(range(size.numel())), **on(1)))
    layout["yaxis"].update(range=[min(-1.5, float(min(f["act"].min() for f in ffns)) - 0.2), max(3.0, hi) + 0.2],
                           title=dict(text="act(x)"))
    layout["xaxis"].update(range=[float(xs[0]), float(xs[-1])], title=dict(text="x (pre-activation)"))
    layout["xaxis2"].update(title=dict(text="neuron's activation" + (" (act(gate) × up)" if gated else "")))
    return figure(traces, **layout, height=440, margin=dict(b=40, t=70),
                  legend=dict(orientation="h", y=-0.2))


def neuron_table(model, neurons: list[dict]) -> pd.DataFrame:
    """The top neurons as a table, each with the tokens its write pushes up and down (read through the unembedding).
    A gated FFN's neuron shows its three numbers: the gate the activation reads, act(gate) (a point on the curve
    above), and act(gate) x up, what the down-projection scales its column by."""
    gated = model.cfg.gated_ffn
    columns = ["neuron", *(["gate (what act reads)", "act(gate)", "act(gate) × up"] if gated else
                           ["pre-activation", "activation"]), "writes ‖·‖", "pushes up", "pushes down"]
    rows = []
    for n in neurons:
        up, down = vocabulary_reading(model, n["write"], 4)
        name = f"n{n['neuron']}" if n["expert"] is None else f"expert {n['expert']} n{n['neuron']}"
        values = [n["pre"], n["act"], n["post"]] if gated else [n["pre"], n["post"]]
        rows.append([name, *(round(v, 3) for v in values), round(n["size"], 3),
                     " ".join(piece(model.tokenizer, i) for i in up), " ".join(piece(model.tokenizer, i) for i in down)])
    return pd.DataFrame(rows, columns=columns)


def update(model_name: str, text: str, layer, position, which):
    """The block's figures and tables, then the layer and position sliders fitted to the model and the text."""
    model = get_model(model_name)
    tokens, notice = text_to_tokens(model, text, MAX_TOKENS, keep="last")
    layer_fit, position_fit = fit_layer(model, layer), fit_position(model, tokens, position)
    layer, pos = layer_fit.value, len(tokens) - 1 if position_fit.value == -1 else position_fit.value
    cache = run(model_name, tuple(t.id for t in tokens)).cache
    view = inside_block(model, cache, layer, pos)
    second = which == NORMS[1]
    steps = view["ln2" if second else "ln1"]
    own = "rmsnorm" if view["norms"][second].rms else "layernorm"
    cfg = model.cfg
    shared = f" plus a shared FFN of {cfg.d_shared:,} every token runs" if cfg.d_shared else ""
    kind = (f"{cfg.n_experts} experts, top-{cfg.top_k}, each a " if cfg.n_experts else "") + \
        cfg.ffn_name + f" FFN of {cfg.d_expert or cfg.d_ff:,} neurons{shared}"
    head = (f"Layer **{layer}**, position **{pos}** ({tokens[pos].piece!r}) of {len(tokens)} tokens: "
            f"{cfg.norm_placement} block, {kind}.{PLACEMENT.get(cfg.norm_placement, '')}")
    reading = "" if model.unembed is not None and model.unembed.transform is None else \
        " (this model has no plain unembedding: the tokens are read through its embedding matrix)"
    return (join_notes(head, notice, layer_fit.note, position_fit.note), stream_figure(view, not cfg.pre_norm),
            norm_figure(steps, own), norm_table(steps, own), ffn_figure(view["ffns"], cfg.act, cfg.gated_ffn),
            neuron_table(model, view["neurons"]),
            "Neurons ranked by how much they write into the stream; *pushes up / down*: the tokens whose logits "
            f"the write raises and lowers most{reading}.", layer_fit.slider, position_fit.slider)


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="The capital of France is")
    ex = gr.Examples([["The capital of France is"], ["1 2 3 4 5 6"], ["ROMEO: But soft, what light"]], [text])
    with gr.Row():
        layer = FittedSlider(0, 63, value=0, step=1, label="Layer")
        position = FittedSlider(-1, MAX_TOKENS - 1, value=-1, step=1, label="Position (−1 = the last token)")
        which = gr.Radio(NORMS, value=NORMS[1], label="Norm shown")
    notice = gr.Markdown()
    stream_plot = gr.Plot()
    gr.Markdown("### The norm, step by step")
    norm_plot = gr.Plot()
    table = gr.Markdown()
    gr.Markdown("### The feed-forward network")
    ffn_plot = gr.Plot()
    neurons_note = gr.Markdown()
    neurons = gr.Dataframe(headers=["neuron", "pre-activation", "activation", "writes ‖·‖", "pushes up", "pushes down"],
                           interactive=False, wrap=True,  # the token columns wrap: the table fits a lecture screen
                           column_widths=["10%", "10%", "10%", "10%", "10%", "25%", "25%"])
    code_panel(Norm.steps, norm_steps, Block.forward, mlp_steps, ffn_steps, top_neurons, inside_block)
    inputs = [page.model, text, layer, position, which]
    outputs = [notice, stream_plot, norm_plot, table, ffn_plot, neurons, neurons_note, layer, position]
    page.on([text.submit, ex.load_input_event, layer.release, position.release, which.input], update, inputs, outputs,
            api="block")
    return View(links=dict(text=text, layer=layer, position=position, norm=which),
                draws=[page.event(update, inputs, outputs)])
