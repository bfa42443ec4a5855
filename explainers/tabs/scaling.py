"""Scaling laws tab: a ladder of tiny models trained live (loss against N, D and C = 6ND, a fitted power law, the
best size at a compute budget), and Chinchilla's law for real models beside it."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import gradio as gr

from core.inputs import InputError, number
from core.learning import scaling as sc
from explainers.draw.figures import placeholder
from explainers.draw.widgets import code_panel
from explainers.page.groups import GROUPS
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View
from explainers.tabs.scaling_figures import (
    loss_vs_compute_figure,
    loss_vs_params_figure,
    loss_vs_tokens_figure,
    real_models_figure,
)
from explainers.tabs.training import TRAIN_THREADS

TITLE = "Scaling laws"
INTRO = r"""### Bigger models, more data, more compute: how the loss falls
Press **Train the ladder** and five tiny character-level GPTs learn from the same Shakespeare, one after the
other: the same recipe, the same batches and the same number of tokens, only the width changing. Their held-out
loss, measured along the way, is drawn against the model's size N, the tokens D it has read, and the compute
C ≈ 6ND it has spent (about 6 FLOPs per parameter per token, forward and backward). Kaplan et al. (2020) found
such curves to be straight lines on log-log axes over many orders of magnitude, a **power law**; here one is
fitted to the final points:
$$L(N) = E + A\,N^{-\alpha}$$
N counts the **non-embedding** parameters, as Kaplan et al. do (the token and position tables are a large share of a
tiny model). The lower envelope of the compute curves is the **compute-efficient frontier**: for a budget C, it says
which size reaches the lowest loss, a small model trained long or a big one trained briefly. A curve's middle points
are read before its learning rate has decayed, so they lie above what a run planned for that many tokens would
reach; Hoffmann et al. (2022) showed that this pushed Kaplan's frontier toward bigger models. Below, the same
question for real models, with their "Chinchilla" law."""

CALCULATOR = r"""### A calculator for real models: the Chinchilla law
Hoffmann et al. (2022, *Training Compute-Optimal Large Language Models*, arXiv:2203.15556) trained over 400 models
and fitted (their Approach 3, equation 10), with N all parameters and D training tokens:
$$L(N, D) = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}, \quad E = 1.69,\ A = 406.4,\ B = 410.7,\ \alpha = 0.34,\
\ \beta = 0.28$$
At a fixed compute C = 6ND its minimum is
$$N_\text{opt} = G \left(\frac{C}{6}\right)^{\beta/(\alpha+\beta)}, \quad D_\text{opt} = \frac{C/6}{N_\text{opt}},
\quad G = \left(\frac{\alpha A}{\beta B}\right)^{1/(\alpha+\beta)}$$
Their other two approaches give about **20 tokens per parameter**, the rule of thumb; this fit's optimum lies at
more tokens per parameter, and a 2024 replication (Besiroglu et al.) argues its constants fit the paper's own data
poorly. The losses are in nats per token of *their* data and tokenizer (MassiveText, SentencePiece): they cannot be
compared with the ladder's nats per character above. Type N and D as numbers (`70e9`) or with a suffix (`70B`,
`1.4T`)."""

LIMITS = {"steps per size": (20, 2000), "learning rate": (1e-4, 3e-2), "compute budget (log10 FLOPs)": (6, 14)}
DEFAULT_BUDGET = 11.0  # log10 FLOPs: past the small sizes' whole runs, where a middle size is best
REFRESH_SECONDS = 1.0
SIZES = [str(w) for w in sc.WIDTHS]
PARAMS_RANGE, TOKENS_RANGE = (1e3, 1e15), (1e3, 1e18)
SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def ladder_settings(sizes, steps, lr) -> tuple[list[int], int, float]:
    """The chosen widths (smallest first), steps per size and learning rate, each checked."""
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, str) and s in SIZES for s in sizes):
        raise InputError(f"Choose the sizes among the widths {', '.join(SIZES)}.")
    if len(set(sizes)) < 3:
        raise InputError("Choose at least 3 sizes: a power law with an offset has 3 numbers to fit.")
    return (sorted({int(s) for s in sizes}), number("steps per size", steps, *LIMITS["steps per size"]),
            number("learning rate", lr, *LIMITS["learning rate"], whole=False))


def budget_flops(budget) -> float:
    return 10.0 ** number("compute budget (log10 FLOPs)", budget, *LIMITS["compute budget (log10 FLOPs)"], whole=False)


def quantity(name: str, value, low: float, high: float) -> float:
    """A count typed as 7e10, 70000000000, 70B or 1.4T (k, M, B, T), from low to high, or a plain message."""
    example = "70e9 or 70B" if name.startswith("parameter") else "1.4e12 or 1.4T"
    text = str(value).strip().replace(",", "").replace("_", "") if isinstance(value, (str, int, float)) else ""
    match = re.fullmatch(r"([-+]?[0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)", text.lower())
    try:
        x = float(match.group(1)) * SUFFIX[match.group(2)] if match else float("nan")
    except ValueError:
        x = float("nan")
    if x != x:
        raise InputError(f"The {name} must be a number such as {example}; got {str(value)[:40]!r}.")
    if not low <= x <= high:
        raise InputError(f"The {name} must be from {low:,.0f} to 10^{math.log10(high):.0f}; {str(value)[:40]!r} is "
                         "outside that range.")
    return x


@dataclass
class Ladder:
    """A run as the tab keeps it in the session's Job: the budget can move while it trains and after."""
    widths: list[int]
    steps: int
    budget: float
    curves: list[sc.Curve] = field(default_factory=list)
    law: sc.PowerLaw | None = None  # fitted to the finished sizes, again as each one finishes


def fitted(curves: list[sc.Curve]) -> sc.PowerLaw | None:
    done = [c for c in curves if c.done]
    if len(done) < 3:
        return None
    try:
        return sc.fit_power_law([c.params for c in done], [c.losses[-1] for c in done])
    except ValueError:  # the losses do not fall with N (a very short ladder)
        return None


def table(curves: list[sc.Curve], law: sc.PowerLaw | None) -> str:
    rows = ["| width | N (non-embedding) | with embeddings | tokens read | held-out loss | seconds |",
            "|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {c.width} | {c.params:,} | {c.total:,} | {c.tokens[-1] if c.tokens else 0:,} | "
             f"{c.losses[-1] if c.losses else float('nan'):.3f}{'' if c.done else ' (stopped)'} | {c.seconds:.1f} |"
             for c in curves]
    return "\n".join(rows) + ("" if law is None else "\n\n" + fit_sentence(law, sum(c.done for c in curves)))


def fit_sentence(law: sc.PowerLaw, points: int) -> str:
    exact = " (3 points for 3 numbers: it passes through them)" if points == 3 else ""
    floor = ("E is 0: these points show no floor yet, and a plain power law fits them best." if law.E < 0.01 else
             "E is what more width alone would not remove at this token budget: the data limit, not the entropy of "
             "Shakespeare.")
    return (f"Fit over the {points} finished sizes: **L(N) = {law.E:.3f} + {law.A:.3g} N<sup>−{law.alpha:.3f}</sup>**; "
            f"the points lie within an RMS of **{law.rms:.4f}** of it in ln L (about {law.rms:.1%} of the loss){exact}. "
            f"{floor} Kaplan et al. measured α ≈ 0.076 for N on web text, each model trained to convergence; here "
            "every size reads the same tokens, so the bigger ones are further from theirs.")


def budget_note(state: Ladder) -> str:
    best = sc.compute_optimal(state.curves, state.budget)
    spans = [c.compute for c in state.curves if c.compute]
    if best is None:
        if not spans:
            return "The ladder has not measured anything yet."
        return (f"A budget of {sup(state.budget)} FLOPs is below every size's first measurement (the cheapest: "
                f"{sup(min(s[0] for s in spans))}). Move the budget up.")
    c = state.curves[best[0]]
    spent = min(state.budget, c.compute[-1])
    note = (f"At a budget of **{sup(state.budget)} FLOPs** the best size is **width {c.width}** (N = {c.params:,}): "
            f"held-out loss {best[1]:.3f} after {spent / (6 * c.params):,.0f} tokens.")
    if spent < state.budget:
        note += (f" Its whole run cost {sup(spent)} FLOPs: the rest of the budget could have trained it longer, or a "
                 "bigger size for longer than this ladder did.")
    return note


def compute_answer(state: Ladder):
    best = sc.compute_optimal(state.curves, state.budget)
    return loss_vs_compute_figure(state.curves, state.budget, best), budget_note(state)


def status(state: Ladder, s, end: str = "", seconds: float = 0.0) -> str:
    done = sum(c.done for c in state.curves)
    head = (f"**Ladder**: widths {', '.join(map(str, state.widths))}, 2 layers each; {state.steps} steps of "
            f"{sc.BATCH} × {sc.CONTEXT} characters per size ({state.steps * sc.BATCH * sc.CONTEXT:,} tokens).")
    if s is None or not state.curves:
        return f"{head}\n\n{end or 'Preparing the first size.'}"
    c = state.curves[-1]
    line = (f"Size **{len(state.curves)} of {len(state.widths)}** (width {c.width}, N = {c.params:,}): step "
            f"**{s.step}** of {state.steps} · held-out loss {c.losses[-1]:.3f} · {done} size(s) finished · "
            f"{seconds:.0f} s of the {GROUPS['train'].cap:.0f} s cap")
    return f"{head}\n\n{line}" + (f"\n\n{end}" if end else "")


def answers(state: Ladder, s, end: str = "", seconds: float = 0.0, sized: bool = True) -> tuple:
    """(status, table, loss vs N, loss vs tokens, loss vs compute, budget note); the N figure only when `sized`."""
    if sized:
        state.law = fitted(state.curves)
    by_n = loss_vs_params_figure(state.curves, state.law) if sized else gr.skip()
    return (status(state, s, end, seconds), table(state.curves, state.law), by_n,
            loss_vs_tokens_figure(state.curves, state.steps * sc.BATCH * sc.CONTEXT), *compute_answer(state))


def train_ladder(sizes, steps, lr, budget, job: Job):
    """Train the chosen sizes one after the other, streaming their curves; Cancel stops the current size within one
    step (what was measured stays drawn), and the train group's cap stops the ladder where it is."""
    widths, steps, lr = ladder_settings(sizes, steps, lr)
    state = Ladder(widths, steps, budget_flops(budget))
    if job.stop.is_set():
        yield "Cancelled before the run started.", *[gr.skip()] * 5
        return
    job.result = state
    yield answers(state, None)
    drawn, s, finished = time.monotonic(), None, 0
    for state.curves, s in sc.train_ladder(widths, steps, lr, stop=job.stop, threads=TRAIN_THREADS):
        if job.timed_out():
            break
        now, size_done = time.monotonic(), sum(c.done for c in state.curves)
        if size_done > finished or now - drawn > REFRESH_SECONDS:
            yield answers(state, s, seconds=job.seconds, sized=size_done > finished)
            drawn, finished = now, size_done
    where = f"at step {s.step} of width {state.curves[-1].width}" if s is not None else "before the first step"
    end = job.why(where) or f"**Finished** the ladder in {job.seconds:.0f} s."
    yield answers(state, s, end, job.seconds)


def choose_budget(budget, job):
    """Move the compute budget: the best size at it, from the ladder trained in this session."""
    C = budget_flops(budget)
    state = job.result if isinstance(job, Job) else None
    if not isinstance(state, Ladder):
        return gr.skip(), "Train the ladder first: the best size at a budget is read off its curves."
    state.budget = C
    return compute_answer(state)


def calculate(params, tokens):
    """C = 6ND, Chinchilla's predicted loss, and the compute-optimal split at that C, for one (N, D)."""
    N = quantity("parameter count N", params, *PARAMS_RANGE)
    D = quantity("token count D", tokens, *TOKENS_RANGE)
    return calculator_markdown(N, D), real_models_figure(N, D)


def short(x: float) -> str:
    """124e6 as '124M', 1.4e12 as '1.4T'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def sup(x: float, digits: int = 2) -> str:
    """7.2e10 as '7.2 × 10<sup>10</sup>'."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa} × 10<sup>{int(exponent)}</sup>"


def calculator_markdown(N: float, D: float) -> str:
    ch, C = sc.CHINCHILLA, sc.compute(N, D)
    N_opt, D_opt = ch.optimal(C)
    rule = (C / (6 * sc.TOKENS_PER_PARAMETER)) ** 0.5  # C = 6 N (20 N)
    mine = (f"For N = **{sup(N, 3)}** parameters and D = **{sup(D, 3)}** tokens ({D / N:,.0f} tokens per parameter):\n\n"
            f"- compute **C = 6ND = {sup(C, 3)} FLOPs**\n"
            f"- predicted loss **L = {ch.loss(N, D):.3f}** nats per token = E {ch.E} + A/N<sup>α</sup> "
            f"{ch.A / N ** ch.alpha:.3f} + B/D<sup>β</sup> {ch.B / D ** ch.beta:.3f}\n"
            f"- compute-optimal at this C: **N<sub>opt</sub> = {sup(N_opt, 3)}**, **D<sub>opt</sub> = {sup(D_opt, 3)}** "
            f"({D_opt / N_opt:,.0f} tokens per parameter), loss {ch.loss(N_opt, D_opt):.3f}\n"
            f"- the rule of thumb, 20 tokens per parameter: N = {sup(rule, 3)}, D = {sup(20 * rule, 3)}, "
            f"loss {ch.loss(rule, 20 * rule):.3f}\n")
    rows = ["| model | N | D | tokens per parameter | C = 6ND (FLOPs) | Chinchilla loss | N<sub>opt</sub>, D<sub>opt</sub>"
            " at that C |", "|---|---:|---:|---:|---:|---:|---|"]
    for m in sc.REAL_MODELS:
        n, d = ch.optimal(sc.compute(m.params, m.tokens))
        rows.append(f"| {m.name} | {short(m.params)} | {short(m.tokens)}{' (estimate)' * m.estimate} | "
                    f"{m.tokens / m.params:,.0f} | {sup(sc.compute(m.params, m.tokens))} | "
                    f"{ch.loss(m.params, m.tokens):.3f} | {short(n)}, {short(d)} |")
    sources = "\n".join(f"- **{m.name}**: {m.source}." for m in sc.REAL_MODELS)
    return f"{mine}\n" + "\n".join(rows) + f"\n\nSources:\n{sources}"


def build(page) -> View:
    gr.Markdown(INTRO)
    with gr.Row():
        sizes = gr.CheckboxGroup(SIZES, value=[str(w) for w in sc.LADDER], label="Sizes (model width C; 2 layers each)")
        steps = gr.Slider(*LIMITS["steps per size"], value=sc.STEPS, step=10,
                          label=f"Steps per size (× {sc.BATCH * sc.CONTEXT:,} tokens)")
        lr = gr.Number(sc.LR, label=f"Peak learning rate ({LIMITS['learning rate'][0]:g} to {LIMITS['learning rate'][1]:g})")
        budget = gr.Slider(*LIMITS["compute budget (log10 FLOPs)"], value=DEFAULT_BUDGET, step=0.1,
                           label="Compute budget: 10^x FLOPs")
    with gr.Row():
        start = gr.Button("Train the ladder", variant="primary")
        stop = gr.Button("Cancel")
    summary = gr.Markdown()
    with gr.Row():
        by_params = gr.Plot(placeholder("Press <b>Train the ladder</b>: each size's final loss<br>against its "
                                        "parameters, and the fitted power law.", 300), label="Loss against N")
        by_tokens = gr.Plot(placeholder("Each size's held-out loss<br>against the tokens it has read.", 300),
                            label="Loss against D")
    by_compute = gr.Plot(placeholder("Each size's loss against the compute it has spent, and the frontier:<br>the "
                                     "best size at each budget.", 300), label="Loss against C")
    best = gr.Markdown()
    results = gr.Markdown()
    code_panel(sc.train_ladder, sc.fit_power_law, sc.compute_optimal, sc.Chinchilla.optimal)
    gr.Markdown(CALCULATOR)
    with gr.Row():
        params = gr.Textbox("70B", label="Parameters N")
        tokens = gr.Textbox("1.4T", label="Training tokens D")
        calc = gr.Button("Calculate")
    numbers = gr.Markdown()
    real = gr.Plot(label="Real models")
    jobs = Jobs(page, stop, "train")
    jobs.on(start, train_ladder, [sizes, steps, lr, budget], [summary, results, by_params, by_tokens, by_compute, best],
            "scaling_ladder", note=summary)
    page.on([budget.release], choose_budget, [budget, jobs.state], [by_compute, best], remember=False)
    page.on([calc.click, params.submit, tokens.submit], calculate, [params, tokens], [numbers, real], api="scaling_laws")
    return View(links=dict(sizes=sizes, steps=steps, lr=lr, budget=budget, params=params, tokens=tokens),
                draws=[page.event(calculate, [params, tokens], [numbers, real])])
