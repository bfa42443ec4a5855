"""The Scaling laws tab's figures: the ladder's losses on log-log axes, and real models on Chinchilla's map."""
from __future__ import annotations

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from core.learning.scaling import CHINCHILLA, REAL_MODELS, TOKENS_PER_PARAMETER, WIDTHS, Curve, PowerLaw, frontier
from explainers.draw.figures import SAFE_COLOURS, figure

# one colour per width, light to dark as the models grow (a width keeps its colour whichever ladder is chosen)
COLOURS = dict(zip(WIDTHS, plotly.colors.sample_colorscale("Viridis", list(np.linspace(0.9, 0.0, len(WIDTHS))))))
LOG = dict(type="log", exponentformat="power", showgrid=True, gridcolor="#e5e7eb")
LOSS_AXIS = dict(**LOG, title=dict(text="held-out loss (nats per character)"))


def name(c: Curve) -> str:
    return f"width {c.width}"


def sci(x: float) -> str:
    """7.2e10 as '7.2×10¹⁰' (for figures; the tables use HTML superscripts)."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(str.maketrans('-0123456789', '⁻⁰¹²³⁴⁵⁶⁷⁸⁹'))}"


def loss_vs_params_figure(curves: list[Curve], law: PowerLaw | None) -> go.Figure:
    """Each finished size's final held-out loss against its parameters N, and the fitted L(N) = E + A N^-alpha."""
    done = [c for c in curves if c.done]
    traces = [dict(type="scatter", x=[c.params], y=[c.losses[-1]], mode="markers", name=name(c),
                   marker=dict(size=13, color=COLOURS[c.width], line=dict(width=1, color="black")), showlegend=False,
                   hovertemplate=f"width {c.width}<br>N = %{{x:,}}<br>loss %{{y:.3f}}<extra></extra>") for c in done]
    title = "Final loss against parameters N (non-embedding)"
    if law is not None:
        N = np.geomspace(min(c.params for c in done) / 1.5, max(c.params for c in done) * 1.5, 50)
        traces.append(dict(type="scatter", x=N, y=law(N), mode="lines", name="fit", line=dict(color=SAFE_COLOURS[5]),
                           showlegend=False, hoverinfo="skip"))
        title += (f"<br><sup>fit L = {law.E:.2f} + {law.A:.3g}·N<sup>−{law.alpha:.3f}</sup>, α = {law.alpha:.3f}, "
                  f"RMS of ln L residuals {law.rms:.4f}</sup>")
    elif done:
        title += "<br><sup>the fit needs at least 3 finished sizes</sup>"
    return figure(traces, title=dict(text=title), height=380, margin=dict(t=80, l=60),
                  xaxis=dict(**LOG, title=dict(text="parameters N")), yaxis=LOSS_AXIS)


def loss_vs_tokens_figure(curves: list[Curve], steps_tokens: int) -> go.Figure:
    """Each size's held-out loss against the tokens it has read."""
    traces = [dict(type="scatter", x=c.tokens, y=c.losses, mode="lines+markers", name=name(c),
                   line=dict(color=COLOURS[c.width], width=2.5), marker=dict(size=5),
                   hovertemplate=f"width {c.width}<br>%{{x:,}} tokens<br>loss %{{y:.3f}}<extra></extra>")
              for c in curves if c.tokens]
    return figure(traces, title=dict(text="Loss against training tokens D"), height=380, margin=dict(t=60, l=60),
                  legend=dict(title=dict(text="size")),
                  xaxis=dict(**LOG, title=dict(text="tokens D"), range=[np.log10(1000), np.log10(steps_tokens * 1.3)]),
                  yaxis=LOSS_AXIS)


def loss_vs_compute_figure(curves: list[Curve], budget: float, best: tuple[int, float] | None) -> go.Figure:
    """Each size's loss against compute C = 6ND, their lower envelope (the compute-efficient frontier), and the best
    size at the chosen budget."""
    traces = [dict(type="scatter", x=c.compute, y=c.losses, mode="lines", name=name(c),
                   line=dict(color=COLOURS[c.width], width=2),
                   hovertemplate=f"width {c.width}<br>C = %{{x:.2e}} FLOPs<br>loss %{{y:.3f}}<extra></extra>")
              for c in curves if c.tokens]
    C, L, _ = frontier(curves)
    if len(C):
        traces.append(dict(type="scatter", x=C, y=L, mode="lines", name="frontier (the best size at each C)",
                           line=dict(color="black", width=4, dash="dot"), hoverinfo="skip"))
    if best is not None:
        c = curves[best[0]]
        traces.append(dict(type="scatter", x=[budget], y=[best[1]], mode="markers+text", name="best at the budget",
                           marker=dict(symbol="star", size=22, color=COLOURS[c.width], line=dict(width=1.5, color="black")),
                           text=[f"width {c.width}: {best[1]:.3f}"], textposition="bottom right",
                           hovertemplate=f"C = {sci(budget)} FLOPs<br>best: width {c.width}<br>loss %{{y:.3f}}"
                                         "<extra></extra>"))
    shapes = [dict(type="line", x0=budget, x1=budget, y0=0, y1=1, yref="paper", line=dict(color="#6b7280", dash="dash"))]
    title = "Loss against compute C = 6ND, and the compute-efficient frontier"
    return figure(traces, title=dict(text=title), height=420, margin=dict(t=60, l=60), shapes=shapes,
                  legend=dict(orientation="h", y=-0.2), xaxis=dict(**LOG, title=dict(text="compute C (FLOPs)")),
                  yaxis=LOSS_AXIS)


def real_models_figure(N: float, D: float) -> go.Figure:
    """Parameters against tokens, log-log: lines of equal compute, Chinchilla's compute-optimal line, the 20 tokens
    per parameter rule, the real models, and the chosen (N, D) with the optimum at its compute."""
    n = np.geomspace(1e6, 1e13, 60)
    lines = []
    for exponent in range(18, 28, 2):
        C = 10.0 ** exponent
        lines.append(dict(type="scatter", x=n, y=C / (6 * n), mode="lines", line=dict(color="#d1d5db", width=1),
                          showlegend=exponent == 18, name="equal compute C = 6ND", hoverinfo="skip"))
        label_n = np.sqrt(C / 6 / 3e4)  # where the line crosses D = 30,000 N: the empty upper left, clear of the models
        lines.append(dict(type="scatter", x=[label_n], y=[C / 6 / label_n], mode="text", text=[f"10<sup>{exponent}</sup>"],
                          textfont=dict(color="#6b7280"), showlegend=False, hoverinfo="skip"))
    optimal = [CHINCHILLA.optimal(C) for C in np.geomspace(1e14, 1e30, 60)]
    lines += [dict(type="scatter", x=[o[0] for o in optimal], y=[o[1] for o in optimal], mode="lines",
                   name="compute-optimal (Chinchilla fit)", line=dict(color=SAFE_COLOURS[0], width=3)),
              dict(type="scatter", x=n, y=TOKENS_PER_PARAMETER * n, mode="lines", name="20 tokens per parameter",
                   line=dict(color=SAFE_COLOURS[1], width=2, dash="dash"))]
    models = dict(type="scatter", x=[m.params for m in REAL_MODELS], y=[m.tokens for m in REAL_MODELS],
                  mode="markers+text", name="real models", text=[m.name + " (est.)" * m.estimate for m in REAL_MODELS],
                  textposition=["middle right", "middle right", "middle right", "bottom right"],
                  marker=dict(size=12, color=SAFE_COLOURS[2], line=dict(width=1, color="black")),
                  hovertemplate="%{text}<br>N = %{x:.3s}<br>D = %{y:.3s}<extra></extra>")
    N_opt, D_opt = CHINCHILLA.optimal(6 * N * D)
    chosen = [dict(type="scatter", x=[N], y=[D], mode="markers", name="your N, D",
                   marker=dict(symbol="star", size=18, color=SAFE_COLOURS[5], line=dict(width=1, color="black")),
                   hovertemplate="N = %{x:.3s}<br>D = %{y:.3s}<extra>your model</extra>"),
              dict(type="scatter", x=[N_opt], y=[D_opt], mode="markers", name="optimal at your C",
                   marker=dict(symbol="diamond", size=14, color=SAFE_COLOURS[0], line=dict(width=1, color="black")),
                   hovertemplate="N_opt = %{x:.3s}<br>D_opt = %{y:.3s}<extra>compute-optimal</extra>")]
    return figure([*lines, models, *chosen], title=dict(text="Parameters and training tokens of real models"),
                  height=480, margin=dict(t=50, l=60), legend=dict(orientation="h", y=-0.18),
                  xaxis=dict(**LOG, title=dict(text="parameters N"), range=[6, 13]),
                  yaxis=dict(**LOG, title=dict(text="training tokens D"), range=[8, 15.4]))
