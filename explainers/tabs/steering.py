"""Steering vectors tab: add a contrast direction to the residual stream and watch the next token and the text move."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
import torch

from core.analysis.steering import contrast_direction, contrast_tokens, steered, steered_generation, steered_logits
from core.inputs import InputError, clean_text, number, text_to_tokens
from core.weights.tokenizers import end_of_text
from explainers.activations import run
from explainers.draw.figures import compare_figure, figure, grid, on, piece
from explainers.draw.widgets import FittedSlider, code_panel, fit_layer
from explainers.page.inputs import get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View

TITLE = "Steering vectors"
INTRO = r"""### Steering: push the residual stream in a direction
Run two **contrast prompts** that differ in one idea ("I love you" and "I hate you") and subtract their residual
streams entering block ℓ: what is left points from one idea to the other. Add that vector **v**, times a
**coefficient c**, to the stream entering block ℓ at every position while the model reads your prompt and
writes its continuation:

$$x_\ell \leftarrow x_\ell + c\,v \qquad v = \text{mean over positions}\big(x_\ell(\text{plus}) - x_\ell(\text{minus})\big)$$

No weight changes; c = 0 is the model as it is, c < 0 pushes the other way. This is *activation addition*
(Turner et al., 2023). The blocks after ℓ read the pushed stream, so the effect depends on the layer: too early
and the push is read as a word, too late and few blocks are left to act on it; too large and the text falls apart."""

MAX_PAIRS, MAX_COEFFICIENTS, MAX_NEW = 8, 6, 32
SWEEP = [x / 2 for x in range(-16, 17)]  # -8 .. 8: one batched forward over the prompt
PAIRS = "I love you | I hate you"


def tokens(n: int) -> str:
    return f"{n} token{'s' if n != 1 else ''}"


def quoted(text: str, n: int = 40) -> str:
    """A user's text quoted in a message, cut to n characters."""
    return repr(text if len(text) <= n else text[:n - 1] + "…")


def parse_pairs(model, text) -> tuple[list[tuple[list[int], list[int]]], list[str]]:
    """Contrast pairs, one `plus | minus` a line, as token ids; InputError names the line that is wrong."""
    text, _ = clean_text(text, 2000)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_PAIRS:
        raise InputError(f"At most {MAX_PAIRS} contrast pairs, one a line; got {len(lines)}.")
    pairs = []
    for k, line in enumerate(lines, 1):
        if line.count("|") != 1 or not all(side.strip() for side in line.split("|")):
            raise InputError(f"Line {k} of the contrast pairs should read `plus | minus`, e.g. `{PAIRS}`; "
                             f"got {quoted(line)}.")
        plus, minus = (side.strip() for side in line.split("|"))
        a, b = model.tokenizer.encode(plus), model.tokenizer.encode(minus)
        if len(a) != len(b):
            raise InputError(f"Line {k}: {quoted(plus)} is {tokens(len(a))} and {quoted(minus)} is {tokens(len(b))}; "
                             "a contrast pair is compared position by position, so both sides need as many "
                             "tokens. Try other words (a leading space often makes a word one token).")
        pairs.append((a, b))
    return pairs, [f"{piece(model.tokenizer, p)} / {piece(model.tokenizer, m)}" for p, m in [contrast_tokens(pairs)]]


def parse_coefficients(text) -> list[float]:
    """`-4, 0, 4` as numbers, each from -20 to 20."""
    parts = [p for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if not 1 <= len(parts) <= MAX_COEFFICIENTS:
        raise InputError(f"Give 1 to {MAX_COEFFICIENTS} coefficients separated by commas, e.g. `-4, 0, 4`.")
    return [number("coefficient", p.strip(), -20, 20, whole=False) for p in parts]


def not_a_decoder(model) -> str:
    """Why a model that writes no next token has nothing to steer here ('' when it writes one)."""
    if model.cfg.causal and model.unembed is not None:
        return ""
    return (f"Steering is shown on the next token and the text a model writes, so it needs a decoder such as "
            f"smollm2-135m or tiny-gpt-char; {model.name} is an encoder.")


def check(model_name: str, text: str, pairs_text: str, layer):
    """The model, the prompt's ids, the pairs' ids, the layer fitted to the model, a notice; InputError says what is
    wrong."""
    model = get_model(model_name)
    if not_a_decoder(model):
        raise InputError(not_a_decoder(model))
    pairs, words = parse_pairs(model, pairs_text)
    layer = fit_layer(model, layer)
    tokens, notice = text_to_tokens(model, text, limit=model.cfg.n_ctx - MAX_NEW, keep="last")
    return model, [t.id for t in tokens], pairs, layer, join_notes(layer.note, notice)


def sweep_figure(coefficients: list[float], logits: torch.Tensor, plus: int, minus: int, tokenizer,
                 chosen: float) -> go.Figure:
    """The measured effect against the coefficient: the two words' logit difference, and their probabilities."""
    a, b = piece(tokenizer, plus), piece(tokenizer, minus)
    probs = logits.softmax(-1)
    layout = grid(2, titles=[f"logit('{a}') − logit('{b}')", "next-token probability"], gap=(0.1, 0),
                  x=dict(title=dict(text="coefficient c"), zeroline=True))
    traces = [dict(type="scatter", mode="lines+markers", x=coefficients, y=(logits[:, plus] - logits[:, minus]).tolist(),
                   name="logit difference", line=dict(color="#6b7280"), **on(0)),
              dict(type="scatter", mode="lines", x=coefficients, y=probs[:, plus].tolist(), name=f"P('{a}')",
                   line=dict(color="#2563eb", width=3), **on(1)),
              dict(type="scatter", mode="lines", x=coefficients, y=probs[:, minus].tolist(), name=f"P('{b}')",
                   line=dict(color="#f97316", width=3), **on(1))]
    shapes = [dict(type="line", xref=f"x{'' if i == 0 else 2}", yref="paper", x0=chosen, x1=chosen, y0=0, y1=1,
                   line=dict(dash="dot", color="#111827")) for i in range(2)]
    return figure(traces, **layout, shapes=shapes, height=360, legend=dict(orientation="h", y=-0.25),
                  title=dict(text="The next token as c grows (dotted: the c above)"))


def effect_note(swept: torch.Tensor, plus: int, minus: int, tokenizer, norm: float, stream: float) -> str:
    """How long the push is against the stream, how far the sweep moved the two words, and a plain word when the
    measured effect is weak."""
    diff = swept[:, plus] - swept[:, minus]
    span = float(diff.max() - diff.min())
    note = (f"The direction is **{norm:.1f}** long and the stream it is added to **{stream:.1f}** on average, so "
            f"c = 1 adds {norm / stream:.0%} of its length. Over c from {SWEEP[0]:g} to {SWEEP[-1]:g} the logit "
            f"difference of '{piece(tokenizer, plus)}' and '{piece(tokenizer, minus)}' moves by **{span:.2f}**.")
    if span < 1:
        note += (" **The effect is weak here**: this model barely separates the two words at this layer. Try "
                 "another layer, other pairs or a bigger model; the numbers are the model's.")
    return note


def stream_length(forward, layer: int) -> float:
    """The mean length of the stream entering block `layer` in the recorded forward, without the first token's (an
    outlier on many models: the attention sink) when there are others."""
    entering = forward.cache.accumulated_resid()[layer]                                  # (T, C)
    return entering[1 if len(entering) > 1 else 0:].norm(dim=-1).mean().item()


def update(model_name: str, text: str, pairs_text: str, layer, coefficient):
    """The direction, the next-token distribution with and without it, and the sweep over coefficients; then the
    layer slider fitted to the model."""
    model = get_model(model_name)
    if not_a_decoder(model):  # said on the tab, not as an error: this runs whenever the model changes
        fitted_layer = fit_layer(model, layer)
        return None, None, join_notes(f"**{not_a_decoder(model)}**", fitted_layer.note), fitted_layer.slider
    model, ids, pairs, fitted_layer, notice = check(model_name, text, pairs_text, layer)
    layer = fitted_layer.value
    coefficient = number("coefficient", coefficient, -20, 20, whole=False)
    direction = contrast_direction(model, pairs, layer)
    plus, minus = contrast_tokens(pairs)
    forward = run(model_name, tuple(ids))                  # the recorded forward the other tabs share: c = 0
    logits = steered_logits(model, ids, direction, layer, [coefficient, *SWEEP])        # (1 + len(SWEEP), V)
    note = effect_note(logits[1:], plus, minus, model.tokenizer, direction.norm().item(), stream_length(forward, layer))
    shift = compare_figure(forward.logits(-1).softmax(-1), logits[0].softmax(-1), model.tokenizer,
                           f"The next token, steered at block {layer}", f"steered, c = {coefficient:g}")
    return (shift, sweep_figure(SWEEP, logits[1:], plus, minus, model.tokenizer, coefficient), join_notes(note, notice),
            fitted_layer.slider)


def continuations(model_name: str, text: str, pairs_text: str, layer, coefficients, n_new, job: Job):
    """A long job: the greedy continuation for each coefficient, a row at a time; Cancel stops between them."""
    model, ids, pairs, fitted_layer, notice = check(model_name, text, pairs_text, layer)
    layer = fitted_layer.value
    coefficients = parse_coefficients(coefficients)
    n_new = number("number of new tokens", n_new, 1, MAX_NEW)
    direction = contrast_direction(model, pairs, layer)
    rows = []
    for c in coefficients:
        if job.should_stop():
            yield rows, job.why(f"after {len(rows)} of {len(coefficients)} coefficients")
            return
        g = steered_generation(model, ids, direction, layer, c, n_new, end_of_text(model.tokenizer))
        rows.append([c, model.tokenizer.decode(g.new_ids), round(sum(g.probs) / len(g.probs), 3)])
        yield rows, f"Generated {len(rows)} of {len(coefficients)}…"
    yield rows, join_notes(f"Greedy continuations of {n_new} tokens with the direction added at block {layer}.", notice)


def build(page) -> View:
    gr.Markdown(INTRO)
    with gr.Row():
        text = gr.Textbox(label="Prompt", value="I think dogs are", scale=2)
        pairs = gr.Textbox(label="Contrast pairs: plus | minus, one a line", value=PAIRS, lines=2, scale=2)
    with gr.Row():
        layer = FittedSlider(0, 29, value=6, step=1, label="Block ℓ (the stream entering it)")
        coefficient = gr.Slider(-20, 20, value=4, step=0.5, label="Coefficient c")
    note = gr.Markdown()
    with gr.Row():
        shift = gr.Plot()
        swept = gr.Plot()
    gr.Markdown("### The text it writes\nThe same prompt continued greedily with each coefficient (0 = unsteered).")
    with gr.Row():
        coefficients = gr.Textbox(label="Coefficients", value="-4, 0, 2, 4")
        n_new = gr.Slider(1, MAX_NEW, value=12, step=1, label="New tokens")
        start = gr.Button("Generate", variant="primary")
        cancel = gr.Button("Cancel")
    status = gr.Markdown()
    table = gr.Dataframe(headers=["coefficient", "continuation", "mean probability of its tokens"],
                         interactive=False, wrap=True)
    ex = gr.Examples([["I think dogs are", "I love you | I hate you", 6, 4],
                      ["The weather today is", "I feel great | I feel awful\nWhat a treat | What a shame", 10, 6]],
                     [text, pairs, layer, coefficient])
    code_panel(contrast_direction, steered)
    inputs, outputs = [page.model, text, pairs, layer, coefficient], [shift, swept, note, layer]
    page.on([text.submit, pairs.submit, layer.release, coefficient.release, ex.load_input_event], update, inputs,
            outputs, api="steering")
    Jobs(page, cancel, "generate").on(start, continuations, [page.model, text, pairs, layer, coefficients, n_new],
                                      [table, status], "steering_generate", note=status)
    return View(links=dict(text=text, pairs=pairs, layer=layer, c=coefficient, coefficients=coefficients, n=n_new),
                draws=[page.event(update, inputs, outputs)])
