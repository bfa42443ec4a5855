"""Drawing: figures as plain Plotly dicts laid out on a grid, lecture style, token chips and labels."""
from __future__ import annotations

import base64
import functools
import html
import importlib
import io
import pkgutil

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from PIL import Image

# Figures are written as plain Plotly dicts. Building them through Plotly's checked objects (go.Heatmap,
# make_subplots, update_xaxes) costs many times more than drawing them (README: Benchmarks), which a class on a
# 2-core Space feels; the tests check every figure against Plotly's schema.
MARGIN = dict(l=10, r=10, t=50, b=10)  # every figure's margins; a figure passes only the sides it changes


def figure(data: list[dict], **layout) -> go.Figure:
    """A figure from trace dicts (each with its "type") and layout keywords, left unchecked."""
    layout["margin"] = {**MARGIN, **layout.get("margin", {})}
    return go.Figure({"data": data, "layout": layout}, _validate=False)


# Plotly imports its figure and trace classes and its JSON writer lazily, on first use. Two handler threads
# making that first import at once can deadlock in Python's import locks, so the
# classes of every kind of trace the tabs draw (and that lecture style's checked copies build) are imported
# here, and the first figure drawn, at start, in the importing thread.
TRACE_KINDS = ("bar", "heatmap", "scatter", "scatter3d")
for package in [importlib.import_module(f"plotly.graph_objs.{kind}") for kind in (*TRACE_KINDS, "layout")]:
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
figure([dict(type=kind) for kind in TRACE_KINDS]).to_json()


@functools.cache
def scale(name: str) -> list:
    """A named colour scale as its stops: plotly.js knows some names with other colours (its RdBu runs the
    other way), so a dict figure spells them out, as Plotly's checked objects do."""
    return plotly.colors.get_colorscale(name)


def png(z: np.ndarray, colorscale: list, zmin: float, zmax: float, levels: int = 64) -> str:
    """A heatmap as a PNG data URI, one pixel per value, in `levels` colours of the scale, NaN white: for a figure
    with too many cells to send as numbers (an image trace's `source`): a PNG is a small fraction of the JSON
    of the same values (README: Benchmarks)."""
    stops = np.array([s for s, _ in colorscale])
    rgb = np.array([plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c, "rgb")[0][0])
                    for _, c in colorscale])
    palette = np.stack([np.interp(np.linspace(0, 1, levels), stops, rgb[:, c]) for c in range(3)], -1)
    t = (np.asarray(z, dtype=np.float64) - zmin) / (zmax - zmin)
    index = np.where(np.isnan(t), levels, np.clip(t, 0, 1) * (levels - 1) + 0.5).astype(np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette([*palette.round().astype(np.uint8).ravel().tolist(), 255, 255, 255])
    buffer = io.BytesIO()
    image.save(buffer, "png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def placeholder(text: str, height: int = 300, title: str = "") -> go.Figure:
    """A plot with nothing to draw yet (or ever): empty axes hidden, a light line saying what will appear here."""
    return figure([], title=dict(text=title), height=height, plot_bgcolor="#f9fafb", margin=dict(t=70 if title else 20),
                  xaxis=dict(visible=False), yaxis=dict(visible=False),
                  annotations=[dict(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                                    font=dict(size=16, color="#6b7280"))])


def grid(cols: int, rows: int = 1, titles=(), gap: tuple[float, float] = (0.04, 0.1), widths=None,
         x: dict | None = None, y: dict | None = None) -> dict:
    """The layout of rows x cols plots, as make_subplots draws it: axes x, x2, ... and y, y2, ... numbered
    row by row from the top left, each axis with the settings `x` or `y`, and the titles above the plots."""
    widths = widths or [1] * cols
    free_x, free_y = 1 - gap[0] * (cols - 1), 1 - gap[1] * (rows - 1)
    left = [sum(widths[:c]) / sum(widths) * free_x + c * gap[0] for c in range(cols)]
    height = free_y / rows
    layout, notes = {}, []
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        x_domain = [left[c], left[c] + widths[c] / sum(widths) * free_x]
        top = 1 - r * (height + gap[1])
        place = on(i)
        layout[axis("x", i)] = {**(x or {}), "domain": x_domain, "anchor": place["yaxis"]}
        layout[axis("y", i)] = {**(y or {}), "domain": [max(0.0, top - height), top], "anchor": place["xaxis"]}
        if i < len(titles):
            notes.append({"text": titles[i], "x": sum(x_domain) / 2, "y": top, "xref": "paper", "yref": "paper",
                          "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 16}})
    return {**layout, "annotations": notes} if notes else layout  # Plotly drops an empty list


def on(i: int) -> dict:
    """Where a trace goes in a grid: the i-th plot (0 = top left)."""
    return {"xaxis": f"x{i + 1 if i else ''}", "yaxis": f"y{i + 1 if i else ''}"}


def axis(letter: str, i: int) -> str:
    """The layout key of the i-th plot's x or y axis: axis("y", 0) is "yaxis", axis("y", 2) is "yaxis3"."""
    return f"{letter}axis{i + 1 if i else ''}"


# A scatter label's place beside its marker, as Plotly's textposition names it, and the direction it moves to
LABEL_SPOTS = {"top center": (0, 1), "bottom center": (0, -1), "middle right": (1, 0), "middle left": (-1, 0),
               "top right": (1, 1), "top left": (-1, 1), "bottom right": (1, -1), "bottom left": (-1, -1)}


def label_spots(points: np.ndarray, labels: list[str], size=(560, 380), char=(8, 18)) -> list[str | None]:
    """Where each point's label goes so that no two labels overlap, nor a label and another point's marker, nor does
    it run off the plot's sides: a textposition, or None where every spot is taken (that label is left to the hover).
    Estimated on a plot of about `size` pixels (the Embeddings plot's at 1280 wide, lecture mode) with `char` =
    (pixels per character, line height) as large as lecture type draws them: what fits there fits everywhere."""
    lo, span = points[:, :2].min(0), np.ptp(points[:, :2], 0)
    xy = (points[:, :2] - lo) / np.where(span > 0, span, 1) * size             # (N, 2) in pixels, y up
    taken = [(x - 5, y - 5, x + 5, y + 5) for x, y in xy]                      # the markers
    spots = []
    for (x, y), label in zip(xy, labels):
        w, h = char[0] * len(label), char[1]
        for name, (dx, dy) in LABEL_SPOTS.items():
            cx, cy = x + dx * (w / 2 + 6), y + dy * (h / 2 + 6)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            inside = -0.04 * size[0] <= box[0] and box[2] <= 1.04 * size[0]  # Plotly pads x about this, not for text
            if inside and all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in taken):
                taken.append(box)
                spots.append(name)
                break
        else:
            spots.append(None)
    return spots


def lecture_style(fig: go.Figure) -> go.Figure:
    """The same figure for a shared screen: larger type, black text, 25% taller, colour-blind-safe colours."""
    fig.update_layout(font=dict(size=17, color="#000000"), title_font_size=22, colorway=SAFE_COLOURS,
                      hoverlabel_font_size=17, legend_font_size=17, height=int((fig.layout.height or 450) * 1.25))
    fig.update_xaxes(tickfont_size=15, title_font_size=18, linecolor="#000000")
    fig.update_yaxes(tickfont_size=15, title_font_size=18, linecolor="#000000")
    for annotation in fig.layout.annotations:  # subplot titles
        annotation.font.size = 19
    for trace in fig.data:
        if "textfont" in trace:
            trace.textfont.size = 15
    return fig


# Colour-blind-safe qualitative colours (Okabe & Ito), with grey for black so text on them stays readable
SAFE_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]
PALETTE = ["#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc", "#e5e7eb"]


def chips_html(tokens, show_ids: bool = True, colours: list[str] | None = None, titles: list[str] | None = None,
               subs: list[str] | None = None) -> str:
    """Tokens as coloured chips: the readable piece, its id (or its entry of `subs`) below; special tokens dashed,
    unknown ones red."""
    chips = []
    for i, t in enumerate(tokens):
        colour = colours[i] if colours else PALETTE[i % len(PALETTE)]
        border = "2px solid #dc2626" if t.unknown else ("1px dashed #6b7280" if t.special else "1px solid #0000")
        title = titles[i] if titles else f"id {t.id}, characters {t.start}-{t.end}" + (" (unknown)" if t.unknown else "")
        below = html.escape(subs[i]) if subs else t.id if show_ids else None
        sub = f"<sub style='display:block;font-size:0.7em;color:#374151'>{below}</sub>" if below is not None else ""
        chips.append(f"<span title='{html.escape(title)}' style='display:inline-block;margin:2px;padding:2px 5px;"
                     f"border-radius:5px;background:{colour};border:{border};color:#111;font-family:monospace;"
                     f"unicode-bidi:isolate;text-align:center'>{html.escape(t.piece)}{sub}</span>")
    return "<div style='line-height:2.1'>" + "".join(chips) + "</div>"


def token_labels(tokens) -> list[str]:
    """'index:piece' axis labels: unique even when a token repeats (Plotly merges equal categories)."""
    return [f"{i}:{t.piece}" for i, t in enumerate(tokens)]


def piece(tokenizer, token_id: int) -> str:
    """A token as a short label: readable, with newlines and other escapes spelled out."""
    return repr(tokenizer.readable(int(token_id)))[1:-1] or "''"


def top_tokens(probs, tokenizer, k: int = 10) -> list[tuple[str, float, int]]:
    """(readable piece, probability, id) of the k most likely tokens."""
    top = probs.topk(k)
    return [(piece(tokenizer, i), float(p), int(i)) for p, i in zip(top.values, top.indices)]


def compare_figure(before, after, tokenizer, title: str, after_title: str) -> go.Figure:
    """Top-10 probabilities before and after an intervention, side by side; orange = in only one top-10."""
    b, a = top_tokens(before, tokenizer), top_tokens(after, tokenizer)
    ids_b, ids_a = {i for *_, i in b}, {i for *_, i in a}
    layout = grid(2, titles=["before", after_title], gap=(0.2, 0), y=dict(autorange="reversed", type="category"),
                  x=dict(tickformat=".0%", range=[0, max(b[0][1], a[0][1]) * 1.3]))
    bars = [dict(type="bar", x=[p for _, p, _ in rows], y=[t for t, _, _ in rows], orientation="h", showlegend=False,
                 text=[f"{p:.1%}" for _, p, _ in rows], textposition="outside", cliponaxis=False, **on(i),
                 marker=dict(color=["#2563eb" if token in other else "#f97316" for *_, token in rows]))
            for i, (rows, other) in enumerate([(b, ids_a), (a, ids_b)])]
    return figure(bars, **layout, title=dict(text=title), height=380, margin=dict(t=80))
