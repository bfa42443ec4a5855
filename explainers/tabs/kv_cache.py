"""KV-cache tab: the same greedy generation with and without the cache, timed step by step, and its memory."""
from __future__ import annotations

import time

import gradio as gr
import plotly.graph_objects as go
import torch

from core.device import available_devices, describe, pick_device
from core.inference.generation import generate_steps, median_slope
from core.inputs import InputError, number, text_to_tokens
from core.model.kv_cache import KVCache, cache_bytes
from core.weights.zoo import WEIGHTS
from explainers.draw.figures import figure, grid, on, placeholder
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View

TITLE = "KV cache"
INTRO = r"""### Why generation keeps a cache of keys and values
A decoder predicts one token at a time. **Without a cache**, step t runs the whole sequence of
t tokens again, so each step costs more than the last. **With a KV cache**, the prompt runs once
(the *prefill*) and every later step feeds only the newest token: its query attends to keys and
values stored from earlier steps. The price is memory:

$$\text{bytes} = 2 \times \text{layers} \times \text{KV heads} \times d_{\text{head}}
  \times \text{positions} \times \text{bytes per value}$$

Both runs below are greedy, so they must produce the same tokens; only the time differs.
A warm-up forward runs first and is not timed; step 0 includes the prompt and is drawn but left
out of the per-token figures. On a GPU every step is synchronised before the clock stops."""

REFRESH_SECONDS = 1.0  # live redraws: each one costs the browser's main thread a noticeable moment


def timing_figure(runs: dict, prompt_len: int) -> go.Figure:
    """Per-step latency against position, and cumulative time, for each run ({label: step seconds})."""
    layout = grid(2, titles=["time per step (ms) against position", "cumulative time (s)"], gap=(0.1, 0),
                  x=dict(title=dict(text="position of the token being predicted")), y=dict(rangemode="tozero"))
    colours = {"with KV cache": "#2563eb", "without cache": "#f97316"}
    lines = []
    for label, seconds in runs.items():
        positions = list(range(prompt_len, prompt_len + len(seconds)))
        ms = [s * 1000 for s in seconds]
        colour = colours.get(label, "#6b7280")
        lines.append(dict(type="scatter", x=positions[1:], y=ms[1:], mode="lines+markers", name=label, marker=dict(size=3),
                          line=dict(color=colour), legendgroup=label,
                          hovertemplate="position %{x}<br>%{y:.1f} ms<extra>" + label + "</extra>"))
        if seconds:  # step 0 (prefill of the prompt) drawn apart: it is not a per-token cost
            lines.append(dict(type="scatter", x=positions[:1], y=ms[:1], mode="markers", showlegend=False,
                              legendgroup=label, marker=dict(symbol="x", size=9, color=colour),
                              hovertemplate="step 0 (prompt) %{y:.1f} ms<extra></extra>"))
        cumulative = torch.tensor(seconds, dtype=torch.float64).cumsum(0).tolist()
        lines.append(dict(type="scatter", x=positions, y=cumulative, mode="lines", showlegend=False, legendgroup=label,
                          line=dict(color=colour), hovertemplate="position %{x}<br>%{y:.2f} s<extra></extra>", **on(1)))
    return figure(lines, **layout, height=420, margin=dict(t=80),
                  legend=dict(orientation="h", x=1, xanchor="right", y=1.2))


def memory_figure(cfg, positions_now: int, measured_bytes: int) -> go.Figure:
    """Cache size against sequence length for this model and its MHA / GQA / MQA variants, with the
    measured size of this run's cache (its last token is predicted, never stored) marked."""
    top = min(cfg.n_ctx, max(1024, 4 * positions_now))
    xs = torch.linspace(0, top, 65).round().int().tolist()
    variants = {f"MHA ({cfg.n_heads} KV heads)": cfg.n_heads, f"this model ({cfg.n_kv_heads})": cfg.n_kv_heads,
                "MQA (1)": 1}
    if cfg.n_heads % 2 == 0 and cfg.n_heads // 2 not in variants.values():
        variants[f"GQA ({cfg.n_heads // 2})"] = cfg.n_heads // 2
    lines = [dict(type="scatter", x=xs, y=[cache_bytes(cfg.n_layers, g, cfg.d_head, x) / 2**20 for x in xs],
                  mode="lines", name=label, line=dict(width=4 if label.startswith("this") else 2),
                  hovertemplate="%{x} positions: %{y:.2f} MiB<extra>" + label + "</extra>")
             for label, g in sorted(variants.items(), key=lambda kv: -kv[1])]
    if positions_now:
        lines.append(dict(type="scatter", x=[positions_now], y=[measured_bytes / 2**20], mode="markers+text",
                          name="this run (measured tensors)", marker=dict(size=12, color="#111827"),
                          text=[f"{measured_bytes / 2**20:.2f} MiB"], textposition="top right"))
    title = f"KV cache size (fp32) against sequence length (the context holds {cfg.n_ctx:,})"
    return figure(lines, title=dict(text=title), xaxis=dict(title=dict(text="positions")),
                  yaxis=dict(title=dict(text="MiB")), height=380)


def summary_markdown(device, runs: dict, tokens_same: bool | None, text: str, n_prompt: int) -> str:
    rows = ["| run | steps | total | prefill (step 0) | per token after it (median) | trend |", "|---|---|---|---|---|---|"]
    for label, g in runs.items():
        s = g.step_seconds
        rest = sorted(s[1:])
        median = rest[len(rest) // 2] * 1000 if rest else float("nan")
        positions = list(range(n_prompt + 1, n_prompt + len(s)))
        trend = f"{median_slope(positions, s[1:]) * 1e6:+.1f} µs per position" if len(s) > 8 else "—"
        rows.append(f"| {label} | {len(s)} | {sum(s):.2f} s | {s[0] * 1000:.1f} ms | {median:.1f} ms | {trend} |")
    out = "\n".join(rows)
    if len(runs) == 2:
        cached, plain = (sum(g.step_seconds) for g in runs.values())
        steps = len(next(iter(runs.values())).step_seconds)
        out += f"\n\n**Speedup from the cache: {plain / cached:.2f}×** over {steps} tokens."
    if tokens_same is not None:
        out += ("\n\n**Identical tokens in both runs: yes.**" if tokens_same else
                "\n\n**The runs differ** (ties between two equally likely tokens can break either way in float arithmetic).")
    return out + f"\n\nDevice: **{describe(device)}**. Generated: `{text!r}`"


def _check(model_name: str, text: str, n_new, device_name: str, weights: str = "fp32"):
    device = pick_device(device_name or "cpu")
    model = get_model(model_name, str(device), weights)
    if not model.cfg.causal or model.unembed is None:
        raise InputError(f"{model_name} does not generate text (it is an encoder). Pick a decoder such as smollm2-135m.")
    tokens, notice = text_to_tokens(model, text)
    prompt = [t.id for t in tokens]
    room = model.cfg.n_ctx - len(prompt)
    if room < 1:
        raise InputError(f"The prompt has {len(prompt)} tokens and fills this model's context of {model.cfg.n_ctx}; "
                         "shorten it.")
    wanted = number("number of new tokens", n_new, 1, 10**6)
    if wanted > room:
        raise InputError(f"The prompt has {len(prompt)} tokens and the context holds {model.cfg.n_ctx}, "
                         f"so at most {room} new tokens fit; asked for {wanted}.")
    return model, device, prompt, min(wanted, 512), join_notes(notice, "" if wanted <= 512 else "At most 512 new tokens.")


def run(model_name: str, text: str, n_new, device_name: str, weights: str, job: Job):
    """A generator: yields (timing plot, memory plot, summary) every REFRESH_SECONDS, so the page updates live
    (the summary line is the progress report; a progress bar per step would cost the browser more than the plot).
    The loop asks the job whether to stop after every step and reports what it measured. weights="int8" runs
    the model with int8 linear layers (core.inference.int8.Int8Linear)."""
    model, device, prompt, n_new, notice = _check(model_name, text, n_new, device_name, weights)
    with torch.no_grad():  # warm-up: first calls allocate and pick kernels; keep that out of the timings
        model(torch.tensor([prompt], device=model.device))
    runs, last = {}, 0.0
    for label, use_cache in [("with KV cache", True), ("without cache", False)]:
        for g in generate_steps(model, prompt, n_new, use_cache=use_cache):
            runs[label] = g
            if job.should_stop():
                done = ", ".join(f"{k}: {len(v.new_ids)} of {n_new} tokens" for k, v in runs.items())
                yield (timing_figure({k: v.step_seconds for k, v in runs.items()}, len(prompt)), gr.skip(),
                       f"{job.why(f'({done})')} Change the settings and generate again.")
                return
            if time.perf_counter() - last > REFRESH_SECONDS:
                last = time.perf_counter()
                yield (timing_figure({k: v.step_seconds for k, v in runs.items()}, len(prompt)), gr.skip(),
                       f"Running {label}: {len(g.new_ids)} of {n_new} tokens…")
    cached, plain = runs.values()
    same = cached.new_ids == plain.new_ids
    generated = model.tokenizer.decode(cached.new_ids)
    yield (timing_figure({k: v.step_seconds for k, v in runs.items()}, len(prompt)),
           memory_figure(model.cfg, len(prompt) + len(cached.new_ids) - 1, cached.cache_bytes),
           join_notes(notice, summary_markdown(device, runs, same, generated, len(prompt))))


def memory_only(model_name: str):
    model = get_model(model_name)
    return memory_figure(model.cfg, 0, 0)


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Prompt", value="The history of the printing press begins")
    with gr.Row():
        n_new = gr.Slider(1, 512, value=64, step=1, label="New tokens N")
        device = gr.Dropdown(available_devices(), value=str(pick_device().type), label="Device")
        weights = gr.Radio(list(WEIGHTS), value="fp32", label="Weights")
        start = gr.Button("Generate both ways", variant="primary")
        stop = gr.Button("Cancel")
    summary = gr.Markdown()
    timing_plot = gr.Plot(placeholder("Press <b>Generate both ways</b>: the time of every new token, with the cache and "
                                      "without it, draws here as the two runs go.", 260))
    memory_plot = gr.Plot()
    code_panel(generate_steps, KVCache.append, cache_bytes, median_slope)
    gr.Examples([["The history of the printing press begins", 32], ["Once upon a time", 128]], [text, n_new])
    Jobs(page, stop, "generate").on(start, run, [page.model, text, n_new, device, weights],
                                    [timing_plot, memory_plot, summary], "kv_cache", note=summary)
    return View(links=dict(text=text, n=n_new, device=device, weights=weights),
                draws=[page.event(memory_only, page.model, memory_plot, api="kv_cache_memory")])
