"""Fine-tuning tab: adapt a trained model to a new corpus, every weight (full) against LoRA, side by side, live."""
from __future__ import annotations

import collections
import time

import gradio as gr
import plotly.graph_objects as go
import torch

from core.inputs import InputError, number, text_to_tokens
from core.learning import finetune as ft
from core.weights.zoo import available
from explainers.draw.figures import figure, grid, on, placeholder, scale, top_tokens
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View

TITLE = "Fine-tuning"
INTRO = r"""### Teach a trained model a new kind of text
The tiny models learnt from Shakespeare. Fine-tune one on another text, two ways at once and on the same
batches: **full fine-tuning** updates every weight; **LoRA** freezes them and learns, for each chosen matrix W
(d_out × d_in), a low-rank change that is added to it:

$$W' = W + \frac{\alpha}{r} B A \qquad A: r \times d_\text{in}, \quad B: d_\text{out} \times r, \quad
B = 0 \text{ at the start}$$

It trains r × (d_in + d_out) numbers per matrix instead of d_in × d_out, and AdamW keeps two more numbers for
every number trained. The last tenth of the text is held out: its loss says what the model learnt rather than
memorised. The adapter comes from the `peft` library, BLEU and ROUGE from `sacrebleu` and `rouge-score`. This tab
picks its own model (tiny-gpt-char by default); SmolLM2 gets a short LoRA run only."""

MODELS = ["tiny-gpt-char", "tiny-moe", "smollm2-135m"]
PASTE = "My own text (paste it below)"
REFRESH_SECONDS = 0.5    # how often the page is redrawn while training
FULL_LIMIT = 10_000_000  # larger models get LoRA only: full fine-tuning's optimiser state would not fit a shared server
# (steps, batch, tokens per window): the defaults, then the most allowed; SmolLM2 is a bounded LoRA run
DEFAULTS = {"small": (60, 16, 128), "smollm2-135m": (30, 4, 64)}
MAXIMA = {"small": (1000, 64, 128), "smollm2-135m": (60, 8, 128)}
COLOURS = {"before": "#6b7280", "full": "#2563eb", "LoRA": "#f97316"}
SAMPLE_TOKENS = 100      # tokens each model writes after the prompt (40 for SmolLM2)
KEPT = 2                 # finished runs of small models kept, by their settings
_kept: collections.OrderedDict = collections.OrderedDict()
CROP = 128               # rows and columns of dW drawn (a crop of a rank-r matrix has rank r at most)


def settings(model, steps, batch, seq_len, lr_full, lr_lora, rank, alpha, dropout, targets):
    """The run's settings from the widgets, each checked against the model's bounds."""
    most_steps, most_batch, most_T = MAXIMA.get(model.name, MAXIMA["small"])
    C = model.cfg.d_model
    run = ft.RunSettings(steps=number("number of steps", steps, 1, most_steps),
                      batch=number("batch size", batch, 1, most_batch),
                      seq_len=number("window length", seq_len, 8, most_T),
                      lr_full=number("learning rate (full)", lr_full, 1e-6, 0.1, whole=False),
                      lr_lora=number("learning rate (LoRA)", lr_lora, 1e-6, 0.1, whole=False))
    chosen = tuple(t for t in ft.LINEAR_NAMES if isinstance(targets, (list, tuple)) and t in targets)
    if not chosen:
        raise InputError(f"Tick at least one matrix for LoRA to adapt: {', '.join(ft.LINEAR_NAMES)}.")
    lora = ft.LoraSettings(rank=number("rank r", rank, 1, min(64, C)), alpha=number("alpha", alpha, 1, 512, whole=False),
                           dropout=number("dropout", dropout, 0, 0.9, whole=False), targets=chosen)
    return run, lora


def curves_figure(c: ft.Comparison) -> go.Figure:
    """Loss against step for each method (faint: each training batch; bold: held-out), and seconds per step."""
    layout = grid(2, titles=["loss (nats per token)", "seconds per step"], gap=(0.08, 0), widths=[2, 1],
                  x=dict(title=dict(text="step")))
    traces = []
    start = c.sides["before"].heldout[0][1]
    traces.append(dict(type="scatter", x=[0, max(c.step, 1)], y=[start, start], mode="lines", name="before (held-out)",
                       line=dict(color=COLOURS["before"], dash="dash"), **on(0)))
    for side in c.sides.values():
        if not side.trainable:
            continue
        steps, colour = list(range(1, len(side.losses) + 1)), COLOURS[side.name]
        traces += [dict(type="scatter", x=steps, y=side.losses, mode="lines", name=f"{side.name}: training batch",
                        line=dict(color=colour, width=1), opacity=0.45, legendgroup=side.name, **on(0)),
                   dict(type="scatter", x=[s for s, _ in side.heldout], y=[v for _, v in side.heldout],
                        mode="lines+markers", name=f"{side.name}: held-out", line=dict(color=colour, width=3),
                        legendgroup=side.name, **on(0)),
                   dict(type="scatter", x=steps, y=side.step_seconds, mode="lines", name=side.name, showlegend=False,
                        line=dict(color=colour), legendgroup=side.name, **on(1))]
    layout["yaxis2"]["rangemode"] = "tozero"
    if c.step == 0:  # nothing timed yet: fixed ranges (an empty plot's axis line, drawn in lecture style, has none)
        layout["xaxis2"]["range"], layout["yaxis2"]["range"] = [0, 1], [0, 1]
    return figure(traces, **layout, height=380, margin=dict(t=40),
                  legend=dict(orientation="h", y=-0.25))


def probs_figure(c: ft.Comparison, tokenizer, prompt: str) -> go.Figure:
    """The ten likeliest next tokens after the prompt, for each model."""
    sides = [s for s in c.sides.values() if s.probs is not None]
    rows = [top_tokens(s.probs, tokenizer) for s in sides]
    top = max(r[0][1] for r in rows)
    layout = grid(len(sides), titles=[s.name for s in sides], gap=(0.12, 0),
                  y=dict(autorange="reversed", type="category"), x=dict(tickformat=".0%", range=[0, top * 1.35]))
    bars = [dict(type="bar", x=[p for _, p, _ in r], y=[t for t, _, _ in r], orientation="h", showlegend=False,
                 text=[f"{p:.1%}" for _, p, _ in r], textposition="outside", cliponaxis=False,
                 marker=dict(color=COLOURS[s.name]), **on(i)) for i, (s, r) in enumerate(zip(sides, rows))]
    return figure(bars, **layout, title=dict(text=f"Next token after {prompt[-40:]!r}"), height=360,
                  margin=dict(t=80))


def delta_figure(c: ft.Comparison) -> go.Figure:
    """LoRA's dW for one matrix as a heatmap, and its singular values beside full fine-tuning's change of the same
    matrix: LoRA's drop to nothing after the r-th, full fine-tuning's do not."""
    d = c.lora_delta
    crop = d[:CROP, :CROP]
    shown = "" if crop.shape == d.shape else f" (rows and columns 0-{CROP - 1} of {d.shape[0]} × {d.shape[1]})"
    svals = {"LoRA dW": torch.linalg.svdvals(d)}
    if c.full_delta is not None:
        svals["full fine-tuning's change"] = torch.linalg.svdvals(c.full_delta)
    k = min(d.shape)
    n = min(k, 48)
    layout = grid(2, titles=[f"dW = (alpha/r) B A, {c.matrix}", "singular values"], gap=(0.2, 0), widths=[1, 1.2])
    layout["xaxis"]["title"] = dict(text=f"input column{shown}")
    layout["yaxis"].update(autorange="reversed", title=dict(text="output row"))
    layout["yaxis2"].update(type="log", exponentformat="power")
    layout["xaxis2"].update(title=dict(text="index (from the largest)"))
    limit = float(crop.abs().max()) or 1.0
    traces = [dict(type="heatmap", z=crop.numpy(), colorscale=scale("RdBu"), zmin=-limit, zmax=limit,
                   colorbar=dict(x=0.38, len=0.9), hovertemplate="row %{y}, column %{x}: %{z:.2e}<extra></extra>",
                   **on(0))]
    for name, s in svals.items():
        colour = COLOURS["LoRA" if name.startswith("LoRA") else "full"]
        traces.append(dict(type="scatter", x=list(range(1, n + 1)), y=s[:n].clamp_min(1e-12).numpy(),
                           mode="lines+markers", name=name, line=dict(color=colour), **on(1)))
    return figure(traces, **layout, height=400,
                  legend=dict(orientation="h", y=-0.2, x=0.55))


def size(n: float) -> str:
    for unit in ["bytes", "KB", "MB", "GB"]:
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024


def cost_markdown(c: ft.Comparison, lora: ft.LoraSettings, shapes_count: int | None) -> str:
    """Trainable parameters, their share, seconds per step, optimiser memory and held-out loss, a row per method."""
    # Two measurements, each named: the curve's (a sample of ft.EVAL_WINDOWS held-out windows, at every step) and,
    # once the run ends, the cross-entropy on up to ft.FINAL_WINDOWS windows that the metrics table uses
    rows = ["| method | trainable parameters | share of the model | seconds per step (median) | optimiser state "
            f"(AdamW) | held-out loss on the curve's {ft.EVAL_WINDOWS} windows, before → now | cross-entropy on "
            f"up to {ft.FINAL_WINDOWS} held-out windows, before → after |", "|---|---:|---:|---:|---:|---|---|"]
    before = c.sides["before"]
    for side in c.sides.values():
        if not side.trainable:
            continue
        seconds = sorted(side.step_seconds)[len(side.step_seconds) // 2] if side.step_seconds else float("nan")
        label = "full" if side.name == "full" else f"LoRA r={lora.rank}, alpha={lora.alpha:g} on " + \
            ", ".join(lora.targets)
        final = (f"{before.scores['cross-entropy']:.3f} → {side.scores['cross-entropy']:.3f}"
                 if "cross-entropy" in side.scores and "cross-entropy" in before.scores else "when the run ends")
        rows.append(f"| {label} | {side.trainable:,} | {side.trainable / c.total:.2%} | {seconds:.3f} | "
                    f"{size(side.state_bytes)} | {before.heldout[0][1]:.3f} → {side.heldout[-1][1]:.3f} | {final} |")
    if "full" not in c.sides:
        rows.append(f"| full | {c.total:,} | 100% | not run here | would be {size(8 * c.total)} | | |")
    check = f"\n\nLoRA's count from the shapes, r (d_in + d_out) summed over the adapted matrices: " \
        f"**{shapes_count:,}**." if shapes_count is not None else ""
    return "\n".join(rows) + check


METRIC_COLUMNS = ["perplexity", "bleu", "1-gram", "2-gram", "3-gram", "4-gram", "rouge1", "rouge2", "rougeL",
                  "rougeLsum", "time (s)"]


def metrics_markdown(c: ft.Comparison) -> str:
    """The tutorials' table: perplexity, BLEU and its n-gram precisions, ROUGE F1, training time."""
    done = [s for s in c.sides.values() if s.scores]
    head = "| model | PPL | BLEU | 1-grams | 2-grams | 3-grams | 4-grams | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum " \
        "| time (s) |\n|---|" + "---:|" * len(METRIC_COLUMNS) + "\n"
    cell = lambda side, k: "" if k == "time (s)" and not side.trainable else \
        f"{side.scores[k]:.1f}" if k == "time (s)" else f"{side.scores[k]:.4f}"
    return head + "\n".join(f"| {s.name} | " + " | ".join(cell(s, k) for k in METRIC_COLUMNS) + " |" for s in done)


def samples_markdown(c: ft.Comparison, prompt: str) -> str:
    return "\n\n".join(f"**{s.name}**\n```\n{prompt}{s.sample}\n```" for s in c.sides.values() if s.sample)


def prepare(model_name, corpus, pasted, prompt_text):
    """The model, the corpus text and the prompt's ids, each checked."""
    if model_name not in MODELS:
        raise InputError(f"Fine-tune one of: {', '.join(MODELS)}.")
    model = get_model(model_name)
    text = ft.check_corpus(pasted) if corpus == PASTE else ft.read_corpus(corpus)
    if not str(prompt_text or "").strip():
        prompt_text = text[int(len(text) * 0.9):][:40]  # the start of the held-out part
    tokens, notice = text_to_tokens(model, prompt_text, limit=model.cfg.n_ctx // 2, keep="last")
    return model, text, [t.id for t in tokens], "".join(model.tokenizer.decode([t.id]) for t in tokens), notice


def run(model_name: str, corpus: str, pasted: str, prompt_text: str, steps, batch, seq_len, lr_full, lr_lora,
        rank, alpha, dropout, targets, job: Job, progress=gr.Progress()):
    """A generator: fine-tunes both ways, redrawing the curves every REFRESH_SECONDS, then the measurements.
    Cancel stops it within one step; the time cap ends the training and the measurements still run. A finished
    run of a small model is kept: the same settings again (another prompt, say) answer from it at once."""
    model, text, prompt_ids, prompt, notice = prepare(model_name, corpus, pasted, prompt_text)
    run_settings, lora = settings(model, steps, batch, seq_len, lr_full, lr_lora, rank, alpha, dropout, targets)
    small = sum(p.numel() for p in model.parameters()) < FULL_LIMIT
    if not small:
        notice = join_notes(notice, f"{model_name} is fine-tuned with LoRA only here: full fine-tuning would keep "
                                    "optimiser state for every weight (see the table).")
    shapes = lora.rank * ft.lora_parameters(model, lora.targets)
    key = (model_name, text, run_settings, lora)
    if key in _kept:
        c = _kept[key]
        ft.on_prompt(c, prompt_ids, SAMPLE_TOKENS)
        yield results(c, lora, shapes, model.tokenizer, prompt, join_notes("The same run as before, kept: "
                                                                           "only the prompt's figures are new.", notice))
        return
    last, first = 0.0, True
    for c in ft.compare(model, text, prompt_ids, run_settings, lora, ("full", "LoRA") if small else ("LoRA",),
                        should_stop=job.should_stop, sample_tokens=SAMPLE_TOKENS if small else 40):
        if job.stop.is_set():
            yield (f"**Cancelled** at step {c.step} of {run_settings.steps}. Change the settings and run again.",
                   curves_figure(c), cost_markdown(c, lora, shapes)) + (gr.skip(),) * 5
            return
        if c.phase.startswith("step") and time.perf_counter() - last < REFRESH_SECONDS and c.step < run_settings.steps:
            continue
        last = time.perf_counter()
        progress(c.step / run_settings.steps, desc=c.phase)
        status = join_notes(f"{c.phase[0].upper()}{c.phase[1:]}: {c.tokens[0]:,} training and {c.tokens[1]:,} "
                            f"held-out tokens, windows of {c.T}.", job.why(f"at step {c.step}") if c.stopped else "",
                            notice)
        if c.phase == "done":
            break
        rest = ("", None, "", None, "") if first else (gr.skip(),) * 5  # the first answer clears the last run's
        first = False
        yield (status, curves_figure(c), cost_markdown(c, lora, shapes)) + rest
    if small and not c.stopped:
        _kept[key] = c
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    yield results(c, lora, shapes, model.tokenizer, prompt, status)


def results(c: ft.Comparison, lora: ft.LoraSettings, shapes: int, tokenizer, prompt: str, status: str) -> tuple:
    """Every output of a finished run."""
    merged = "" if c.merge_diff is None else "Merged the adapter into its matrices (W + dW): the largest " \
        f"difference between the merged model's logits and the adapter's, over a held-out window, is " \
        f"**{c.merge_diff:.1e}**."
    return (status, curves_figure(c), cost_markdown(c, lora, shapes), metrics_markdown(c),
            probs_figure(c, tokenizer, prompt), samples_markdown(c, prompt),
            delta_figure(c) if c.lora_delta is not None else None, merged)


def corpus_prompt(corpus: str):
    """A prompt in the chosen corpus's own style; a pasted text keeps the prompt box as it is."""
    return ft.CORPORA[corpus][1] if corpus in ft.CORPORA else gr.skip()


def model_defaults(model_name: str):
    """Steps, batch and window sliders set to the model's default run and bounded by its limits."""
    key = model_name if model_name in DEFAULTS else "small"
    return tuple(gr.Slider(value=value, maximum=most) for value, most in zip(DEFAULTS[key], MAXIMA[key]))


def build(page) -> View:
    gr.Markdown(INTRO)
    models = [name for name, problem in available().items() if name in MODELS and problem is None]
    first = next(iter(ft.CORPORA))
    with gr.Row():
        model = gr.Radio(models, value=models[0] if models else None, label="Model to fine-tune")
        corpus = gr.Radio([*ft.CORPORA, PASTE], value=first, label="Corpus")
    pasted = gr.Textbox(label=f"Your text ({ft.MIN_CHARS:,} to {ft.MAX_CHARS:,} characters; used when “{PASTE}” is chosen)",
                        lines=3, max_lines=8)
    prompt = gr.Textbox(label="Prompt for the samples and next-token probabilities", value=ft.CORPORA[first][1])
    steps_default, batch_default, window_default = DEFAULTS["small"]
    with gr.Accordion("Settings", open=False):
        with gr.Row():
            steps = gr.Slider(1, MAXIMA["small"][0], value=steps_default, step=1, label="Steps")
            batch = gr.Slider(1, MAXIMA["small"][1], value=batch_default, step=1, label="Batch size")
            seq_len = gr.Slider(8, MAXIMA["small"][2], value=window_default, step=8, label="Window length (tokens)")
            lr_full = gr.Number(ft.RunSettings.lr_full, label="Learning rate, full")
            lr_lora = gr.Number(ft.RunSettings.lr_lora, label="Learning rate, LoRA")
        with gr.Row():
            rank = gr.Slider(1, 64, value=ft.LoraSettings.rank, step=1, label="LoRA rank r")
            alpha = gr.Slider(1, 128, value=ft.LoraSettings.alpha, step=1, label="LoRA alpha")
            dropout = gr.Slider(0, 0.5, value=ft.LoraSettings.dropout, step=0.01, label="LoRA dropout")
            targets = gr.CheckboxGroup(list(ft.LINEAR_NAMES), value=list(ft.LoraSettings.targets),
                                       label="Matrices LoRA adapts")
    with gr.Row():
        start = gr.Button("Fine-tune both ways", variant="primary")
        stop = gr.Button("Cancel")
    status = gr.Markdown()
    curves = gr.Plot(placeholder("Press <b>Fine-tune both ways</b>: the loss of full fine-tuning and of LoRA draw "
                                 "here, step by step,<br>with the seconds each step takes.", 260))
    cost = gr.Markdown()
    metrics = gr.Markdown()
    probs = gr.Plot(placeholder("After the run: the next token after the prompt,<br>before and after each way of "
                                "fine-tuning.", 260))
    samples = gr.Markdown()
    delta = gr.Plot(placeholder("After the run: the update LoRA learned for one matrix, dW = (alpha/r) B A,<br>"
                                "and its singular values (at most r of them are not zero).", 260))
    merged = gr.Markdown()
    code_panel(ft.compare, ft.Side.step, ft.add_lora, ft.delta_w, ft.merge, ft.text_scores)
    inputs = [model, corpus, pasted, prompt, steps, batch, seq_len, lr_full, lr_lora, rank, alpha, dropout, targets]
    Jobs(page, stop, "train").on(start, run, inputs, [status, curves, cost, metrics, probs, samples, delta, merged],
                                 "finetune", note=status)
    corpus.change(corpus_prompt, corpus, prompt, queue=False, api_visibility="undocumented")
    model.change(model_defaults, model, [steps, batch, seq_len], queue=False, api_visibility="undocumented")
    return View(links=dict(base=model, corpus=corpus, prompt=prompt, steps=steps, batch=batch, window=seq_len,
                           rank=rank, alpha=alpha, dropout=dropout, targets=targets))
