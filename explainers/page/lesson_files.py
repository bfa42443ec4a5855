"""Lesson files: a guided walk through the tabs for a lecture, read from a Markdown file in assets/lessons/.

A lesson is a list of steps; each step is a view (a tab with its model, text and settings: what a deep link
holds) and a few sentences of narration shown beside it (the panel: explainers.page.lessons).
`?lesson=tokens-to-sampling&step=5` opens a lesson at a step. The file format is in assets/lessons/README.md:

    # Title of the lesson
    model: smollm2-135m              <- settings for every step (a step's tab takes the keys it has)
    text: The cat sat on the mat

    ## Title of a step
    tab: attention                   <- the step's view: key: value lines under its heading
    layer: 3

    Narration: Markdown paragraphs, after a blank line.

A step that cannot be shown as written (no tab, an unknown tab or setting, a value its widget refuses) is
left out and named with its line in the lesson panel; the other steps run.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from core import paths
from explainers.page.links import read_view

LESSONS = Path(os.environ.get("EXPLAINER_LESSONS") or paths.LESSONS)
SETTING = re.compile(r"^([a-z_][a-z0-9_]*)\s*:\s*(.*?)\s*$")  # `key: value`; lower case, so "Note: ..." is prose
FENCE = re.compile(r"^\s*(```|~~~)")
FIGURE = ".js-plotly-plot"  # what a step scrolls to without a `focus:`: the first figure of its tab


@dataclass
class Step:
    title: str
    line: int                                   # the line of its `## ` heading
    settings: dict[str, tuple[str, int]]        # key -> (value as a link writes it, its line)
    narration: str
    query: str = ""                             # the view as a deep link's query string, once checked
    focus: str = ""                             # where the step scrolls to: a CSS selector, once checked


@dataclass
class Lesson:
    name: str                                   # the file's name without .md: `?lesson=name`
    title: str
    settings: dict[str, tuple[str, int]]        # for every step, under the title
    steps: list[Step]
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, sentence)


def _settings(lines: list[tuple[int, str]]) -> dict[str, tuple[str, int]] | None:
    """A paragraph of `key: value` lines as settings (a `view: ?tab=...` line gives each of its parameters),
    or None when some line is prose."""
    matches = [(number, SETTING.match(text)) for number, text in lines]
    if not matches or not all(m for _, m in matches):
        return None
    settings = {}
    for number, m in matches:
        key, value = m.groups()
        if key == "view":  # a link copied from the page ("Copy link to this view")
            query = value.split("?", 1)[-1]
            settings.update({k: (v[-1], number) for k, v in parse_qs(query, keep_blank_values=True).items()})
        else:
            settings[key] = (value, number)
    return settings


def _paragraphs(lines: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Lines split at blank lines (outside code fences)."""
    paragraphs, current, fenced = [], [], False
    for number, text in lines:
        if FENCE.match(text):
            fenced = not fenced
        if not text.strip() and not fenced:
            if current:
                paragraphs.append(current)
            current = []
        else:
            current.append((number, text))
    return paragraphs + ([current] if current else [])


def parse(text: str, name: str) -> Lesson:
    """A lesson file's title, lesson-wide settings and steps, with the line each came from. Pure: nothing is
    checked against the app here (see check)."""
    title, head, sections, fenced = name, [], [], False  # sections: (heading, its line, its lines)
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line[3:].strip(), number, []))
        elif not fenced and line.startswith("# ") and not sections and title == name:
            title = line[2:].strip()
        else:
            (sections[-1][2] if sections else head).append((number, line))
    problems = []
    first = _paragraphs(head)[:1]
    settings = (_settings(first[0]) if first else None) or {}
    steps = []
    for heading, number, lines in sections:
        paragraphs = _paragraphs(lines)
        step_settings = _settings(paragraphs[0]) if paragraphs else None
        if step_settings is None:
            problems.append((number, f"step “{heading}” has no settings: put `tab: ...` on the line under its title"))
            step_settings = {}
        else:
            paragraphs = paragraphs[1:]
        narration = "\n\n".join("\n".join(text for _, text in p) for p in paragraphs)
        steps.append(Step(heading or f"Step {len(steps) + 1}", number, step_settings, narration))
    if not sections:
        problems.append((1, "no steps: each step starts with a `## ` heading"))
    return Lesson(name, title, settings, steps, problems)


def check(lesson: Lesson, links: dict, tabs) -> Lesson:
    """The lesson with only the steps that can be shown as written, each with its view's query string, and a
    sentence with its line for every setting that cannot be used. Checked by the same read_view as a deep link:
    the tab exists (`tabs`: the page's tab ids), the model is available here, each value fits its widget."""
    problems = list(lesson.problems)
    keys = {key.split(".", 1)[1] for key in links}
    for key, (_, line) in lesson.settings.items():
        if key not in keys | {"model"}:
            problems.append((line, f"no tab has a setting {key!r}"))
    steps = []
    for step in lesson.steps:
        if not step.settings:
            continue  # already reported by parse
        tab = step.settings.get("tab", ("", step.line))[0]
        shared = {k: v for k, v in lesson.settings.items() if k == "model" or f"{tab}.{k}" in links}
        settings = {**shared, **step.settings}  # the step's own settings win
        focus, focus_line = settings.pop("focus", ("", 0))
        said = [(line, f"step “{step.title}”: {sentence}") for sentence, line in _refusals(settings, links, tabs)]
        if "tab" not in settings:
            said.append((step.line, f"step “{step.title}” names no tab: add a `tab: ...` line"))
        if focus and f"{tab}.{focus}" not in links:
            said.append((focus_line, f"step “{step.title}”: focus {focus!r} is not a setting of the {tab} tab"))
        problems += said
        if not said:
            steps.append(replace(step, query="?" + urlencode({k: v for k, (v, _) in settings.items()}),
                                 focus=f"#{links[f'{tab}.{focus}'].elem_id}" if focus else f"#tab-{tab} {FIGURE}"))
    return replace(lesson, steps=steps, problems=sorted(problems))


def _refusals(settings: dict[str, tuple[str, int]], links: dict, tabs) -> list[tuple[str, int]]:
    """(sentence, line) for each setting a deep link would not use."""
    said = [("lecture mode is the viewer's choice, not the lesson's", settings["lecture"][1])] \
        if "lecture" in settings else []
    view = read_view("?" + urlencode({k: v for k, (v, _) in settings.items() if k != "lecture"}), links, tabs)
    return said + [(sentence, settings.get(key, ("", 0))[1]) for key, sentence in view.problems]


def available(folder: Path = LESSONS) -> dict[str, Path]:
    """The lessons in the folder: name -> file (only these can be opened: a name from a link is looked up here)."""
    return {path.stem: path for path in sorted(folder.glob("*.md")) if path.name != "README.md"}


def load(name, links: dict, tabs, folder: Path = LESSONS) -> Lesson | None:
    """The named lesson read now (an edit to its file shows at the next step), checked; None if there is none."""
    path = available(folder).get(name) if isinstance(name, str) else None
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return Lesson(name, name, {}, [], [(0, f"the file cannot be read ({type(e).__name__})")])
    return check(parse(text, name), links, tabs)


def lesson_link(query) -> tuple[str | None, int, str]:
    """(lesson name, step index from 0, lecture parameter or "") of a query string `?lesson=name&step=k`."""
    params = {k: v[-1] for k, v in parse_qs(str(query or "").lstrip("?")).items()}
    try:
        index = int(params.get("step", "1")) - 1
    except ValueError:
        index = 0
    return params.get("lesson"), index, params.get("lecture", "")


def report(lesson: Lesson) -> str:
    """The lesson's problems as a note: each with its line in the file."""
    if not lesson.problems:
        return ""
    lines = [f"- line {line}: {sentence}" for line, sentence in lesson.problems]
    return (f"**{lesson.name}.md** has steps or settings that cannot be shown as written; these steps are left "
            "out, the others run:\n" + "\n".join(lines))
