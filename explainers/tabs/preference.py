"""Preference tuning tab: DPO on pairs of lines (the gentler one preferred), live, beside RLHF's three stages."""
from __future__ import annotations

import html
import math
import re
import time

import gradio as gr
import plotly.graph_objects as go

from core.device import torch_threads
from core.inputs import number
from core.learning import preference as pf
from core.learning.preference_pairs import GENTLE, GRIM, load_pairs
from explainers.draw.figures import figure, grid, on, placeholder
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View
from explainers.tabs.training import TRAIN_THREADS

TITLE = "Preference tuning"
MODEL = "tiny-gpt-char"
INTRO = rf"""### Teach a model which of two answers people prefer
RLHF tunes a model on comparisons: of two responses to the same prompt, a person marks the better one. Here the
"person" prefers **the gentler line**. Each pair is two real lines of the Shakespeare corpus that open with the same
word: the **chosen** one speaks of love, joy, heaven or peace, the **rejected** one of death, blood, fear or the
grave. The policy is a copy of `{MODEL}` (the model the Training tab ships); a second, frozen copy is the
**reference**. DPO (Rafailov et al. 2023) raises the policy's log-probability of each chosen response relative to
the reference and lowers the rejected one's, with one loss:

$$\mathcal{{L}} = -\log \sigma\Big(\beta\big[(\log \pi(y_c|x) - \log \pi_\text{{ref}}(y_c|x)) -
(\log \pi(y_r|x) - \log \pi_\text{{ref}}(y_r|x))\big]\Big)$$

log π(y|x) sums the log-probabilities of the response's characters only (the prompt is given), and
β log(π(y|x) / π_ref(y|x)) is the response's **implicit reward**: the run is good when the chosen reward beats the
rejected one (the **reward accuracy**). β sets how far the policy may move from the
reference; the KL below measures how far it went."""

COLOURS = {"chosen": "#2563eb", "rejected": "#f97316", "train": "#93c5fd", "heldout": "#1e3a8a", "ref": "#6b7280"}
LIMITS = {"beta": (0.01, 5.0), "learning rate": (1e-6, 1e-2), "steps": (1, 300), "batch": (1, 64)}
REFRESH_SECONDS = 1.0
SHOWN_SAMPLES = 2        # of each prompt's samples, on the page (all of them are counted)


def settings(beta, lr, steps, batch) -> pf.DpoSettings:
    """The run's settings from the widgets, each checked."""
    return pf.DpoSettings(beta=number("beta", beta, *LIMITS["beta"], whole=False),
                          lr=number("learning rate", lr, *LIMITS["learning rate"], whole=False),
                          steps=number("number of steps", steps, *LIMITS["steps"]),
                          batch=number("batch size", batch, *LIMITS["batch"]))


def stages_html() -> str:
    """RLHF's three stages as boxes, and the bracket of what DPO replaces (what this tab runs)."""
    box = ("<div style='flex:1;border:2px solid {b};border-radius:8px;padding:8px;background:{bg}'>"
           "<b>{n}. {t}</b><br><span style='font-size:0.9em'>{d}</span></div>")
    arrow = "<div style='align-self:center;font-size:1.6em;padding:0 6px'>→</div>"
    stages = [box.format(n=1, t="Supervised fine-tuning (SFT)", b="#9ca3af", bg="#f9fafb",
                         d="Train on demonstrations: prompts with answers people wrote. <i>Here: none; "
                           f"{MODEL}, trained on Shakespeare, is the starting model and the reference.</i>"),
              box.format(n=2, t="Reward model", b="#9ca3af", bg="#f9fafb",
                         d="People compare two answers to a prompt; a model r(x, y) learns to score the preferred "
                           "one higher (Bradley-Terry: P(y_c ≻ y_r) = σ(r_c − r_r))."),
              box.format(n=3, t="RL against the reward (PPO)", b="#9ca3af", bg="#f9fafb",
                         d="The policy writes answers, the reward model scores them, PPO raises the reward "
                           "minus β·KL(π ‖ π_SFT), sampling again at every step.")]
    dpo = ("<div style='margin:6px 0 0 calc(33% + 12px);border:2px solid #2563eb;border-radius:8px;padding:8px;"
           "background:#eff6ff'><b>DPO: stages 2 and 3 in one loss, and what runs here.</b> The best policy for "
           "stage 3's objective is π_ref · exp(r / β) / Z, so every policy defines its own reward β log(π / π_ref); "
           "fitting that reward to the comparisons trains the policy directly: no reward model, no sampling loop, "
           "one forward of each model per pair. That fits a CPU within this server's 150 s cap.</div>")
    return f"<div style='display:flex;gap:0'>{arrow.join(stages)}</div>{dpo}"


def marked(text: str) -> str:
    """A line as HTML, its gentle words in blue and its grim words in orange."""
    def mark(m):
        word = m.group(0)
        kind = "gentle" if word.lower() in GENTLE else "grim" if word.lower() in GRIM else None
        colour = {"gentle": "#dbeafe", "grim": "#fed7aa"}.get(kind)
        return f"<span style='background:{colour};border-radius:3px'>{word}</span>" if colour else word
    return re.sub(r"[A-Za-z']+", mark, html.escape(text, quote=False))


def pairs_html(data: dict, k: int = 4) -> str:
    """The data: a few training pairs, and how many there are."""
    rows = "".join(f"<tr><td><b>{html.escape(p['prompt'])}</b></td><td>{marked(p['chosen'].rstrip())}</td>"
                   f"<td>{marked(p['rejected'].rstrip())}</td></tr>" for p in data["train"][:k])
    return (f"<div><b>The pairs</b>: {len(data['train'])} for training and {len(data['heldout'])} held out, "
            f"made by <code>python -m core.learning.preference_pairs</code> from the corpus (seeded; "
            f"<code>assets/data/preference_pairs.json</code>). The first {k} training pairs:"
            "<table style='font-family:monospace;font-size:0.9em'><tr><th>prompt x</th><th>chosen y_c</th>"
            f"<th>rejected y_r</th></tr>{rows}</table></div>")


def is_tie(m: pf.Measure) -> bool:
    """Every reward 0: the policy is still the reference, and no pair is won or lost (the accuracy panel skips it)."""
    return m.chosen_reward == m.rejected_reward == 0


def series(log: list[tuple[int, pf.Measure]], key: str) -> dict:
    """x (steps) and y (one number of each Measure) of a curve; the accuracy leaves out ties (it has no value yet)."""
    kept = [(step, getattr(m, key)) for step, m in log if key != "accuracy" or not is_tie(m)]
    return dict(x=[step for step, _ in kept], y=[value for _, value in kept])


def curves_figure(r: pf.DpoRun) -> go.Figure:
    """Loss, rewards, margin, accuracy, log-probabilities and KL as the run goes: thin = each step's training batch,
    bold = all held-out pairs."""
    layout = grid(3, 2, titles=["DPO loss", "implicit reward β log(π/π_ref)", "reward margin (chosen − rejected)",
                                "reward accuracy", "log π(y|x), nats per response", "KL(π ‖ π_ref), nats per token"],
                  gap=(0.08, 0.2), x=dict(title=dict(text="step")))
    thin = lambda i, key, legend: dict(type="scatter", **series(r.train_log, key), mode="lines",
                                       name="each step's training batch", legendgroup="train", showlegend=legend,
                                       line=dict(color=COLOURS["train"], width=1), **on(i))
    bold = lambda i, key, name, colour, legend=False: dict(
        type="scatter", **series(r.heldout_log, key), mode="lines+markers", name=name, legendgroup=name,
        showlegend=legend, line=dict(color=colour, width=3), **on(i))
    last = max(r.settings.steps, 1)
    traces = [thin(0, "loss", True), bold(0, "loss", "held-out pairs", COLOURS["heldout"], True),
              dict(type="scatter", x=[0, last], y=[pf.CHANCE_LOSS] * 2, mode="lines", name="log 2 (π = π_ref)",
                   line=dict(color=COLOURS["ref"], dash="dot"), **on(0)),
              bold(1, "chosen_reward", "chosen (held-out)", COLOURS["chosen"], True),
              bold(1, "rejected_reward", "rejected (held-out)", COLOURS["rejected"], True),
              thin(2, "margin", False), bold(2, "margin", "held-out pairs", COLOURS["heldout"]),
              thin(3, "accuracy", False), bold(3, "accuracy", "held-out pairs", COLOURS["heldout"]),
              bold(4, "pi_chosen", "chosen (held-out)", COLOURS["chosen"]),
              bold(4, "pi_rejected", "rejected (held-out)", COLOURS["rejected"]),
              thin(5, "kl", False), bold(5, "kl", "held-out pairs", COLOURS["heldout"])]
    start = r.heldout_log[0][1] if r.heldout_log else None
    if start is not None:  # the reference's own log-probabilities: where the policy started
        traces += [dict(type="scatter", x=[0, last], y=[value] * 2, mode="lines", name="the reference's",
                        legendgroup="ref", showlegend=side == "chosen", line=dict(color=COLOURS[side], dash="dash"),
                        **on(4)) for side, value in [("chosen", start.pi_chosen), ("rejected", start.pi_rejected)]]
    layout["yaxis4"]["range"] = [0, 1.05]
    for i in range(6):
        layout[f"xaxis{i + 1 if i else ''}"]["range"] = [0, last]
    return figure(traces, **layout, height=620, margin=dict(t=40, b=40),
                  legend=dict(orientation="h", y=-0.12))


def samples_html(r: pf.DpoRun) -> str:
    """Each held-out prompt's first samples before (the reference) and after (the policy), gentle and grim words
    marked, and the counts over all samples."""
    count = lambda side: pf.word_counts([line for lines in side.values() for line in lines])
    n = sum(len(v) for v in r.before.values())
    before, after = count(r.before), count(r.after)
    lines = lambda p, side: "<br>".join(f"<b>{html.escape(p)}</b>{marked(s)}" for s in side.get(p, [])[:SHOWN_SAMPLES])
    rows = "".join(f"<tr><td>{lines(p, r.before)}</td><td>{lines(p, r.after)}</td></tr>" for p in r.before)
    return (f"<div><b>Samples</b> after {len(r.before)} prompts that open held-out lines (temperature "
            f"{pf.SAMPLING.temperature}, the same seed before and after, each to the end of its line). Of all {n}: "
            f"lines with a <span style='background:#dbeafe'>gentle</span> word <b>{before['gentle']} → "
            f"{after['gentle']}</b>, with a <span style='background:#fed7aa'>grim</span> word <b>{before['grim']} → "
            f"{after['grim']}</b>.<table style='font-family:monospace;font-size:0.9em'><tr>"
            f"<th>before (the reference)</th><th>after DPO (the policy)</th></tr>{rows}</table></div>")


def numbers_markdown(r: pf.DpoRun) -> str:
    """Start against now, on all held-out pairs (and every training pair once the run ends)."""
    first, now = r.heldout_log[0][1], r.heldout_log[-1][1]
    rows = [("DPO loss", "loss", ".3f"), ("reward of the chosen", "chosen_reward", "+.3f"),
            ("reward of the rejected", "rejected_reward", "+.3f"), ("reward margin", "margin", "+.3f"),
            ("reward accuracy", "accuracy", ".1%"), ("log π(chosen), nats", "pi_chosen", ".2f"),
            ("log π(rejected), nats", "pi_rejected", ".2f"), ("KL(π ‖ π_ref), nats per token", "kl", ".4f")]
    head = f"| on the {len(load_pairs()['heldout'])} held-out pairs | start (π = π_ref) | step {r.heldout_log[-1][0]} |"
    cell = lambda m, key, fmt: "(all rewards 0: ties)" if key == "accuracy" and is_tie(m) else f"{getattr(m, key):{fmt}}"
    lines = [head, "|---|---:|---:|"] + [f"| {name} | {cell(first, key, fmt)} | {cell(now, key, fmt)} |"
                                          for name, key, fmt in rows]
    if r.train_final is not None:
        t = r.train_final
        lines.append(f"\nOn all {len(load_pairs()['train'])} training pairs at the end: reward accuracy "
                     f"**{t.accuracy:.1%}**, margin {t.margin:+.3f}, KL {t.kl:.4f} nats per token. "
                     f"Training took {r.seconds:.1f} s ({r.step} steps).")
    passes = math.ceil(len(load_pairs()["train"]) / r.settings.batch)
    if r.step > passes:
        lines.append(f"\nThe training pairs come round again every {passes} steps: the training batch's margin jumps "
                     "at each new pass, as the policy meets pairs it has already been pushed on; the held-out pairs' "
                     "margin grows smoothly. That gap is what memorising looks like.")
    return "\n".join(lines)


def run(beta, lr, steps, batch, job: Job, progress=gr.Progress()):
    """A generator: DPO on the pairs, redrawing the curves every REFRESH_SECONDS, then the numbers and the samples.
    Cancel stops it within one step; at the time cap the training ends and the samples after it are still drawn."""
    s = settings(beta, lr, steps, batch)
    data, base = load_pairs(), get_model(MODEL)
    last = 0.0
    with torch_threads(TRAIN_THREADS):
        for r in pf.dpo(base, data["train"], data["heldout"], data["sample_prompts"], s, should_stop=job.should_stop):
            if job.stop.is_set():
                yield (f"**Cancelled** at step {r.step} of {s.steps}. Change the settings and run again.",
                       curves_figure(r), gr.skip(), gr.skip())
                return
            if r.phase == "done" or (r.phase.startswith("step") and time.perf_counter() - last < REFRESH_SECONDS
                                     and r.step < s.steps):
                continue
            last = time.perf_counter()
            progress(r.step / s.steps, desc=r.phase)
            status = f"{r.phase[0].upper()}{r.phase[1:]}: β = {s.beta:g}, learning rate {s.lr:g}, {s.batch} pairs a step."
            yield status, curves_figure(r), numbers_markdown(r) if r.heldout_log else "", gr.skip()
    end = job.why(f"at step {r.step}") or f"**Finished**: {r.step} steps in {r.seconds:.0f} s of training."
    yield end, curves_figure(r), numbers_markdown(r), samples_html(r)


def build(page) -> View:
    gr.Markdown(INTRO)
    gr.HTML(stages_html())
    gr.HTML(pairs_html(load_pairs()))
    d = pf.DpoSettings()
    with gr.Row():
        beta = gr.Number(d.beta, label=f"β ({LIMITS['beta'][0]:g} to {LIMITS['beta'][1]:g})")
        lr = gr.Number(d.lr, label=f"Learning rate ({LIMITS['learning rate'][0]:g} to {LIMITS['learning rate'][1]:g})")
        steps = gr.Slider(*LIMITS["steps"], value=d.steps, step=1, label="Steps")
        batch = gr.Slider(*LIMITS["batch"], value=d.batch, step=1, label="Pairs per step")
    with gr.Row():
        start = gr.Button("Run DPO", variant="primary")
        stop = gr.Button("Cancel")
    status = gr.Markdown()
    curves = gr.Plot(placeholder("Press <b>Run DPO</b>: the loss, the implicit rewards, their margin and accuracy,<br>"
                                 "the log-probabilities and the KL to the reference draw here, step by step.", 300))
    numbers = gr.Markdown()
    samples = gr.HTML("<div style='color:#6b7280;padding:8px'><b>Samples</b>: when the run ends, what the reference "
                      "and the tuned policy write after held-out prompts.</div>")
    code_panel(pf.encode_pairs, pf.response_logprob, pf.dpo_loss, pf.response_kl, pf.dpo_step, pf.dpo)
    Jobs(page, stop, "train").on(start, run, [beta, lr, steps, batch], [status, curves, numbers, samples],
                                 "preference", note=status)
    return View(links=dict(beta=beta, lr=lr, steps=steps, batch=batch))

