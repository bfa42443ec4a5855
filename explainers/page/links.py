"""Deep links: the page's query string restores the tab, the model, lecture mode and the tab's settings.

A link looks like `?tab=attention&model=smollm2-135m&text=The+cat&layer=3&head=2`; a model may be named by its hub
id (`model=Qwen/Qwen3-0.6B`), as in the picker. Each tab registers the settings a link carries in its View's `links`
(explainers.page.tab); a setting that does not fit its widget is left at its default and named in a note, never an
error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

import gradio as gr

from core.inputs import MAX_CHARS, InputError, strip_controls
from core.weights import hub, zoo
from explainers.page.inputs import model_choices


def _choices(component) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in (getattr(component, "choices", None) or [])]


def parse_value(component, raw: str):
    """The text of a link parameter as a value for its widget; ValueError (saying what fits) when it does not."""
    if isinstance(component, (gr.Slider, gr.Number)):
        low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
        fits = "a number" + (f" from {low:g} to {high:g}" if low is not None and high is not None else "")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(fits) from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(fits)
        return int(value) if value.is_integer() else value
    if isinstance(component, gr.CheckboxGroup) or (isinstance(component, gr.Dropdown) and component.multiselect):
        values = [v for v in raw.split(",") if v]
        allowed = _choices(component)
        if allowed and any(v not in allowed for v in values):  # empty choices: filled per model at load
            raise ValueError("some of " + ", ".join(map(str, allowed[:12])))
        return values
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        if raw not in _choices(component):
            raise ValueError("one of " + ", ".join(map(str, _choices(component)[:12])))
        return raw
    if isinstance(component, gr.Checkbox):
        if raw not in ("0", "1"):
            raise ValueError("0 or 1")
        return raw == "1"
    if isinstance(component, gr.Textbox):
        if len(raw) > MAX_CHARS:
            raise ValueError(f"at most {MAX_CHARS} characters")
        return strip_controls(raw)
    raise ValueError


def link_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


@dataclass
class LinkedView:
    """What a query string asks for, checked: the tab, the model, lecture mode and the settings that fit their
    widgets (`"tab.key" -> value`), and what could not be used as (parameter, sentence)."""
    tab: str | None
    model: str | None
    lecture: bool
    values: dict = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def read_view(query: str, links: dict, tabs, lecture_default: bool = False) -> LinkedView:
    """The view a query string asks for, each parameter checked against the tabs (`tabs`: their ids), the models
    available here and the linked widgets. What restore() shows, and what a lesson checks its steps with."""
    params = {k: v[-1] for k, v in parse_qs(str(query or "").lstrip("?"), keep_blank_values=True).items()}
    view = LinkedView(None, None, lecture_default)
    tab = params.pop("tab", None)
    if tab is not None and tab not in tabs:
        view.problems.append(("tab", f"no tab {tab!r}"))
        tab = None
    view.tab = tab
    model = params.pop("model", None)
    names = [name for _, name in model_choices()]
    if model is not None and model not in names and hub.is_hub_id(model):
        try:  # a model by its hub id: added to the zoo if it passes the checks; it loads when a tab draws
            model = zoo.add_hub_model(model)
            names = [name for _, name in model_choices()]
        except InputError as refused:
            view.problems.append(("model", str(refused).rstrip(".")))
            model = None
    if model is not None and model not in names:
        view.problems.append(("model", f"model {model!r} is not available here (choose one of {', '.join(names)})"))
        model = None
    view.model = model
    if "lecture" in params:
        raw = params.pop("lecture")
        if raw in ("0", "1"):
            view.lecture = raw == "1"
        else:
            view.problems.append(("lecture", "lecture must be 0 or 1"))
    for key, raw in params.items():
        component = links.get(f"{tab}.{key}")
        if component is None:
            view.problems.append((key, f"unknown setting {key!r}" + ("" if tab else " (no tab given)")))
            continue
        try:
            view.values[f"{tab}.{key}"] = parse_value(component, raw)
        except (ValueError, TypeError) as fits:
            reason = f" (it takes {fits})" if str(fits) else ""
            view.problems.append((key, f"{key}={raw[:40]!r} does not fit {getattr(component, 'label', key)!r}{reason}"))
    return view


@dataclass
class Restored:
    """What the page shows for a link: the chapter and tab to select (None: stay on the first), the model, lecture
    mode, a note naming what could not be used, and the linked widgets' values (`"tab.key" -> update`)."""
    chapter: str | None
    tab: str | None
    model: str
    lecture: bool
    note: str
    values: dict = field(default_factory=dict)


def restore(query: str, links: dict, chapters: dict[str, list[str]], default_model: str,
            lecture_default: bool = False) -> Restored:
    """The view a query string restores. `chapters` maps each chapter's id to its tabs' ids, in the page's order;
    the linked tab is selected in its chapter's row and that chapter in the chapter row."""
    chapter_of = {t: chapter for chapter, tab_ids in chapters.items() for t in tab_ids}
    view = read_view(query, links, chapter_of, lecture_default)
    note = ("This link had settings that could not be used, so their defaults are shown: "
            + "; ".join(sentence for _, sentence in view.problems) + ".") if view.problems else ""
    return Restored(chapter_of.get(view.tab), view.tab, view.model or default_model, view.lecture, note,
                    {k: as_update(links[k], v) for k, v in view.values.items()})


def as_update(component, value):
    if isinstance(component, gr.Dropdown) and component.multiselect:  # its choices come with the model, later
        return gr.Dropdown(choices=list(dict.fromkeys(_choices(component) + value)), value=value)
    return value


def make_query(tab: str, model: str, lecture: bool, values: dict[str, object], lecture_default: bool = False) -> str:
    """The query string of a link to this view: the tab, the model and that tab's settings."""
    params = {"tab": tab, "model": model}
    if bool(lecture) != lecture_default:
        params["lecture"] = "1" if lecture else "0"
    prefix = f"{tab}."
    params.update({k[len(prefix):]: link_text(v) for k, v in values.items() if k.startswith(prefix)})
    return "?" + urlencode(params)


def view_link(tab: str, model: str, **settings) -> str:
    """The query string of a link to a tab with these settings: what a figure's clickable parts open
    (the page's script follows it, adding the lecture setting on screen)."""
    return "?" + urlencode({"tab": tab, "model": model, **{k: link_text(v) for k, v in settings.items()}})
