"""The LM head tab's figures: plain functions of the sampling stages, the draws, the logit lens and the branches."""
from __future__ import annotations

import math

import plotly.graph_objects as go
import torch

from explainers.draw.figures import figure, grid, on, piece

SHOWN = 15        # tokens in the stage and lab bar charts
WRAP = 14         # boxes per line of the branch tree
LIGHT = [[0, "#ffffff"], [1, "#60a5fa"]]  # probability 0..1: light enough for black text on every cell
STAGES = [("logits", "logits z"), ("temperature", "z / T"), ("top_k", "after top-k"), ("top_p", "after top-p")]


def stages_figure(st: dict[str, torch.Tensor], tokenizer, n: int = SHOWN) -> go.Figure:
    """The n highest-logit tokens through every stage; a token a stage cut is drawn grey at 0."""
    order = st["logits"].topk(n).indices
    names = [f"{piece(tokenizer, int(i))} ({int(i)})" for i in order]
    layout = grid(5, titles=[t for _, t in STAGES] + ["probabilities<br>(after T and filters)"], gap=(0.02, 0),
                  y=dict(autorange="reversed", type="category", tickfont=dict(size=11), matches="y",
                         showticklabels=False))
    layout["yaxis"].update(showticklabels=True)  # the same tokens in every panel: named once
    del layout["yaxis"]["matches"]
    bars = []
    for i, (key, _) in enumerate(STAGES):
        values = st[key][order]
        cut = torch.isinf(values)
        bars.append(dict(type="bar", x=values.masked_fill(cut, 0).tolist(), y=names, orientation="h", showlegend=False,
                         marker=dict(color=["#d1d5db" if c else "#2563eb" for c in cut.tolist()]),
                         text=["cut" if c else f"{v:.2f}" for c, v in zip(cut.tolist(), values.tolist())],
                         textposition="auto", hovertemplate="%{y}: %{text}<extra></extra>", **on(i)))
    before, after = st["temperature"].softmax(-1)[order].tolist(), st["probs"][order].tolist()
    bars.append(dict(type="bar", x=before, y=names, orientation="h", name="before filtering",
                     marker=dict(color="#d1d5db"), **on(4)))
    bars.append(dict(type="bar", x=after, y=names, orientation="h", name="after (renormalised)",
                     marker=dict(color="#2563eb"), text=[f"{p:.1%}" for p in after], textposition="auto", **on(4)))
    return figure(bars, **layout, barmode="overlay", height=110 + 26 * n,
                  legend=dict(orientation="h", y=-0.05))


def stage_counts(st: dict[str, torch.Tensor]) -> str:
    kept = {key: int(torch.isfinite(st[key]).sum()) for key in ("temperature", "top_k", "top_p")}
    return (f"Tokens that can still be drawn: **{kept['temperature']:,}** after temperature, "
            f"**{kept['top_k']:,}** after top-k, **{kept['top_p']:,}** after top-p.")


def lab_figure(probs: torch.Tensor, counts: torch.Tensor, tokenizer, n: int = SHOWN) -> go.Figure:
    """Empirical frequencies of N draws against the distribution they were drawn from."""
    order = probs.topk(min(n, int((probs > 0).sum()))).indices
    freq = counts.float() / counts.sum()
    names = [f"{piece(tokenizer, int(i))} ({int(i)})" for i in order]
    rest_p, rest_f = 1 - probs[order].sum().item(), 1 - freq[order].sum().item()
    if rest_p > 1e-6 or rest_f > 0:
        names, p, f = names + ["all others"], probs[order].tolist() + [rest_p], freq[order].tolist() + [rest_f]
    else:
        p, f = probs[order].tolist(), freq[order].tolist()
    bars = [dict(type="bar", x=names, y=p, name="probability", marker=dict(color="#2563eb")),
            dict(type="bar", x=names, y=f, name=f"frequency in {int(counts.sum()):,} draws", marker=dict(color="#f97316"))]
    return figure(bars, barmode="group", height=380, yaxis=dict(tickformat=".0%"), margin=dict(t=60),
                  xaxis=dict(type="category", tickangle=-45), legend=dict(orientation="h", x=1, xanchor="right", y=1.12))


def lens_figure(lens: dict, tokenizer, labels: list[str]) -> go.Figure:
    """Layers x positions: the top token read from the residual stream and its probability."""
    top, probs = lens["top_ids"][..., 0], lens["top_probs"][..., 0]                 # (L+1, T)
    words = [[piece(tokenizer, int(i)) for i in row] for row in top]
    short = [[w if len(w) <= 7 else w[:6] + "…" for w in row] for row in words]
    rows = ["embeddings"] + [f"after block {i}" for i in range(top.shape[0] - 1)]
    lens_map = dict(type="heatmap", z=probs.numpy(), x=labels, y=rows, text=short, customdata=words,
                    texttemplate="%{text}", textfont=dict(size=11, color="#111827"),
                    colorscale=LIGHT, zmin=0, zmax=1, xgap=1, ygap=1,
                    colorbar=dict(title=dict(text="p(top)")),
                    hovertemplate="%{y}, input %{x}<br>top token %{customdata}: %{z:.1%}<extra></extra>")
    return figure([lens_map], yaxis=dict(autorange="reversed", tickfont=dict(size=10)),
                  xaxis=dict(tickangle=-60, tickfont=dict(size=10), side="top"),
                  height=160 + 22 * len(rows), margin=dict(t=110))


def tree_figure(branches: list[dict], tokenizer, root: str) -> go.Figure:
    """One row per branch: the forced token, then its greedy continuation, each box coloured by the probability
    the model gave that token at that step. Long branches go on in lines of WRAP boxes, as text does."""
    n = max(len(b["ids"]) for b in branches)
    width = min(n, WRAP)
    fits = min(12, 120 // width)  # characters a box has room for: 9 in a full line
    words = [[piece(tokenizer, t) for t in b["ids"]] + [""] * (n - len(b["ids"])) for b in branches]
    probs = [b["probs"] + [math.nan] * (n - len(b["probs"])) for b in branches]  # NaN: a shorter branch, no box
    steps, rows = ["forced"] + [f"+{i}" for i in range(1, n)], [f"{w[0]} ({b['ids'][0]})" for w, b in zip(words, branches)]
    lines = math.ceil(n / WRAP)
    line_px = 40 * len(branches) + 30                                   # its boxes and the step numbers above them
    layout = grid(1, lines, gap=(0, 30 / (lines * line_px)), y=dict(autorange="reversed", type="category"),
                  x=dict(side="top", type="category", range=[-0.5, width - 0.5]))  # every line's boxes equally wide
    boxes = [dict(type="heatmap", z=[row[cut] for row in probs], x=steps[cut], y=rows, coloraxis="coloraxis",
                  customdata=[row[cut] for row in words], texttemplate="%{text}", textfont=dict(size=12, color="#111827"),
                  text=[[w if len(w) <= fits else w[:fits - 1] + "…" for w in row[cut]] for row in words], xgap=2, ygap=2,
                  hovertemplate="branch %{y}, step %{x}<br>%{customdata}: %{z:.1%}<extra></extra>", **on(line))
             for line, cut in enumerate(slice(i, i + WRAP) for i in range(0, n, WRAP))]
    tail = root if len(root) <= 40 else "…" + root[-39:]
    forced_edge = dict(type="line", x0=0.5, x1=0.5, y0=0, y1=1, yref="y domain", line=dict(color="#111827", width=2))
    return figure(boxes, **layout, title=dict(text=f"After {tail!r}: the forced token, then what the model writes greedily"),
                  coloraxis=dict(colorscale=LIGHT, cmin=0, cmax=1, colorbar=dict(title=dict(text="p"))),
                  shapes=[forced_edge], plot_bgcolor="#ffffff", height=90 + lines * line_px,
                  margin=dict(t=90))


def branch_rows(branches: list[dict], tokenizer) -> list[list]:
    """The table under the tree: forced token, its probability, the branch's text, the whole branch's probability."""
    return [[piece(tokenizer, b["ids"][0]), f"{b['probs'][0]:.1%}", tokenizer.decode(b["ids"]),
             f"{math.prod(b['probs']):.2g}"] for b in branches]
