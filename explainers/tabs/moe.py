"""MoE routing tab: which experts each token uses, the router's choice in detail, load, and live re-routing."""
from __future__ import annotations

import gradio as gr
import plotly.colors
import plotly.graph_objects as go
import torch

from core.inputs import InputError, fitted, number, text_to_tokens
from core.learning.data import corpus_split
from core.learning.evaluation import expert_choices, expert_load
from core.model.moe import MoE, Routing, load_balancing_loss, route, routing
from core.model.transformer import active_parameters
from core.weights import zoo
from explainers.activations import run
from explainers.draw.figures import chips_html, compare_figure, figure, grid, on, scale, token_labels
from explainers.draw.widgets import FittedSlider, code_panel, fit_experts, fit_layer, fit_position
from explainers.page.inputs import get_model, join_notes
from explainers.page.serving import shared
from explainers.page.tab import View

TITLE = "MoE routing"
INTRO = r"""### Mixture of experts: a router picks a few FFNs per token
In an MoE layer the feed-forward network is replaced by E **experts**. A small **router** scores
them for each token, keeps the top k and mixes their outputs with renormalised weights:

$$p = \text{softmax}(x W_r), \qquad
  y = \sum_{e \in \text{top-}k(p)} \frac{p_e}{\sum_{j \in \text{top-}k} p_j}\, \text{FFN}_e(x)$$

(Granite takes the softmax of the k largest logits alone: the same weights, as the shared denominator cancels.)
So the model holds E experts' parameters but each token pays for only k of them. The
**load-balancing loss** E · Σₑ fₑ Pₑ (fₑ: share of tokens sent to expert e, Pₑ: its mean router
probability) keeps every expert in use during training. Change the routing below and the
model runs again with it."""

MAX_TOKENS = 64
SAMPLE_CHARS = 20_000
LARGE_MODEL_CHARS = 2_000  # a model of 100M+ active parameters (granite-moe-1b: 400M) reads about 500 tokens
# One colour per expert. The first eight stay apart at full strength and as the light chips of the coloured text
# (Okabe-Ito's blue and sky blue, or orange and yellow, looked alike as chips); a model with more experts
# (Granite 32, Qwen1.5-MoE 60) takes Plotly's long qualitative lists after them. tests/test_moe.py measures both.
EXPERT_COLOURS = list(dict.fromkeys(["#17BECF", "#FF7F0E", "#2CA02C", "#E41A1C", "#6A3D9A", "#F0E442", "#E7298A",
                                     "#FF9DA7"] + [c.upper() for c in plotly.colors.qualitative.Alphabet
                                                   + plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24]))
CHIP_TINT = "99"  # the chips' opacity (60%): light enough for black text
WRITTEN_CELLS = 24  # tokens up to which the choices heatmap writes each cell's experts


def expert_colour(e: int) -> str:
    return EXPERT_COLOURS[e % len(EXPERT_COLOURS)]


def moe_model(model_name: str):
    """The chosen model if it has experts, else the project's tiny-moe (with a note saying so)."""
    model = get_model(model_name)
    if model.cfg.n_experts:
        return model, model_name, ""
    return get_model("tiny-moe"), "tiny-moe", f"{model_name} has no experts, so this tab shows **tiny-moe**."


def routing_of(model_name: str, ids: tuple[int, ...], change: Routing | None) -> dict:
    """Router logits, chosen experts and weights of every layer (L, T, ...), and the last position's logits,
    from the shared forward with this routing."""
    recorded = run(model_name, ids, change)
    return {"router_logits": recorded.cache.stack("router_logits"), "weights": recorded.cache.stack("expert_weights"),
            "indices": recorded.cache.stack("expert_indices"), "next": recorded.logits(-1)}


def sample_chars(model) -> int:
    """How much held-out text the corpus load reads: fewer characters for a real-sized model, whose forward
    costs thousands of times the tiny one's on a CPU."""
    return SAMPLE_CHARS if active_parameters(model) < 100_000_000 else LARGE_MODEL_CHARS


@shared(4)  # a property of the model, computed once
def corpus_load(name: str) -> torch.Tensor:
    """(L, E) share of routing slots per expert on the first sample_chars held-out characters."""
    model = get_model(name)
    _, indices = expert_choices(model, corpus_split()[1][:sample_chars(model)])
    return expert_load(indices, model.cfg.n_experts)


def warm_up() -> None:
    """Start-up work: tiny-moe's expert load over the corpus (every update of this tab draws it)."""
    if zoo.available()["tiny-moe"] is None:
        corpus_load("tiny-moe")


def _colourscale(E: int) -> list:
    """A stepped colour scale: expert e gets EXPERT_COLOURS[e] on a heatmap of expert ids 0..E-1."""
    stops = []
    for e in range(E):
        colour = expert_colour(e)
        stops += [[e / E, colour], [(e + 1) / E, colour]]
    return stops


def choices_figure(indices: torch.Tensor, weights: torch.Tensor, labels: list[str], E: int) -> go.Figure:
    """Layers x tokens, coloured by each token's first-choice expert; the cell text lists all k choices."""
    top1 = indices[..., 0]                                                        # (L, T)
    text = [["·".join(str(int(e)) for e in cell) for cell in row] for row in indices.tolist()]
    hover = [["<br>".join(f"expert {e}: weight {w:.2f}" for e, w in zip(ei, wi)) for ei, wi in zip(er, wr)]
             for er, wr in zip(indices.tolist(), weights.tolist())]
    written = len(labels) <= WRITTEN_CELLS  # more cells are too narrow for "3·4", in lecture type above all
    choices = dict(type="heatmap", z=top1.numpy(), x=labels, y=[f"layer {i}" for i in range(len(top1))], text=text,
                   texttemplate="%{text}" if written else "", textfont=dict(size=9), customdata=hover,  # colour: contrast
                   colorscale=_colourscale(E), zmin=-0.5, zmax=E - 0.5, xgap=1, ygap=1,
                   colorbar=dict(title=dict(text="1st expert"), tickvals=list(range(E))),
                   hovertemplate="%{y}, token %{x}<br>%{customdata}<extra></extra>")
    return figure([choices], xaxis=dict(tickangle=-60, tickfont=dict(size=10)), yaxis=dict(autorange="reversed"),
                  title=dict(text="Chosen experts per token and layer (colour: first choice; "
                                  + ("text: all k)" if written else "hover: all k, and their weights)")),
                  height=140 + 40 * len(top1))


def text_html(tokens, indices: torch.Tensor, weights: torch.Tensor, layer: int) -> str:
    """The input text, each token coloured by its first-choice expert at one layer."""
    colours = [expert_colour(int(i[0])) + CHIP_TINT for i in indices[layer]]
    titles = [", ".join(f"expert {int(e)} ({w:.2f})" for e, w in zip(ei, wi))
              for ei, wi in zip(indices[layer], weights[layer])]
    E = int(indices.max()) + 1
    legend = " ".join(f"<span style='background:{expert_colour(e)}{CHIP_TINT};padding:1px 6px;border-radius:4px'>"
                      f"expert {e}</span>" for e in range(E))
    return (f"<div><b>Layer {layer}</b>, each token in its first expert's colour, its number below (hover for the "
            f"weights): {legend}</div>" + chips_html(tokens, colours=colours, titles=titles,
                                                       subs=[f"e{int(i[0])}" for i in indices[layer]]))


def router_figure(router_logits: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, label: str,
                  renormalized: bool = True) -> go.Figure:
    """One token at one layer: router probabilities over all experts; the chosen ones with their weights."""
    probs = router_logits.float().softmax(-1)
    E = len(probs)
    chosen = {int(e): float(w) for e, w in zip(indices, weights)}
    bars = dict(type="bar", x=[f"expert {e}" for e in range(E)], y=probs.tolist(),
                marker=dict(color=[expert_colour(e) if e in chosen else "#d1d5db" for e in range(E)]),
                text=[f"chosen, weight {chosen[e]:.2f}" if e in chosen else "" for e in range(E)],
                textposition="outside", cliponaxis=False,
                hovertemplate="%{x}: router probability %{y:.3f}<extra></extra>")
    title = (f"Router at {label}: probabilities (bars) and the top-{len(chosen)} "
             + ("renormalised weights" if renormalized else "weights (this model keeps the probabilities as they are)"))
    return figure([bars], title=dict(text=title),
                  yaxis=dict(tickformat=".0%", range=[0, max(1e-9, float(probs.max())) * 1.25]), height=340)


def load_figure(load_input: torch.Tensor, load_corpus: torch.Tensor, chars: int = SAMPLE_CHARS) -> go.Figure:
    """(L, E) expert load for the input and for a corpus sample of that many characters; an even split is 1/E each."""
    L, E = load_input.shape
    layout = grid(2, titles=["this input", f"{chars:,} held-out characters of the corpus"], gap=(0.08, 0),
                  y=dict(autorange="reversed"))
    maps = [dict(type="heatmap", z=load.numpy(), x=[f"e{e}" for e in range(E)], y=[f"layer {i}" for i in range(L)],
                 text=[[f"{v:.0%}" for v in row] for row in load.tolist()], texttemplate="%{text}",
                 colorscale=scale("Blues"), zmin=0, zmax=max(0.5, float(load.max())), showscale=False, **on(i),
                 hovertemplate="%{y}, %{x}: %{z:.1%} of routing slots<extra></extra>")
            for i, load in enumerate([load_input, load_corpus])]
    return figure(maps, **layout, title=dict(text=f"Expert load: share of routing slots (even = {1 / E:.1%} each)"),
                  height=140 + 36 * L, margin=dict(t=70))


def stats_markdown(model, cache: dict) -> str:
    cfg = model.cfg
    losses = [load_balancing_loss(logits, idx, cfg.n_experts).item()
              for logits, idx in zip(cache["router_logits"], cache["indices"])]
    k = cache["indices"].shape[-1]                          # the routing's top-k, which the tab may have changed
    total, active = sum(p.numel() for p in model.parameters()), active_parameters(model, k)
    shared = f", plus the shared expert ({cfg.d_shared:,} neurons) that every token runs" if cfg.d_shared else ""
    return (f"**Load-balancing loss** per layer on this input: {', '.join(f'{v:.3f}' for v in losses)} "
            f"(it equals k = {k} when tokens and router probabilities are spread evenly, and grows as they "
            f"concentrate).  \n**Parameters:** {total:,} in total, {active:,} active per token "
            f"({active / total:.0%}): each token runs {k} of {cfg.n_experts} experts per layer{shared}.")


def parse_routing(cfg, top_k: int, noise, seed, disabled, forced) -> tuple[Routing | None, str]:
    """Widget values -> a checked Routing (None when nothing differs from the model's own routing); top_k is
    already fitted to the model (`fit_experts`)."""
    seed, note_seed = fitted("seed", seed, 0, 2**31 - 1)
    noise = number("router noise", noise, 0, 10, whole=False)  # 0 switches it off
    try:
        off = frozenset(int(str(e).lstrip("e")) for e in disabled or [])
        force = None if forced in (None, "", "none") else int(str(forced).lstrip("e"))
    except ValueError:
        raise InputError("Pick experts from the lists (e0, e1, ...).") from None
    change = Routing(top_k=top_k, noise=noise, seed=seed, disabled=off, forced=force)
    if change == Routing(top_k=cfg.top_k, seed=seed):
        return None, note_seed
    try:
        return change.check(cfg.n_experts), note_seed
    except InputError as e:
        raise InputError(f"This routing cannot run: {e}.") from None


def update(model_name: str, text: str, layer, position, top_k, noise, seed, disabled, forced):
    """The routing's figures and notes, then the layer, position and top-k sliders fitted to the model and the
    text."""
    model, name, note_model = moe_model(model_name)
    cfg = model.cfg
    tokens, notice = text_to_tokens(model, text, MAX_TOKENS)
    fits = fit_layer(model, layer), fit_position(model, tokens, position), fit_experts(model, top_k)
    layer, position, top_k = (f.value for f in fits)
    position = len(tokens) - 1 if position == -1 else position
    change, note_routing = parse_routing(cfg, top_k, noise, seed, disabled, forced)
    ids = tuple(t.id for t in tokens)
    own, cache = routing_of(name, ids, None), routing_of(name, ids, change)
    labels = token_labels(tokens)
    router = router_figure(cache["router_logits"][layer, position], cache["indices"][layer, position],
                           cache["weights"][layer, position], f"layer {layer}, token {labels[position]}", cfg.renormalize)
    load_input = expert_load(cache["indices"], cfg.n_experts)
    if change is None:
        effect = compare_figure(own["next"].softmax(-1), cache["next"].softmax(-1), model.tokenizer,
                                "Next-token prediction with the model's own routing", "the same (no change chosen)")
        effect_note = "Change the routing (top-k, noise, a disabled or forced expert) to see its effect."
    else:
        moved = (own["indices"][..., 0] != cache["indices"][..., 0]).float().mean(-1)
        tv = 0.5 * (own["next"].softmax(-1) - cache["next"].softmax(-1)).abs().sum().item()
        effect = compare_figure(own["next"].softmax(-1), cache["next"].softmax(-1), model.tokenizer,
                                "Next-token prediction: own routing vs the changed one", "with the changed routing")
        effect_note = (f"Tokens whose first expert changed, per layer: {', '.join(f'{m:.0%}' for m in moved)}. "
                       f"The next-token distribution moved by a total variation of **{tv:.3f}**.")
    return (choices_figure(cache["indices"], cache["weights"], labels, cfg.n_experts),
            text_html(tokens, cache["indices"], cache["weights"], layer), router,
            load_figure(load_input, corpus_load(name), sample_chars(model)), stats_markdown(model, cache), effect,
            effect_note,
            join_notes(note_model, notice, *(f.note for f in fits), note_routing), *(f.slider for f in fits))


def expert_widgets(model_name: str, disabled=(), forced="none"):
    """Expert pickers fitted to the model the tab shows, keeping the given choices that fit it."""
    cfg = moe_model(model_name)[0].cfg
    names = [f"e{e}" for e in range(cfg.n_experts)]
    return (gr.CheckboxGroup(choices=names, value=[e for e in disabled or () if e in names]),
            gr.Dropdown(choices=["none"] + names, value=forced if forced in names else "none"))


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="ROMEO:\nBut, soft! what light through yonder window breaks?")
    ex = gr.Examples([["ROMEO:\nBut, soft! what light through yonder window breaks?"],
                      ["To be, or not to be, that is the question."], ["KING HENRY:\nOnce more unto the breach!"]],
                     [text])
    with gr.Row():
        layer = FittedSlider(0, 3, value=0, step=1, label="Layer (coloured text, router detail)")
        position = FittedSlider(-1, MAX_TOKENS - 1, value=-1, step=1, label="Token for the router detail (−1 = last)")
    notice = gr.Markdown()
    choices_plot, coloured, router_plot, load_plot = gr.Plot(), gr.HTML(), gr.Plot(), gr.Plot()  # in this order
    stats = gr.Markdown()
    gr.Markdown("### Re-route live\nThese change how every MoE layer routes, and the model runs again.")
    with gr.Row():
        top_k = FittedSlider(1, 8, value=2, step=1, label="Experts per token (top-k)")
        noise = gr.Slider(0, 2, value=0, step=0.05, label="Noisy top-k: router noise std (0 = off)")
        seed = gr.Number(value=0, precision=0, label="Noise seed", minimum=0)
    with gr.Row():
        disabled = gr.CheckboxGroup([f"e{e}" for e in range(8)], label="Disable experts")
        forced = gr.Dropdown(["none"] + [f"e{e}" for e in range(8)], value="none", label="Force an expert")
    effect_note = gr.Markdown()
    effect_plot = gr.Plot()
    code_panel(MoE.forward, route, load_balancing_loss, expert_load, routing)
    inputs = [page.model, text, layer, position, top_k, noise, seed, disabled, forced]
    outputs = [choices_plot, coloured, router_plot, load_plot, stats, effect_plot, effect_note, notice, layer, position,
               top_k]
    page.on([text.submit, layer.release, position.release, top_k.release, noise.release, seed.submit, disabled.input,
             forced.input, ex.load_input_event], update, inputs, outputs, api="moe")
    return View(links=dict(text=text, layer=layer, position=position, top_k=top_k, noise=noise, seed=seed,
                           disable=disabled, force=forced),
                draws=[page.event(expert_widgets, [page.model, disabled, forced],  # keeps a link's choices
                                  [disabled, forced], remember=False),
                       page.event(update, inputs, outputs)])
