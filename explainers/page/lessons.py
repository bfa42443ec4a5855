"""Lesson mode: a sidebar that walks a lecture through the tabs, one step (a view and its narration) at a time.

Start, Next and Back (or the arrow keys, assets/web/export.js) show a step's narration and hand its view, as a
deep link's query string, to the page, which applies it the way it applies a link at load
(explainers.page.views); the lesson files themselves are read by explainers.page.lesson_files.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import gradio as gr

from explainers.page.lesson_files import LESSONS, Lesson, available, lesson_link, load, parse, report
from explainers.page.serving import plain_errors

# The step's figure (or its `focus:` widget) at the top of the screen, once the page has shown its tab; again as the
# figures above it draw and move it, unless the viewer scrolled meanwhile.
SCROLL_TO_FIGURE = """(focus) => {
  let placed = null;
  const place = () => {
    if (placed !== null && Math.abs(window.scrollY - placed) > 4) return;  // the viewer scrolled: leave it
    const target = [...document.querySelectorAll(focus)].find((e) => e.offsetParent !== null);
    if (!target) return;
    window.scrollTo({top: Math.max(0, window.scrollY + target.getBoundingClientRect().top - 8)});
    placed = window.scrollY;
  };
  [150, 800, 2000, 4000].forEach((ms) => setTimeout(place, ms));
}"""
BUTTONS = ("lesson-start", "lesson-next", "lesson-back")


def _position(state) -> tuple[str | None, int]:
    """(lesson name, step index) of a session's lesson state, or (None, 0) when no lesson runs."""
    if isinstance(state, dict) and isinstance(state.get("lesson"), str) and isinstance(state.get("step"), int):
        return state["lesson"], state["step"]
    return None, 0


class LessonPanel:
    """A lesson picker and Start above the page, and a sidebar with the step's narration and Back / Next.
    `links` and `tabs` (the page's linked widgets and tab ids, which lessons are checked against) are set once
    the tabs are built."""

    def __init__(self, model: gr.Dropdown, lecture: gr.Checkbox, folder: Path = LESSONS):
        self.model, self.lecture, self.folder = model, lecture, folder
        self.links, self.tabs = {}, []
        choices = self.choices()
        with gr.Row(elem_classes="lesson-launcher") as self.launcher:  # hidden while a lesson runs
            self.picker = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Lesson",
                                      show_label=False, container=False, scale=4)
            self.start = gr.Button("Start the lesson", variant="primary", scale=1, min_width=160, elem_id=BUTTONS[0])
        with gr.Sidebar(label="Lesson", open=False, position="right", width=340, elem_id="lesson") as self.sidebar:
            with gr.Row(visible=False) as self.nav:  # first: the narration below may be long, these stay in place
                self.back = gr.Button("← Back", elem_id=BUTTONS[2], min_width=80)
                self.next = gr.Button("Next →", variant="primary", elem_id=BUTTONS[1], min_width=80)
            self.heading = gr.Markdown(elem_classes="lesson-heading")
            self.narration = gr.Markdown(elem_classes="lesson-narration")
            self.end = gr.Button("End the lesson", size="sm", visible=False)
            self.report = gr.Markdown(elem_classes="lesson-report")
        self.state = gr.State(None)  # {"lesson": name, "step": index from 0} while a lesson runs
        self.step_query = gr.State(None)  # the view of the step just shown, for the page to apply (None: none)
        self.focus = gr.Textbox(visible="hidden")  # where the step's view scrolls to (SCROLL_TO_FIGURE)
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
        return load(name, self.links, self.tabs, self.folder)

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

    def go(self, name, state, lecture, event: gr.EventData = None) -> dict:
        """Start, Next or Back: the panel showing the step, and the step's view (keeping the viewer's lecture mode)
        for the page to apply."""
        with plain_errors("lesson"):
            here, index = _position(state)
            # the button by its elem_id: event.target is the session's copy of it, made by the last update it got
            pressed = getattr(getattr(event, "target", None), "elem_id", None)
            if pressed not in BUTTONS:  # not pressed: nothing to do
                return {self.step_query: None, self.focus: ""}
            if pressed == "lesson-start" or here is None:
                lesson, index = self.load(name), 0
            else:
                name = here
                lesson, index = self.load(name), index + (1 if pressed == "lesson-next" else -1)
            panel = self.shown(lesson, index, name)
            if panel[self.state] is None:
                return {**panel, self.step_query: None, self.focus: ""}
            step = lesson.steps[panel[self.state]["step"]]
            return {**panel, self.step_query: step.query + f"&lecture={int(bool(lecture))}", self.focus: step.focus}

    def scroll(self, shown) -> None:
        """After the event that shows a step's tab: its figure scrolled to the top of the screen."""
        shown.then(None, self.focus, None, js=SCROLL_TO_FIGURE, queue=False)

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

    def wire(self, loaded, query: gr.Textbox, views):
        """Connect the panel: after the page's load event (`loaded`), the lesson the page's query string names (read
        into `query`); its buttons, each answered with the step's panel and its view applied by `views`
        (explainers.page.views.Views) in one answer. Returns that event (then call `scroll(views.restored(it))`)."""
        loaded.then(self.opened, query, self.panel, js="() => [window.location.search]", queue=False,
                    api_visibility="private")

        def step(name, state, lecture, text, event: gr.EventData = None) -> dict:
            shown = self.go(name, state, lecture, event)
            return {**shown, **views.apply(shown[self.step_query], text)}

        stepped = gr.on([self.start.click, self.next.click, self.back.click], step,
                        [self.picker, self.state, self.lecture, views.text],
                        [*self.panel, self.step_query, self.focus, *views.apply_outputs()],
                        concurrency_limit=None, api_visibility="undocumented")
        self.end.click(self.ended, None, self.panel, queue=False, api_visibility="undocumented")
        return stepped
