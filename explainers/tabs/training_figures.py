"""The Training tab's figures: plain functions of a run's losses, attention, embeddings, samples and masking."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import torch

from explainers.draw.figures import SAFE_COLOURS, figure, grid, on, scale

PRONOUNS = {"i", "you", "he", "she", "it", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "its",
            "our", "their", "thou", "thee", "thy", "thine", "mine"}
FUNCTION_WORDS = {"the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "from", "with", "as",
                  "is", "be", "are", "was", "not", "that", "this", "so", "if", "no", "do", "shall", "will", "would"}


def curves_figure(train: list[tuple[int, float]], heldout: list[tuple[int, float]], steps: int,
                  chance: float) -> go.Figure:
    """Loss per step: this step's training batch (thin), the held-out batch (thick), and uniform guessing."""
    line = lambda points, **kw: dict(type="scatter", x=[s for s, _ in points], y=[v for _, v in points], **kw)
    traces = [line(train, mode="lines", name="training batch", line=dict(width=1, color=SAFE_COLOURS[0])),
              line(heldout, mode="lines+markers", name="held-out", line=dict(width=3, color=SAFE_COLOURS[1])),
              line([(0, chance), (steps, chance)], mode="lines", name=f"guessing uniformly (ln V = {chance:.2f})",
                   line=dict(dash="dash", color="#6b7280"))]
    return figure(traces, height=340, margin=dict(t=40), legend=dict(orientation="h", y=1.12),
                  xaxis=dict(title=dict(text="step"), range=[0, steps]),
                  yaxis=dict(title=dict(text="loss (nats per token)"), range=[0, chance * 1.15]))


def attention_figure(pattern: torch.Tensor, labels: list[str], layer: int, load: torch.Tensor | None = None) -> go.Figure:
    """One head's pattern on the probe text; for MoE also each layer's expert load on the held-out batch."""
    titles = [f"attention, layer {layer} head 0"] + ["expert load (share of routing slots)"] * (load is not None)
    layout = grid(len(titles), titles=titles, gap=(0.14, 0), widths=[0.6, 0.4][:len(titles)],
                  y=dict(autorange="reversed", tickfont=dict(size=9)), x=dict(tickfont=dict(size=9)))
    traces = [dict(type="heatmap", z=pattern.numpy(), x=labels, y=labels, colorscale=scale("Blues"), zmin=0, zmax=1,
                   showscale=False, hovertemplate="query %{y}<br>key %{x}<br>%{z:.2f}<extra></extra>")]
    if load is not None:
        L, E = load.shape
        traces.append(dict(type="heatmap", z=load.numpy(), x=[f"e{e}" for e in range(E)], y=[f"layer {i}" for i in range(L)],
                           text=[[f"{v:.0%}" for v in row] for row in load.tolist()], texttemplate="%{text}",
                           colorscale=scale("Blues"), zmin=0, zmax=max(0.5, float(load.max())), showscale=False, **on(1)))
    layout["xaxis"].update(tickangle=-90, type="category")
    layout["yaxis"].update(type="category")
    return figure(traces, **layout, height=420, margin=dict(t=40), plot_bgcolor="white")


CLASS_COLOURS = {"capitals": SAFE_COLOURS[0], "consonants": SAFE_COLOURS[1], "vowels": SAFE_COLOURS[2],
                 "digits": SAFE_COLOURS[5], "punctuation": SAFE_COLOURS[3], "space, newline": SAFE_COLOURS[4],
                 "pronouns": SAFE_COLOURS[0], "function words": SAFE_COLOURS[2], "other words": SAFE_COLOURS[1]}


def token_class(piece: str, kind: str) -> str:
    """What a vocabulary entry is, for the embedding map's colours."""
    if kind == "character":
        return ("vowels" if piece in "aeiou" else "consonants" if piece.islower() else "capitals" if piece.isupper()
                else "digits" if piece.isdigit() else "space, newline" if piece in "␣↵" else "punctuation")
    return ("punctuation" if not piece[0].isalnum() else "pronouns" if piece in PRONOUNS
            else "function words" if piece in FUNCTION_WORDS else "other words")


def embedding_figure(points: np.ndarray, pieces: list[str], kind: str, step: int) -> go.Figure:
    classes = [token_class(p, kind) for p in pieces]
    traces = []
    for name in [c for c in CLASS_COLOURS if c in classes]:
        idx = [j for j, c in enumerate(classes) if c == name]
        traces.append(dict(type="scatter", mode="markers+text", name=name, x=points[idx, 0], y=points[idx, 1],
                           text=[pieces[j] for j in idx], textposition="top center", textfont=dict(size=11),
                           marker=dict(size=8, color=CLASS_COLOURS[name]),
                           hovertemplate="%{text}<extra>" + name + "</extra>"))
    return figure(traces, title=dict(text=f"Token embeddings, PCA to 2D, at step {step}"), height=460,
                  legend=dict(title=dict(text="tokens")),
                  xaxis=dict(title=dict(text="PC 1"), zeroline=False), yaxis=dict(title=dict(text="PC 2"), zeroline=False))


def samples_html(samples: list[tuple[int, str]], prompt: str) -> str:
    rows = "".join(f"<tr><td style='padding-right:8px;white-space:nowrap;vertical-align:top'>step {step}</td>"
                   f"<td style='font-family:monospace'><b>{html.escape(prompt)}</b>{html.escape(text)}</td></tr>"
                   for step, text in samples)
    return ("<div><b>Samples</b> (temperature 0.8, the same random seed each time; ↵ is a new line)"
            f"<table style='font-size:0.9em'>{rows.replace(chr(10), '↵')}</table></div>")


KIND_COLOURS = {"[MASK]": "#fed7aa", "random": "#fecaca", "kept": "#bbf7d0"}


def masking_html(window: list[tuple[int, int, int, float]], tok, batch_counts: dict, step: int) -> str:
    """A live batch's first window: chosen words coloured by what the model read instead (80/10/10), with its guess."""
    chips = []
    for given, label, guess, p in window:
        if label == -100:
            if given not in tok.special_ids:
                chips.append(f"<span style='color:#4b5563'>{html.escape(tok.readable(given))}</span>")
            continue
        kind = "[MASK]" if given == tok.mask_id else "kept" if given == label else "random"
        read = "" if kind == "kept" else f" read {html.escape(tok.readable(given))},"
        mark = "✓" if guess == label else "✗"
        chips.append(f"<span style='background:{KIND_COLOURS[kind]};border-radius:4px;padding:1px 4px;margin:1px'>"
                     f"<b>{html.escape(tok.readable(label))}</b><sub>{read} guessed "
                     f"{html.escape(tok.readable(guess))} {p:.0%} {mark}</sub></span>")
    c = batch_counts
    legend = " ".join(f"<span style='background:{colour};padding:1px 4px'>{kind}</span>"
                      for kind, colour in KIND_COLOURS.items())
    return (f"<div><b>Masked LM at step {step}</b>: this batch chose {c['chosen']} words ({c['rate']:.1%}); the model "
            f"read [MASK] for {c['[MASK]']:.0%} of them, a random word for {c['random']:.0%} and the word itself for "
            f"{c['kept']:.0%}, and guessed {c['right']:.0%} right. Its first window: {legend}"
            f"<div style='line-height:2.2;font-family:monospace'>{' '.join(chips)}</div></div>")
