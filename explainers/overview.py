"""Overview tab: what the chosen model is made of."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from core.device import describe
from core.model import active_parameters, parameter_groups
from explainers.figures import figure
from explainers.inputs import get_model
from explainers.widgets import code_panel

TITLE = "Overview"
INTRO = """A transformer turns text into **tokens**, each token into a vector (**embedding**), and
then passes those vectors through a stack of **blocks**. Each block mixes information
between positions with **attention** and transforms each position with a **feed-forward**
network; both add their result to the running *residual stream*. The last vector of each
position is turned into a score for every vocabulary entry (**logits**)."""


def model_facts(model) -> list[tuple[str, str]]:
    c = model.cfg
    ffn = f"{c.n_experts} experts, top-{c.top_k}" if c.n_experts else ("gated (SwiGLU)" if c.gated_ffn else c.act.upper())
    return [
        ("Family", c.family), ("Layers", str(c.n_layers)),
        ("Attention heads (H)", str(c.n_heads)), ("Key/value heads (G)", f"{c.n_kv_heads} — {c.attention_kind}"),
        ("Width (C)", str(c.d_model)), ("Head width (D)", str(c.d_head)), ("FFN width (F)", str(c.d_ff)),
        ("Feed-forward", ffn), ("Vocabulary (V)", f"{c.vocab_size:,}"), ("Context", f"{c.n_ctx:,} tokens"),
        ("Positions", c.positions), ("Norm", f"{c.norm}, {'pre' if c.pre_norm else 'post'}-norm"),
        ("Attention", "causal (decoder)" if c.causal else "bidirectional (encoder)"),
        ("Tokenizer", getattr(model.tokenizer, "kind", "none")),
        ("Parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
        ("Active per token", f"{active_parameters(model):,}"), ("Device", describe(model.device)),
    ]


def facts_markdown(facts: list[tuple[str, str]]) -> str:
    return "| Property | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in facts)


def parameters_figure(groups: dict[str, int]) -> go.Figure:
    bars = dict(type="bar", x=list(groups.values()), y=list(groups), orientation="h",
                text=[f"{v / 1e6:.2f}M" for v in groups.values()], textposition="auto")
    return figure([bars], title=dict(text="Where the parameters are"), xaxis=dict(title=dict(text="parameters")),
                  height=320, margin=dict(l=10, r=10, t=50, b=40), yaxis=dict(autorange="reversed"))


def update(model_name: str, progress=gr.Progress()):
    progress(0, desc=f"Loading {model_name} (the first load of a model can take a while)")
    model = get_model(model_name)
    return facts_markdown(model_facts(model)), parameters_figure(parameter_groups(model))


def build(page) -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        facts = gr.Markdown()
        plot = gr.Plot()
    code_panel(parameter_groups, active_parameters)
    page.on([page.model.input, page.loaded], update, page.model, [facts, plot])
