"""Data parallelism tab: two processes train one model on halves of each batch, and ZeRO's memory per GPU."""
from __future__ import annotations

import html
import statistics
import time

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from core.device import torch_threads
from core.inputs import InputError, number
from core.learning import parallel as dp
from core.learning.training import Recipe
from explainers.draw.figures import SAFE_COLOURS, figure, grid, on, placeholder
from explainers.draw.widgets import code_panel
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View
from explainers.tabs.training import LIMITS, TRAIN_THREADS, app_recipe

TITLE = "Data parallelism"
INTRO = r"""### Two processes, one model
A model too slow to train on one GPU is trained on many, each with its own copy of the weights: **data
parallelism**. Here two worker processes (two *ranks*, `torch.distributed` on the CPU) train a fresh TinyGPT
together. Every step each rank takes **one half of the batch**, computes the loss and the gradient on its half, and
then the ranks **all-reduce** the gradient: they sum it and divide by 2, so both hold the mean. Both then take the
same AdamW step, and their weights stay identical. The mean of the two halves' gradients is the whole batch's
gradient, so two ranks on halves end where **one process on the whole batch** would: the check after the run
replays it on one process and compares every weight. The all-reduce is the price: each step the whole gradient
crosses between the ranks. It is written out here, one `dist.all_reduce` on every gradient laid end to end in one
vector (gloo runs it as a ring); PyTorch's `DistributedDataParallel` does the same in buckets, overlapped with the
backward pass."""
WORLD = 2                 # ranks
DEFAULTS = {"steps": 100, "batch": 32, "width": 64, "layers": 2, "learning rate": 2e-3}  # 5e-3 spikes this early
MOST_STEPS = 500          # the run and its one-process check fit the train group's cap at the default size
REFRESH_SECONDS = 1.0   # the figures redraw this often while the ranks train
PARTS = [("compute", "forward + backward", SAFE_COLOURS[0]), ("comm", "all-reduce", SAFE_COLOURS[1]),
         ("update", "clip + AdamW", SAFE_COLOURS[2])]
GB = 1e9


def settings(steps, batch, width, layers, lr) -> Recipe:
    """The Training tab's TinyGPT recipe at this size, its batch split evenly over the ranks."""
    number("number of steps", steps, LIMITS["steps"][0], MOST_STEPS)
    recipe = app_recipe("tiny-gpt-char", width, layers, steps, lr, number("batch", batch, WORLD, LIMITS["batch"][1]))
    if recipe.batch % WORLD:
        raise InputError(f"The batch must split evenly over the {WORLD} ranks: {recipe.batch} windows do not; "
                         f"try {recipe.batch + 1}.")
    return recipe


def median_ms(report: dp.Report, rank: int, part: str) -> float:
    return 1000 * statistics.median(getattr(step[rank], part) for step in report.steps)


def run_figure(report: dp.Report, steps: int) -> go.Figure:
    """Each rank's loss on its half per step with their mean (the joint batch's loss), and each rank's median step
    split into compute, all-reduce and update."""
    layout = grid(2, titles=["loss per step (nats per token)", "median time per step (ms)"], gap=(0.1, 0),
                  widths=[1.6, 1])
    layout["xaxis"].update(title=dict(text="step"), range=[0, steps])
    x = [s[0].step for s in report.steps]
    traces = [dict(type="scatter", x=x, y=[s[r].loss for s in report.steps], mode="lines", name=f"rank {r}: its half",
                   line=dict(width=2, color=SAFE_COLOURS[4 + r]), legendgroup="loss", **on(0))
              for r in range(report.world)]
    traces.append(dict(type="scatter", x=x, y=[float(np.mean([s[r].loss for r in range(report.world)]))
                                               for s in report.steps], mode="lines", name="mean: the joint batch",
                       line=dict(width=2, color="#374151", dash="dot"), legendgroup="loss", **on(0)))
    ranks = [f"rank {r}" for r in range(report.world)]
    for part, label, colour in PARTS:
        ms = [median_ms(report, r, part) for r in range(report.world)]
        traces.append(dict(type="bar", orientation="h", x=ms, y=ranks, name=label, marker=dict(color=colour),
                           text=[f"{v:.1f}" for v in ms], textposition="inside", legendgroup="time",
                           hovertemplate="%{y}: %{x:.1f} ms<extra>" + label + "</extra>", **on(1)))
    layout["yaxis2"].update(autorange="reversed", type="category")
    return figure(traces, **layout, barmode="stack", height=360, margin=dict(t=40),
                  legend=dict(orientation="h", y=-0.2, traceorder="normal"))


def batch_html(report: dp.Report) -> str:
    """The last step's joint batch, window by window, each in its rank's colour: which windows each rank got."""
    last = report.steps[-1]
    b = len(last[0].windows)
    columns = "".join(
        f"<div style='flex:1;min-width:0'><b style='color:{SAFE_COLOURS[4 + r]}'>rank {r}: windows {r * b} to "
        f"{(r + 1) * b - 1}</b>" + "".join(
            f"<div style='font-family:monospace;white-space:pre;overflow:hidden;border-left:4px solid "
            f"{SAFE_COLOURS[4 + r]};padding-left:6px;margin:1px 0'>{r * b + i:>2} "
            f"{html.escape(w.replace(chr(10), '↵'))}…</div>" for i, w in enumerate(last[r].windows)) + "</div>"
        for r in range(report.world))
    return (f"<div><b>Step {last[0].step}'s batch</b>: {b * report.world} random windows of the corpus (the start of "
            f"each shown), drawn alike on every rank from the same seed; each rank trains on its own half."
            f"<div style='display:flex;gap:16px;margin-top:6px'>{columns}</div></div>")


def bytes_line(report: dp.Report) -> str:
    sent = dp.ring_bytes(report.payload, report.world)
    return (f"All-reduce per step: the gradient, {report.params:,} numbers × 4 bytes (fp32) = **{report.payload:,} "
            f"bytes**; in a ring of N = {report.world} each rank sends 2(N − 1)/N × that = **{sent:,.0f} bytes** and "
            "receives as much.")


def status(report: dp.Report, recipe: Recipe, seconds: float, end: str = "") -> str:
    """The run so far: the ranks, the last step's loss and `seconds` of training, the median step's split and the
    bytes each all-reduce moves; then `end`."""
    cfg, pids = recipe.config, ", ".join(str(report.pids[r]) for r in sorted(report.pids))
    head = (f"**{report.world} ranks** (processes {pids}), each a TinyGPT of width "
            f"{cfg.d_model}, {cfg.n_layers} layer{'s' * (cfg.n_layers > 1)}, {report.params:,} parameters; batches "
            f"of {recipe.batch} windows × {cfg.n_ctx} tokens, {recipe.batch // report.world} per rank.")
    if not report.steps:
        return f"{head}\n\n{bytes_line(report)}\n\n{end or 'Ready: the ranks hold the same weights.'}"
    s = report.steps[-1]
    split = " · ".join(f"rank {r}: compute {median_ms(report, r, 'compute'):.1f} ms, all-reduce "
                       f"{median_ms(report, r, 'comm'):.1f} ms, update {median_ms(report, r, 'update'):.1f} ms"
                       for r in range(report.world))
    line = (f"Step **{s[0].step}** of {recipe.steps} · loss (mean of the ranks) **{np.mean([x.loss for x in s]):.2f}**"
            f" · {seconds:.0f} s\n\nMedian step: {split} (an all-reduce waits for the slower rank).")
    return f"{head}\n\n{line}\n\n{bytes_line(report)}" + (f"\n\n{end}" if end else "")


def check_line(report: dp.Report, start: np.ndarray, single: np.ndarray) -> str:
    """How far the ranks' weights are from one process's on the joint batch, beside how far the run moved them."""
    diff = float(np.abs(report.weights[0] - single).max())
    moved = float(np.abs(single - start).max())
    ranks = max(float(np.abs(report.weights[r] - report.weights[0]).max()) for r in report.weights)
    return (f"**The check**: one process replayed the {len(report.steps)} steps on the joint batch with the same "
            f"optimiser. max |w_ranks − w_one process| = **{diff:.1e}** over {single.size:,} weights, which the run "
            f"moved by up to {moved:.2f}; the ranks' own weights differ by {ranks:g}. The difference is rounding: "
            "the halves' gradients are summed in another order than the whole batch's, and AdamW's steps, about "
            "the learning rate times the sign of each gradient, make a last-bit difference in a gradient near zero "
            "a small difference of weight (in double precision it all but vanishes).")


def train_live(steps, batch, width, layers, lr, job: Job):
    """Two ranks train a fresh TinyGPT on halves of each batch, streaming each rank's loss, batch and timings; then
    one process replays the run on the joint batch and the weights are compared."""
    recipe = settings(steps, batch, width, layers, lr)
    if job.stop.is_set():
        yield "Cancelled before the run started.", gr.skip(), gr.skip()
        return
    started, drawn = time.monotonic(), 0.0
    ready = started  # when the ranks were ready: the training's time counts from there
    yield (f"Starting {WORLD} worker processes: each imports PyTorch and builds the model (a few seconds)…",
           placeholder("The ranks are starting…", 360), "")
    report = None
    try:
        for report in dp.train_parallel(recipe, WORLD, should_stop=job.should_stop):
            if not report.steps:
                ready = time.monotonic()
            elif time.monotonic() - drawn < REFRESH_SECONDS:
                continue
            drawn = time.monotonic()
            yield (status(report, recipe, drawn - ready), run_figure(report, recipe.steps) if report.steps else gr.skip(),
                   batch_html(report) if report.steps else gr.skip())
    except dp.WorkerError as e:
        some = report is not None and report.steps
        yield (str(e), run_figure(report, recipe.steps) if some else gr.skip(),
               batch_html(report) if some else gr.skip())
        return
    done, seconds = len(report.steps), time.monotonic() - ready
    end = job.why(f"after {done} steps") or (f"**Finished** {done} steps in {seconds:.0f} s, after {ready - started:.0f} "
                                             "s starting the processes.")
    figures = (run_figure(report, recipe.steps), batch_html(report)) if done else (gr.skip(), gr.skip())
    if not done or job.should_stop():
        yield status(report, recipe, seconds, end), *figures
        return
    yield status(report, recipe, seconds, f"{end} Checking: one process replays the run on the joint batch…"), *figures
    with torch_threads(TRAIN_THREADS):
        weights = dp.replay(recipe, done, should_stop=job.should_stop)
    check = check_line(report, *weights) if weights else job.why("before one process could replay the run") + \
        " The check was skipped."
    yield status(report, recipe, seconds, f"{end}\n\n{check}"), *figures


# The memory calculator

def gigabytes(n: float) -> str:
    return f"{n / GB:,.1f} GB" if n >= GB else f"{n / 1e6:,.0f} MB"


def memory_inputs(params_b, gpus, precision, gpu_gb) -> tuple[float, int, dp.Precision, float]:
    if precision not in dp.PRECISIONS:
        raise InputError(f"Choose a precision: {', '.join(dp.PRECISIONS)}.")
    return (number("parameters (billions)", params_b, 0.001, 100_000, whole=False) * 1e9,
            number("number of GPUs", gpus, 1, 100_000), dp.PRECISIONS[precision],
            number("GPU memory (GB)", gpu_gb, 1, 10_000, whole=False))


def memory_table(memory: dict, params: float, gpus: int, p: dp.Precision, gpu_gb: float) -> str:
    rows = [f"| | parameters | gradients | optimizer state | **per GPU** | fits in one GPU's {gpu_gb:g} GB? |",
            "|---|---:|---:|---:|---:|---|"]
    shards = {"DP": "plain data parallelism: every GPU holds all", "ZeRO-1": "optimizer state sharded",
              "ZeRO-2": "+ gradients sharded", "ZeRO-3": "+ parameters sharded"}
    for stage, parts in memory.items():
        total = sum(parts)
        rows.append(f"| **{stage}** ({shards[stage]}) | " + " | ".join(gigabytes(b) for b in parts) +
                    f" | **{gigabytes(total)}** | {'yes' if total <= gpu_gb * GB else 'no'} |")
    k = p.optimizer
    return "\n".join(rows) + (
        f"\n\nΨ = {params:,.0f} parameters, N = {gpus:,} GPUs, {p.params} + {p.grads} + {k} bytes per parameter: DP "
        f"({p.params} + {p.grads} + {k})Ψ; ZeRO-1 ({p.params} + {p.grads})Ψ + {k}Ψ/N; ZeRO-2 {p.params}Ψ + "
        f"({p.grads} + {k})Ψ/N; ZeRO-3 ({p.params} + {p.grads} + {k})Ψ/N. GB = 10⁹ bytes. **Activations are left "
        "out** (and temporary buffers): they grow with the batch and the sequence length and come on top of every "
        "row. Communication per step (the paper's section 7): plain data parallelism and ZeRO-1 and -2 each move 2Ψ "
        "numbers per GPU (a reduce-scatter of the gradients and an all-gather of the parameters); ZeRO-3 gathers "
        "each layer's parameters for the forward and again for the backward, 3Ψ.")


def memory_figure(memory: dict, gpu_gb: float, gpus: int) -> go.Figure:
    """Per-GPU memory per stage, stacked: parameters, gradients, optimizer state; the GPU's memory as a line."""
    stages = list(memory)
    traces = [dict(type="bar", x=stages, y=[memory[s][i] / GB for s in stages], name=name, marker=dict(color=colour),
                   hovertemplate="%{x}: %{y:.2f} GB<extra>" + name + "</extra>")
              for i, (name, colour) in enumerate([("parameters", SAFE_COLOURS[0]), ("gradients", SAFE_COLOURS[1]),
                                                  ("optimizer state", SAFE_COLOURS[2])])]
    totals = [sum(memory[s]) / GB for s in stages]
    traces.append(dict(type="scatter", x=stages, y=totals, mode="text", text=[gigabytes(t * GB) for t in totals],
                       textposition="top center", showlegend=False, hoverinfo="skip"))
    shapes, notes = [], []
    if gpu_gb <= 1.3 * max(totals):
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=gpu_gb, y1=gpu_gb,
                           line=dict(color="#dc2626", dash="dash")))
        notes.append(dict(text=f"one GPU: {gpu_gb:g} GB", xref="paper", x=1, y=gpu_gb, xanchor="right",
                          yanchor="bottom", showarrow=False, font=dict(color="#dc2626")))
    top = max(max(totals), gpu_gb if shapes else 0) * 1.18
    return figure(traces, barmode="stack", height=380, shapes=shapes, annotations=notes, margin=dict(t=50),
                  title=dict(text=f"Memory per GPU on {gpus:,} GPU{'s' * (gpus > 1)} (activations left out)"),
                  yaxis=dict(title=dict(text="GB per GPU"), range=[0, top]),
                  legend=dict(orientation="h", y=-0.15, traceorder="normal"))


def memory(params_b, gpus, precision, gpu_gb):
    """The per-GPU memory of plain data parallelism and ZeRO stages 1 to 3, as a table and a figure."""
    params, gpus, p, gpu_gb = memory_inputs(params_b, gpus, precision, gpu_gb)
    table = dp.zero_memory(params, gpus, p)
    return memory_table(table, params, gpus, p, gpu_gb), memory_figure(table, gpu_gb, gpus)


MEMORY_INTRO = r"""### Memory per GPU: what ZeRO shards
Plain data parallelism keeps a full copy of everything on every GPU. Training with Adam in mixed precision holds 16
bytes per parameter: the fp16 (or bf16) weights (2) and gradients (2), and Adam's fp32 state (12: a master copy
of the weights, the momentum and the variance). **ZeRO** (Rajbhandari et al. 2020, *ZeRO: Memory Optimizations
Toward Training Trillion Parameter Models*, [arXiv:1910.02054](https://arxiv.org/abs/1910.02054); DeepSpeed's
memory optimizer) keeps only 1/N of a part on each of N GPUs: stage 1 the optimizer state, stage 2 the gradients
too, stage 3 the parameters too. The paper's example: 7.5B parameters on 64 GPUs need 120 GB per GPU with plain
data parallelism, 1.9 GB with ZeRO-3."""


def build(page) -> View:
    gr.Markdown(INTRO)
    with gr.Row():
        steps = gr.Slider(LIMITS["steps"][0], MOST_STEPS, value=DEFAULTS["steps"], step=10, label="Steps")
        batch = gr.Slider(WORLD, LIMITS["batch"][1], value=DEFAULTS["batch"], step=WORLD,
                          label=f"Batch (windows, split over {WORLD} ranks)")
        width = gr.Slider(*LIMITS["width"], value=DEFAULTS["width"], step=16, label="Width C")
        layers = gr.Slider(*LIMITS["layers"], value=DEFAULTS["layers"], step=1, label="Layers")
        lr = gr.Number(DEFAULTS["learning rate"], label=f"Peak learning rate ({LIMITS['learning rate'][0]:g} to "
                       f"{LIMITS['learning rate'][1]:g})")
    with gr.Row():
        start = gr.Button(f"Train on {WORLD} processes", variant="primary")
        stop = gr.Button("Cancel")
    summary = gr.Markdown()
    run_plot = gr.Plot(placeholder(f"Press <b>Train on {WORLD} processes</b>: each rank's loss on its half of the "
                                   "batch draws here,<br>with the time of its steps split into compute and "
                                   "all-reduce.", 300), label="Ranks")
    batch_view = gr.HTML()
    gr.Markdown(MEMORY_INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            params_b = gr.Number(7.5, label="Parameters (billions)")
            gpus = gr.Number(64, label="GPUs (N)", precision=0)
            precision = gr.Radio([(p.label, key) for key, p in dp.PRECISIONS.items()], value="mixed",
                                 label="Precision and optimizer")
            gpu_gb = gr.Number(80, label="Memory of one GPU (GB)")
            ex = gr.Examples([[7.5, 64, "mixed"], [0.1345, 1, "mixed"], [0.1345, 8, "mixed"], [70, 8, "mixed"],
                              [7.5, 64, "fp32"]], [params_b, gpus, precision],
                             example_labels=["7.5B on 64 GPUs (the paper's)", "SmolLM2-135M on 1 GPU",
                                             "SmolLM2-135M on 8 GPUs", "70B on 8 GPUs", "7.5B on 64 GPUs, fp32"])
        with gr.Column(scale=2):
            memory_plot = gr.Plot(label="Memory per GPU")
    memory_view = gr.Markdown()
    code_panel(dp.worker, dp.all_reduce_mean, dp.share, dp.ring_bytes, dp.replay, dp.zero_memory)
    Jobs(page, stop, "train").on(start, train_live, [steps, batch, width, layers, lr], [summary, run_plot, batch_view],
                                 "data_parallel", note=summary)
    inputs, outputs = [params_b, gpus, precision, gpu_gb], [memory_view, memory_plot]
    page.on([params_b.submit, gpus.submit, gpu_gb.submit, precision.input, ex.load_input_event], memory, inputs,
            outputs, api="zero_memory")
    return View(links=dict(steps=steps, batch=batch, width=width, layers=layers, lr=lr, params=params_b, gpus=gpus,
                           precision=precision, gpu_memory=gpu_gb),
                draws=[page.event(memory, inputs, outputs)])
