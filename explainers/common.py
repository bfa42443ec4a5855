"""Shared by all tabs: the model picker, bad-input handling and figure styling."""
from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import logging
import threading
import textwrap
import unicodedata

import gradio as gr
import plotly.colors
import plotly.graph_objects as go
import torch

from core import zoo
from core.lens import stream_names

log = logging.getLogger("explainer")
MAX_CHARS = 2000


def model_choices() -> list[tuple[str, str]]:
    """(label, name) for every model that can load here."""
    return [(f"{name} — {zoo.SPECS[name].title}", name) for name, problem in zoo.available().items() if problem is None]


def unavailable_note() -> str:
    missing = [f"- **{name}**: {problem}" for name, problem in zoo.available().items() if problem]
    return ("Not available here:\n" + "\n".join(missing)) if missing else ""


def get_model(name: str, device: str | None = None):
    if not name:
        raise gr.Error("Choose a model first.")
    try:
        return zoo.load(name, device)
    except (zoo.MissingSource, KeyError, ValueError) as e:
        raise gr.Error(str(e).strip("'\"")) from None


def strip_controls(text: str) -> str:
    """Without control characters (NUL and friends carry no meaning to a tokenizer and break some); newlines
    and tabs stay."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def clean_text(text: str | None, max_chars: int = MAX_CHARS) -> tuple[str, str]:
    """(text fit for a model, a notice for the user or ''). Raises gr.Error when nothing is left."""
    if text is None or not str(text).strip():
        raise gr.Error("Type some text first: the input is empty.")
    text = str(text)
    notices = []
    kept = strip_controls(text)
    if kept != text:
        notices.append(f"removed {len(text) - len(kept)} control character(s)")
    if len(kept) > max_chars:
        notices.append(f"used the first {max_chars} of {len(kept)} characters")
        kept = kept[:max_chars]
    if not kept.strip():
        raise gr.Error("The input has only control characters; type some text.")
    return kept, ("Note: " + "; ".join(notices) + ".") if notices else ""


@contextlib.contextmanager
def _plain_errors(name: str):
    try:
        yield
    except gr.Error as e:  # a refusal of bad input, not a failure: no traceback in the server's log
        e.print_exception = False
        raise
    except (ValueError, KeyError, zoo.MissingSource) as e:
        raise gr.Error(str(e).strip("'\""), print_exception=False) from None
    except Exception as e:  # a bug: log it for us (once, with its traceback), say it plainly to the user
        log.exception("handler %s failed", name)
        raise gr.Error(f"Something went wrong ({type(e).__name__}). Try a shorter input or another model.",
                       print_exception=False) from None


def friendly(fn):
    """Turn any failure in a handler (a function or a generator) into a plain message instead of a traceback,
    and draw its figures in lecture style for a session in lecture mode.

    Gradio passes a handler the session's gr.Request when its signature asks for one; the wrapper asks for it
    (and hands it on only to a handler that wants it)."""
    wants_request = "request" in inspect.signature(fn).parameters

    def split(args, kwargs):
        request = kwargs.pop("request", None) if not wants_request else kwargs.get("request")
        for a in args:
            if isinstance(a, gr.Request):
                request = a
        if not wants_request:
            args = tuple(a for a in args if not isinstance(a, gr.Request))
        return args, kwargs, request

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            args, kwargs, request = split(args, kwargs)
            with _plain_errors(fn.__name__):
                for result in fn(*args, **kwargs):
                    yield styled(result, request)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            args, kwargs, request = split(args, kwargs)
            with _plain_errors(fn.__name__):
                return styled(fn(*args, **kwargs), request)

    if not wants_request:
        signature = inspect.signature(fn)
        extra = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)
        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
        wrapper.__annotations__ = {**fn.__annotations__, "request": gr.Request}
    return wrapper


def shared(maxsize: int = 32, key=lambda args: args):
    """Like functools.lru_cache, and a call that arrives while the same call is running waits for that answer
    instead of computing it again: a class pressing the same example at once runs the model once.
    Answers are shared, so nothing may change them afterwards. Errors are not kept; a call whose key is
    None is not kept either."""
    def decorate(fn):
        answers: collections.OrderedDict = collections.OrderedDict()
        running: dict[tuple, threading.Event] = {}
        lock = threading.Lock()

        @functools.wraps(fn)
        def wrapper(*args):
            k = key(args)
            if k is None:
                return fn(*args)
            with lock:
                if k in answers:
                    answers.move_to_end(k)
                    return answers[k]
                first = k not in running
                done = running.setdefault(k, threading.Event())
            if not first:
                done.wait()
                return wrapper(*args)  # remembered now, or the first call failed and this one tries
            try:
                answer = fn(*args)
                with lock:
                    answers[k] = answer
                    if len(answers) > maxsize:
                        answers.popitem(last=False)
                return answer
            finally:
                with lock:
                    del running[k]
                done.set()

        wrapper.cache_clear = answers.clear
        return wrapper
    return decorate


def _handler_key(args: tuple) -> tuple | None:
    """A handler's arguments as a cache key: lists (a multi-select) become tuples, a progress bar (new for every
    call) is left out; None when one cannot be a key."""
    key = tuple(tuple(a) if isinstance(a, list) else a for a in args if not isinstance(a, gr.Progress))
    try:
        hash(key)
    except TypeError:
        return None
    return key


@shared(4)
def trace(model_name: str, ids: tuple[int, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward of these token ids for every tab that reads them (attention heads, LM head, embeddings), so a
    text opened in another tab does not run the model again: the logits (T, V) and the hook values those tabs
    draw (Q and K as the scores use them, V, patterns, z, the residual stream), batch dimension dropped."""
    model = get_model(model_name)
    qk = ("hook_rot_q", "hook_rot_k") if model.cfg.positions == "rope" else ("hook_q", "hook_k")
    stream = set(stream_names(model.cfg.n_layers))
    logits, cache = model.run_with_cache(torch.tensor([ids], device=model.device),
                                         names=lambda n: n.endswith((*qk, "hook_v", "hook_pattern", "hook_z")) or n in stream)
    return logits[0].float().cpu(), {name: value[0].cpu() for name, value in cache.items()}


def remembered(fn):
    """Keep the last 32 answers of a handler whose answer depends only on its arguments (lecture mode styles
    a copy of the figures)."""
    keep = shared(32, key=_handler_key)(fn)
    _remembered.append(keep)
    return keep


_remembered: list = []


def forget_answers() -> None:
    """Drop every remembered answer (benchmarks time the work, not the memory)."""
    for handler in _remembered:
        handler.cache_clear()


# Figures are written as plain Plotly dicts. Building them through Plotly's checked objects (go.Heatmap,
# make_subplots, update_xaxes) costs 10-40 times more than drawing them (a layer's 9 heatmaps: 160 ms checked,
# 8 ms as dicts), which a class of 16 on a 2-core Space feels; the tests check every figure against Plotly's schema.
def figure(data: list[dict], **layout) -> go.Figure:
    """A figure from trace dicts (each with its "type") and layout keywords, left unchecked."""
    return go.Figure({"data": data, "layout": layout}, _validate=False)


# Plotly imports its figure and trace classes and its JSON writer lazily, on first use. Two handler threads
# making that first import at once can deadlock in Python's import locks (it happened under load), so the
# first figure is drawn here, at start, in the importing thread.
figure([dict(type=kind) for kind in ("bar", "heatmap", "scatter", "scatter3d")]).to_json()


@functools.cache
def scale(name: str) -> list:
    """A named colour scale as its stops: plotly.js knows some names with other colours (its RdBu runs the
    other way), so a dict figure spells them out, as Plotly's checked objects do."""
    return plotly.colors.get_colorscale(name)


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
        layout[axis("y", i)] = {**(y or {}), "domain": [top - height, top], "anchor": place["xaxis"]}
        if i < len(titles):
            notes.append({"text": titles[i], "x": sum(x_domain) / 2, "y": top, "xref": "paper", "yref": "paper",
                          "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 16}})
    return {**layout, "annotations": notes}


def on(i: int) -> dict:
    """Where a trace goes in a grid: the i-th plot (0 = top left)."""
    return {"xaxis": f"x{i + 1 if i else ''}", "yaxis": f"y{i + 1 if i else ''}"}


def axis(letter: str, i: int) -> str:
    """The layout key of the i-th plot's x or y axis: axis("y", 0) is "yaxis", axis("y", 2) is "yaxis3"."""
    return f"{letter}axis{i + 1 if i else ''}"


# Lecture mode: larger type, high contrast. `app.py --lecture` makes it the default; a session's own
# choice (the toggle, or lecture=1 / lecture=0 in its link) overrides that.
LECTURE = {"default": False}
_lecture_sessions: dict[str, bool] = {}


def set_lecture(request: gr.Request | None, on: bool) -> None:
    session = getattr(request, "session_hash", None)
    if session is None:
        return
    if bool(on) == LECTURE["default"]:
        _lecture_sessions.pop(session, None)
    else:
        _lecture_sessions[session] = bool(on)


def lecture_on(request: gr.Request | None) -> bool:
    return _lecture_sessions.get(getattr(request, "session_hash", None), LECTURE["default"])


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


def styled(result, request: gr.Request | None):
    if not lecture_on(request):
        return result
    if isinstance(result, go.Figure):
        return lecture_style(go.Figure(result))  # a copy: the plain answer may be remembered and shared
    if isinstance(result, (tuple, list)):
        return type(result)(lecture_style(go.Figure(r)) if isinstance(r, go.Figure) else r for r in result)
    return result


def code_panel(*functions) -> None:
    """A closed panel with the source of the core functions that made a tab's figures, read from the running code."""
    with gr.Accordion("Code: the core functions behind these figures", open=False):
        for f in functions:
            gr.Code(textwrap.dedent(inspect.getsource(f)), language="python", label=f"{f.__module__}.{f.__qualname__}",
                    interactive=False)


# Deep links: each tab registers the settings a link restores, as "tab.key" -> component.
LINKS: dict[str, gr.components.Component] = {}


def linked(tab: str, **components) -> None:
    for key, component in components.items():
        LINKS[f"{tab}.{key}"] = component


# Colour-blind-safe qualitative colours (Okabe & Ito), with grey for black so text on them stays readable
SAFE_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]
PALETTE = ["#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc", "#e5e7eb"]


def chips_html(tokens, show_ids: bool = True, colours: list[str] | None = None, titles: list[str] | None = None) -> str:
    """Tokens as coloured chips: the readable piece, its id below; special tokens dashed, unknown ones red."""
    import html
    chips = []
    for i, t in enumerate(tokens):
        colour = colours[i] if colours else PALETTE[i % len(PALETTE)]
        border = "2px solid #dc2626" if t.unknown else ("1px dashed #6b7280" if t.special else "1px solid #0000")
        title = titles[i] if titles else f"id {t.id}, characters {t.start}-{t.end}" + (" (unknown)" if t.unknown else "")
        sub = f"<sub style='display:block;font-size:0.7em;color:#374151'>{t.id}</sub>" if show_ids else ""
        chips.append(f"<span title='{html.escape(title)}' style='display:inline-block;margin:2px;padding:2px 5px;"
                     f"border-radius:5px;background:{colour};border:{border};color:#111;font-family:monospace;"
                     f"unicode-bidi:isolate;text-align:center'>{html.escape(t.piece)}{sub}</span>")
    return "<div style='line-height:2.1'>" + "".join(chips) + "</div>"


def clamp_setting(name: str, value, low: int, high: int) -> tuple[int, str]:
    """(value as an int within [low, high], a notice if it had to move). Non-numbers are refused."""
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # None, text, NaN, infinity
        raise gr.Error(f"The {name} must be a number between {low} and {high}.") from None
    clamped = min(max(number, low), high)
    return clamped, "" if clamped == number else f"The {name} was {number}; this model allows {low} to {high}, so {clamped} is shown."


def as_text(value) -> str:
    """What a text box sent, as a string (an API client may send None or a number)."""
    return "" if value is None else str(value)


def join_notes(*notes: str) -> str:
    return " ".join(n for n in notes if n)


def range_sliders(model_name: str, blocks_plus_one: bool = False):
    """Layer and head sliders fitted to the model (layer 0..L when the embeddings count as a layer)."""
    try:
        cfg = get_model(model_name).cfg
    except gr.Error:
        return gr.Slider(), gr.Slider()
    top = cfg.n_layers if blocks_plus_one else cfg.n_layers - 1
    return gr.Slider(maximum=top), gr.Slider(maximum=cfg.n_heads - 1)


def examples(rows: list[list], inputs: list, then_fn, fn_inputs: list, outputs) -> gr.Examples:
    """gr.Examples that, once an example fills the inputs, runs the tab's update with all its settings."""
    ex = gr.Examples(rows, inputs=inputs)
    ex.load_input_event.then(then_fn, fn_inputs, outputs)
    return ex


def token_labels(tokens) -> list[str]:
    """'index:piece' axis labels: unique even when a token repeats (Plotly merges equal categories)."""
    return [f"{i}:{t.piece}" for i, t in enumerate(tokens)]


def prediction_position(model, ids) -> int:
    """Where a tab reads the model's prediction: the first [MASK] for a masked LM, else the last token."""
    mask_id = getattr(model.tokenizer, "mask_id", None)
    if model.cfg.head == "mlm" and mask_id in ids:
        return list(ids).index(mask_id)
    return len(ids) - 1


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
    return figure(bars, **layout, title=dict(text=title), height=380, margin=dict(l=10, r=10, t=80, b=10))
