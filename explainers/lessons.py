"""Lesson mode: a guided walk through the tabs for a lecture, read from a Markdown file in assets/lessons/.

A lesson is a list of steps; each step is a view (a tab with its model, text and settings: what a deep link
holds) and a few sentences of narration shown beside it. Next / Back (or the arrow keys) apply a step through
the same restore() as a deep link, and the tabs' page-load handlers follow, so the figures redraw for it.
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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import gradio as gr

from explainers import TABS, tab_id
from explainers.links import read_view
from explainers.serving import Chain, plain_errors

LESSONS = Path(os.environ.get("EXPLAINER_LESSONS") or Path(__file__).resolve().parent.parent / "assets" / "lessons")
SETTING = re.compile(r"^([a-z_][a-z0-9_]*)\s*:\s*(.*?)\s*$")  # `key: value`; lower case, so "Note: ..." is prose
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class Step:
    title: str
    line: int                                   # the line of its `## ` heading
    settings: dict[str, tuple[str, int]]        # key -> (value as a link writes it, its line)
    narration: str
    query: str = ""                             # the view as a deep link's query string, once checked


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
        said = [(line, f"step “{step.title}”: {sentence}") for sentence, line in _refusals(settings, links, tabs)]
        if "tab" not in settings:
            said.append((step.line, f"step “{step.title}” names no tab: add a `tab: ...` line"))
        problems += said
        if not said:
            steps.append(replace(step, query="?" + urlencode({k: v for k, (v, _) in settings.items()})))
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


def _position(state) -> tuple[str | None, int]:
    """(lesson name, step index) of a session's lesson state, or (None, 0) when no lesson runs."""
    if isinstance(state, dict) and isinstance(state.get("lesson"), str) and isinstance(state.get("step"), int):
        return state["lesson"], state["step"]
    return None, 0


class LessonPanel:
    """A sidebar: a lesson picker and Start, then the step's narration with Back / Next (and the arrow keys,
    assets/web/export.js). Built where the page wants it (build); wire() then connects it to the page's
    restore function, whose outputs a step updates, and to the tabs' page-load handlers, which follow."""

    def __init__(self, page, folder: Path = LESSONS):
        self.page, self.folder, self.restored = page, folder, None
        self.tabs = [tab_id(module) for module in TABS]
        choices = self.choices()
        with gr.Row(elem_classes="lesson-launcher") as self.launcher:  # hidden while a lesson runs
            self.picker = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Lesson",
                                      show_label=False, container=False, scale=4)
            self.start = gr.Button("Start the lesson", variant="primary", scale=1, min_width=160, elem_id="lesson-start")
        with gr.Sidebar(label="Lesson", open=False, position="right", width=340, elem_id="lesson") as self.sidebar:
            with gr.Row(visible=False) as self.nav:  # first: the narration below may be long, these stay in place
                self.back = gr.Button("← Back", elem_id="lesson-back", min_width=80)
                self.next = gr.Button("Next →", variant="primary", elem_id="lesson-next", min_width=80)
            self.heading = gr.Markdown(elem_classes="lesson-heading")
            self.narration = gr.Markdown(elem_classes="lesson-narration")
            self.end = gr.Button("End the lesson", size="sm", visible=False)
            self.report = gr.Markdown(elem_classes="lesson-report")
        self.state = gr.State(None)  # {"lesson": name, "step": index from 0} while a lesson runs
        self.query = gr.Textbox(visible=False)  # the page's query string, read at load
        self.panel = [self.state, self.picker, self.launcher, self.heading, self.narration, self.nav, self.back,
                      self.next, self.end, self.report, self.sidebar]

    def choices(self) -> list[tuple[str, str]]:
        """(title, name) of each lesson in the folder."""
        found = []
        for name, path in available(self.folder).items():
            try:
                found.append((parse(path.read_text(encoding="utf-8"), name).title, name))
            except (OSError, UnicodeDecodeError):
                found.append((name, name))
        return found

    def load(self, name) -> Lesson | None:
        return load(name, self.page.links, self.tabs, self.folder)

    def view_query(self, query) -> str:
        """The query string of the view a lesson link opens (`?lesson=name&step=k` -> that step's view, keeping
        the link's lecture setting); any other query string as it is."""
        name, index, lecture = lesson_link(query)
        if name is None:
            return str(query or "")
        lesson = self.load(name)
        steps = lesson.steps if lesson else []
        view = steps[min(max(index, 0), len(steps) - 1)].query if steps else "?"
        return view + (f"&lecture={lecture}" if lecture else "")

    def link(self, state, lecture: bool, lecture_default: bool = False) -> str | None:
        """The query string of a link to the running lesson's step, or None when no lesson runs."""
        name, index = _position(state)
        if name is None:
            return None
        params = {"lesson": name, "step": index + 1}
        if bool(lecture) != lecture_default:
            params["lecture"] = "1" if lecture else "0"
        return "?" + urlencode(params)

    def shown(self, lesson: Lesson | None, index: int, name=None) -> dict:
        """Updates for the panel showing the lesson at a step (or why it cannot)."""
        closed = {self.state: None, self.launcher: gr.Row(visible=True), self.nav: gr.Row(visible=False),
                  self.end: gr.Button(visible=False), self.sidebar: gr.Sidebar(open=True)}
        if lesson is None:
            names = ", ".join(available(self.folder)) or "none"
            return {**closed, self.heading: "", self.narration: "",
                    self.report: f"There is no lesson {str(name)[:60]!r} here (lessons: {names})."}
        if not lesson.steps:
            return {**closed, self.heading: f"### {lesson.title}", self.report: report(lesson),
                    self.narration: "This lesson has no step that can be shown."}
        index = min(max(index, 0), len(lesson.steps) - 1)
        step, n = lesson.steps[index], len(lesson.steps)
        return {self.state: {"lesson": lesson.name, "step": index}, self.picker: lesson.name,
                self.launcher: gr.Row(visible=False), self.heading: f"**Step {index + 1} of {n}** · {lesson.title}\n"
                f"### {step.title}", self.narration: step.narration, self.nav: gr.Row(visible=True),
                self.back: gr.Button(interactive=index > 0), self.next: gr.Button(interactive=index < n - 1),
                self.end: gr.Button(visible=True), self.report: report(lesson), self.sidebar: gr.Sidebar(open=True)}

    def go(self, name, state, model, lecture, event: gr.EventData = None) -> dict:
        """Start, Next or Back: the step's view (through the page's restore), the panel showing it, and a new count
        for the redraw it needs (its tab's, or every tab's when the model changes)."""
        with plain_errors("lesson"):
            here, index = _position(state)
            # the button by its elem_id: event.target is the session's copy of it, made by the last update it got
            pressed = getattr(getattr(event, "target", None), "elem_id", None)
            if pressed not in ("lesson-start", "lesson-next", "lesson-back"):  # not pressed: nothing to do
                return {self.state: gr.skip()}
            if pressed == "lesson-start" or here is None:
                lesson, index = self.load(name), 0
            else:
                name = here
                lesson, index = self.load(name), index + (1 if pressed == "lesson-next" else -1)
            panel = self.shown(lesson, index, name)
            if panel[self.state] is None:
                return panel
            step = lesson.steps[panel[self.state]["step"]]
            updates = dict(zip(self.view_outputs, self.restored(step.query + f"&lecture={int(bool(lecture))}")))
            params = parse_qs(step.query[1:])
            tab = params["tab"][0]
            same_model = updates[self.page.model] == model
            return {**updates, **panel, self.redraw[tab if same_model else "*"]: time.monotonic_ns()}

    def opened(self, query) -> dict:
        """At page load: the lesson a link names, shown at its step; the picker lists the lessons there are now."""
        with plain_errors("lesson"):
            name, index, _ = lesson_link(query)
            panel = self.shown(self.load(name), index, name) if name is not None else {}
            picked = {"value": panel[self.picker]} if self.picker in panel else {}
            return {**panel, self.picker: gr.Dropdown(choices=self.choices(), **picked)}

    def ended(self) -> dict:
        return {self.state: None, self.launcher: gr.Row(visible=True), self.heading: "", self.narration: "",
                self.nav: gr.Row(visible=False), self.end: gr.Button(visible=False), self.report: ""}

    def wire(self, restored, restoring, view_outputs: list) -> None:
        """Connect the panel to the page: `restored(query)` gives the updates of `view_outputs` for a query string
        (the page's restore), `restoring` is the page-load event that restores a link.

        A step is applied like a link at load, then the tabs' page-load handlers (page.loaded) redraw it: only the
        step's own tab's handlers when the model stays (the other tabs still show their own settings, right for the
        model), all of them when the step changes the model. Each runs on a change of a per-session counter."""
        self.restored, self.view_outputs = restored, view_outputs
        self.redraw = {tab: gr.State(0) for tab in [*self.tabs, "*"]}  # "*": every tab
        restoring.then(self.opened, self.query, self.panel, js="() => [window.location.search]", queue=False,
                       api_visibility="private")
        stepped = gr.on([self.start.click, self.next.click, self.back.click], self.go,
                        [self.picker, self.state, self.page.model, self.page.lecture],
                        [*view_outputs, *self.panel, *self.redraw.values()], concurrency_limit=None,
                        api_visibility="undocumented")  # queued: a State set by an unqueued event fires no change
        stepped.then(None, js=SCROLL_TO_TABS)
        own = {tab: Chain(self.page) for tab in self.tabs}
        for how, kwargs, child in self.page.loaded.followers:
            outputs = kwargs["outputs"] if isinstance(kwargs["outputs"], (list, tuple)) else [kwargs["outputs"]]
            tab = _tab_of(outputs[0] if outputs else None, self.tabs)
            if tab is not None:
                own[tab].followers.append((how, kwargs, child))
        for tab, chain in [*own.items(), ("*", self.page.loaded)]:
            chain.attach(self.redraw[tab].change(None, None, None, queue=False, api_visibility="undocumented"))
        self.end.click(self.ended, None, self.panel, queue=False, api_visibility="undocumented")


# the step's tab at the top of the screen, once the page has laid it out (a chapter switch redraws the rows)
SCROLL_TO_TABS = "() => { setTimeout(() => document.querySelector('.chapters')?.scrollIntoView({block: 'start'}), 150) }"


def _tab_of(block, tabs) -> str | None:
    """The id of the tab a component is drawn in (its nearest gr.Tab whose id is a tab's), or None."""
    while block is not None:
        if isinstance(block, gr.Tab) and block.id in tabs:
            return block.id
        block = getattr(block, "parent", None)
    return None


def build(page, folder: Path = LESSONS) -> LessonPanel:
    """The lesson sidebar; call its wire() once the page's restore event exists."""
    return LessonPanel(page, folder)
