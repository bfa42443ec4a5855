"""When a tab draws: one place, read top to bottom.

1. **A link restores a view**: the page's own query string when it loads, a stage or a cell that opens another
   tab (assets/web/export.js), or a lesson's step (the same path). `Views.apply` sets the model, lecture mode and
   the tab's linked widgets, selects the tab in its chapter, and starts a new *generation*: every tab's drawing is
   now stale. A model switch starts one too.
2. **The tab on screen draws if it is stale**: `Views.look` reads which tab is on screen; if it has not drawn
   in this generation (and, for a tab with a text, with the page's text) it is asked to (its request State
   changes); the other tabs wait until they are shown. Clicking a chapter or a tab looks again, and so does a
   restore, once its values are in the widgets (in its own answer, the draws would read the widgets before them).
   **One text for the page**: every tab that links a `text` shares it. Typing in one copies it to the page's
   text (in the browser, no request); a tab coming on screen takes it before it draws. Tabs whose text goes with
   something else keep theirs (`View.page_text=False`: the Embeddings sentence with its word; patching's two
   prompts are not a `text`).
3. **A request runs the tab's draws** (`View.draws`, from its build()), in turn, each once the one before it
   succeeded.

A tab's own widget events (a slider released, a text submitted) are wired in its build(); they redraw what
they change, whatever the generation.
"""
from __future__ import annotations

import itertools
import time
from functools import partial

import gradio as gr

from core.inputs import InputError
from explainers.page import serving
from explainers.page.inputs import get_model, model_choices
from explainers.page.links import restore
from explainers.page.startup import preparing_note, start_model
from explainers.page.tab import View, follow

QUEUED = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")  # a State set by an unqueued
#                                                                     event fires no change: these are queued, never wait


def _screen(value, layout: dict[str, list[str]]) -> dict:
    """A session's screen state, checked: {"chapter": id, "tabs": {chapter id: the tab its row shows}}."""
    first = {chapter: tabs[0] for chapter, tabs in layout.items()}
    if not isinstance(value, dict) or value.get("chapter") not in layout or not isinstance(value.get("tabs"), dict):
        return {"chapter": next(iter(layout)), "tabs": first}
    return {"chapter": value["chapter"], "tabs": {c: t if t in layout[c] else first[c] for c, t in
                                                  {**first, **value["tabs"]}.items() if c in layout}}


class Views:
    """The States that say what is on screen and what has drawn, and the handlers that read them.

    `layout`: chapter id -> its tabs' ids, in the page's order; `views`: tab id -> its View; `links`: every
    linked widget as "tab.key" -> widget; `widgets`: the page's model picker, lecture box, link note, chapter row and
    each chapter's row of tabs; `default`: the model a link without one opens with, once it is ready; `lesson`:
    the lesson panel (a lesson link opens its step's view)."""

    def __init__(self, layout: dict[str, list[str]], views: dict[str, View], links: dict, widgets: dict,
                 default: str, lecture_default: bool, lesson):
        self.layout, self.views, self.links, self.w = layout, views, links, widgets
        self.default, self.lecture_default, self.lesson = default, lecture_default, lesson
        self.screen = gr.State(_screen(None, layout))
        self.shown = gr.State(default)    # the model the tabs draw: the picker goes back to it when a model is refused
        self.generation = gr.State(0)     # links restored and models switched in this session
        self.drawn = gr.State({})         # tab id -> (the generation, the page's text) it last drew with
        self.text = gr.Textbox(visible="hidden", elem_id="page-text")  # the text every tab with a `text` shows
        self.texted = {tab: links[f"{tab}.text"] for tab, view in views.items()
                       if view.page_text and isinstance(links.get(f"{tab}.text"), gr.Textbox)}
        self.requests = {tab: gr.State(0) for tab, view in views.items() if view.draws}
        self.generations = itertools.count(1)  # one more for every restore, over all sessions: never the same twice

    # 3. a request runs the tab's draws
    def wire_draws(self) -> None:
        for text in self.texted.values():  # typing anywhere is the page's text
            text.change(None, text, self.text, js="(t) => t", queue=False, api_visibility="private")
        for tab, request in self.requests.items():
            draws = self.views[tab].draws
            if tab in self.texted:  # the page's text first (an empty one: the tab keeps its own example)
                draws = [dict(fn=None, inputs=[self.text, self.texted[tab]], outputs=self.texted[tab], queue=False,
                              js="(shared, own) => shared || own", api_visibility="private"), *draws]
            follow(request.change(**draws[0]), draws[1:])

    # 2. the tab on screen draws if it is stale
    def look(self, screen, generation, drawn, text="") -> dict:
        """Ask the tab on screen to draw, unless it has drawn in this generation (with this text, if it has one).
        Generation 0 is a page whose link is not applied yet: the first tab's select comes as the page loads, and
        drawing it then would be wasted when the link opens another tab or another model."""
        screen = _screen(screen, self.layout)
        drawn = drawn if isinstance(drawn, dict) else {}
        tab = screen["tabs"][screen["chapter"]]
        key = (generation, str(text or "") if tab in self.texted else None)
        if not generation or tab not in self.requests or drawn.get(tab) == key:
            return {self.drawn: gr.skip()}  # Gradio wants a value for one output at least
        return {self.drawn: {**drawn, tab: key}, self.requests[tab]: key}  # a new value: its change runs the draws

    def selected(self, chapter: str, tab: str | None, screen, generation, drawn, text="") -> dict:
        """A chapter or a tab was clicked (or selected by a restore): what is on screen now, and draw it if stale."""
        screen = _screen(screen, self.layout)
        screen = {"chapter": chapter, "tabs": {**screen["tabs"], **({chapter: tab} if tab else {})}}
        return {self.screen: screen, **self.look(screen, generation, drawn, text)}

    def switched(self, name, shown, screen, generation, drawn, text="", progress=gr.Progress(track_tqdm=True)) -> dict:
        """The model changed: it loads here (a hub id typed into the picker is checked, downloaded and converted,
        the picker showing the progress), then every tab is stale and the one on screen draws. A model that cannot
        load leaves the picker on the model shown, with the reason in the note, and nothing redraws."""
        try:
            name = get_model(name).name
        except InputError as refused:
            return {self.w["model"]: shown, self.w["note"]: str(refused)}
        new = next(self.generations)
        return {self.w["model"]: gr.Dropdown(choices=model_choices(), value=name), self.w["note"]: "", self.shown: name,
                self.generation: new, **self.look(screen, new, drawn, text)}

    # 1. a link restores a view
    def apply(self, query, text="") -> dict:
        """The view a query string asks for, as updates of the page's widgets (the page's text among them), in a
        new generation. None: nothing to apply (a lesson button that showed no step)."""
        if query is None:
            return {self.generation: gr.skip()}
        serving.last_call[0] = time.monotonic()
        generation = next(self.generations)
        try:
            opened = start_model(self.default)
            view = restore(self.lesson.view_query(query), self.links, self.layout, opened, self.lecture_default)
        except Exception:  # a fault here must not leave the page at generation 0, where nothing draws: say so
            serving.log.exception("restoring the view %r", query)
            return {self.generation: generation, self.w["note"]: "This view could not be opened here, so the page "
                                                                 "shows its defaults."}
        note = " ".join(n for n in (view.note, preparing_note(self.default, view.model if view.model == opened
                                                                          else self.default)) if n)
        updates = {self.w["chapters"]: gr.Tabs(selected=view.chapter), self.w["model"]: view.model,
                   self.shown: view.model, self.w["lecture"]: view.lecture, self.w["note"]: note,
                   self.generation: generation}
        if view.chapter:
            updates[self.w["rows"][view.chapter]] = gr.Tabs(selected=view.tab)
            updates[self.screen] = {"chapter": view.chapter, "tabs": {**_screen(None, self.layout)["tabs"],
                                                                      view.chapter: view.tab}}
        if view.tab in self.texted:  # a link's text is the page's (not the text of a tab that keeps its own)
            text = view.values.get(f"{view.tab}.text", text)
        updates[self.text] = text
        return {**updates, **{self.links[key]: value for key, value in view.values.items()}}

    def restored(self, event) -> None:
        """What follows an event that restores a view into the page's widgets: the tab on screen draws (that event,
        returned)."""
        return event.then(self.look, [self.screen, self.generation, self.drawn, self.text],
                          [self.drawn, *self.requests.values()], **QUEUED)

    def apply_inputs(self, query) -> list:
        return [query, self.text]

    def apply_outputs(self) -> list:
        return [self.w["chapters"], *self.w["rows"].values(), self.w["model"], self.shown, self.w["lecture"],
                self.w["note"], *self.links.values(), self.screen, self.generation, self.text]

    def wire_selects(self, chapter_tabs: dict, tab_tabs: dict, model) -> None:
        """Clicks on chapters and tabs, and a model switch (`chapter_tabs`: chapter id -> its gr.Tab; `tab_tabs`: tab
        id -> its gr.Tab)."""
        state, outputs = [self.screen, self.generation, self.drawn, self.text], [self.screen, self.drawn,
                                                                                  *self.requests.values()]
        for chapter, tabs in self.layout.items():
            chapter_tabs[chapter].select(partial(self.selected, chapter, None), state, outputs, **QUEUED)
            for tab in tabs:
                tab_tabs[tab].select(partial(self.selected, chapter, tab), state, outputs, **QUEUED)
        model.input(self.switched, [model, self.shown, *state],
                    [model, self.w["note"], self.shown, self.generation, self.drawn, *self.requests.values()],
                    **{**QUEUED, "show_progress": "full"}, show_progress_on=model)
