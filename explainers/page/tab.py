"""What a tab's build() receives (Page: the shared widgets, and how to wire a handler) and what it returns (View).

    def build(page: Page) -> View:
        text = gr.Textbox(label="Text")
        plot = gr.Plot()
        page.on([text.submit], update, [page.model, text], plot, api="my_tab")   # update(model_name, text) -> figure
        return View(links={"text": text},                                        # what a deep link restores
                    draws=[page.event(update, [page.model, text], plot)])        # what draws when it is on screen

explainers.page.views runs a View's draws when its tab comes on screen (see there for when exactly).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
from gradio.events import Dependency

from explainers.page.groups import GROUPS
from explainers.page.serving import handler


@dataclass
class View:
    """What a tab tells the page."""
    links: dict[str, gr.components.Component] = field(default_factory=dict)  # key -> widget: `?tab=t&key=value`
    draws: list[dict] = field(default_factory=list)  # page.event(...)s run in turn when the tab comes on screen,
    #                                                  each once the one before it succeeded
    page_text: bool = True  # a linked `text` is the page's one text (False: the tab's own, e.g. chosen with its word)


class Page:
    """What every tab's build() receives: the model picker and lecture box, and how to wire a handler."""

    def __init__(self, model: gr.Dropdown, lecture: gr.Checkbox):
        self.model, self.lecture = model, lecture

    def event(self, fn, inputs, outputs, remember: bool = True, group: str = "model", api: str | None = None) -> dict:
        """Gradio's arguments for an event running fn through the one wrapper (`serving.handler`: errors, lecture
        style, the answer cache), in its queue group. `api` names a public endpoint (`/attention`, listed under "Use
        via API"); an event without one is callable but not listed."""
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs] if inputs is not None else []
        return dict(fn=handler(fn, remember, GROUPS[group].gpu_seconds), inputs=[*inputs, self.lecture],
                    outputs=outputs, concurrency_id=group, concurrency_limit=GROUPS[group].limit,
                    api_name=api, api_visibility="public" if api else "undocumented")

    def on(self, triggers: list, fn, inputs, outputs, remember: bool = True, group: str = "model",
           api: str | None = None, then: list[dict] = ()) -> None:
        """Run fn on each trigger, then each event of `then` in turn (each once the one before it succeeded: an
        empty text gets one message, not one per figure). A trigger is a widget's event (`text.submit`: these
        share one endpoint, named `api` if public) or an event to follow (an example's `load_input_event`)."""
        listeners = [t for t in triggers if not isinstance(t, Dependency)]
        first = [gr.on(listeners, **self.event(fn, inputs, outputs, remember, group, api))] if listeners else []
        internal = self.event(fn, inputs, outputs, remember, group)
        for event in first + [t.then(**internal) for t in triggers if isinstance(t, Dependency)]:
            follow(event, then)


def follow(event, events: list[dict]):
    """events chained after event, each once the one before it succeeded; the last of the chain."""
    for kwargs in events:
        event = event.success(**kwargs)
    return event
