"""The parts of the page around the tabs: the header (model, lecture mode, the link to this view) and the rows
of chapters and tabs, each tab built by its module."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.device import describe, pick_device
from explainers.chapters import tab_id
from explainers.page.inputs import by_name_note, model_choices, unavailable_note
from explainers.page.links import make_query
from explainers.page.tab import Page, View

UI = dict(queue=False, api_visibility="private")  # page plumbing: instant, and not an API endpoint
SHOW_LINK = """(q) => {
  const url = window.location.origin + window.location.pathname + q;
  window.history.replaceState(null, "", url);
  navigator.clipboard?.writeText(url).catch(() => {});
  return url;
}"""


@dataclass
class Header:
    model: gr.Dropdown
    lecture: gr.Checkbox
    link_button: gr.Button
    link_box: gr.Textbox
    note: gr.Markdown                   # what a link could not restore, or why the page opened with another model


def header(default_model: str | None, lecture: bool) -> Header:
    """The title, the model picker (every model that loads here, or one typed in by its hub id), lecture mode and
    "Copy link to this view"."""
    choices = model_choices()
    names = [name for _, name in choices]
    default = default_model if default_model in names else ("smollm2-135m" if "smollm2-135m" in names else names[0])
    gr.Markdown("# LLM internals, live\nEvery picture is computed now by a real model running on "
                f"**{describe(pick_device())}**.", elem_classes="page-title")
    with gr.Row(elem_classes="page-header"):  # lecture mode folds it to one short row (assets/web/app.css)
        model = gr.Dropdown(choices, value=default, label="Model", info=by_name_note(), allow_custom_value=True,
                            scale=3)  # a hub id typed in loads that model (explainers.page.views.Views.switched)
        with gr.Column(scale=2):
            with gr.Row():
                lecture_box = gr.Checkbox(lecture, label="Lecture mode (large type, high contrast)", container=False)
                link_button = gr.Button("Copy link to this view", size="sm")
            link_box = gr.Textbox(show_label=False, placeholder="the link to this view appears here",
                                  buttons=["copy"], interactive=False, container=False, elem_classes="link-box")
    note = gr.Markdown()
    missing = unavailable_note()
    if missing:  # folded: the hub-only models would otherwise push the tabs below the first screen
        with gr.Accordion(f"{missing.count(chr(10) + '- ')} more models, not available here (why, and how to get them)",
                          open=False, elem_classes="unavailable"):
            gr.Markdown(missing)
    return Header(model, lecture_box, link_button, link_box, note)


@dataclass
class Chapters:
    row: gr.Tabs                        # the row of chapters
    rows: dict[str, gr.Tabs]            # chapter id -> its row of tabs
    chapter_tabs: dict[str, gr.Tab]     # chapter id -> its gr.Tab
    tab_tabs: dict[str, gr.Tab]         # tab id -> its gr.Tab
    layout: dict[str, list[str]]        # chapter id -> its tabs' ids, in order
    views: dict[str, View]              # tab id -> what its build() returned


def chapters(chapter_list: list, page: Page) -> Chapters:
    """A row of numbered chapters, each a row of tabs, one per module (a chapter with no tabs is not drawn)."""
    rows, chapter_tabs, tab_tabs, layout, views = {}, {}, {}, {}, {}
    with gr.Tabs(elem_classes="chapters") as row:
        for number, (title, modules) in enumerate([c for c in chapter_list if c[1]], 1):
            chapter = f"chapter-{number}"
            layout[chapter] = [tab_id(module) for module in modules]
            with gr.Tab(f"{number} · {title}", id=chapter) as chapter_tabs[chapter], \
                    gr.Tabs(elem_classes="chapter-tabs") as rows[chapter]:
                for module, name in zip(modules, layout[chapter]):
                    with gr.Tab(module.TITLE, id=name, elem_id=f"tab-{name}") as tab_tabs[name]:
                        views[name] = module.build(page)
    return Chapters(row, rows, chapter_tabs, tab_tabs, layout, views)


def wire_copy_link(head: Header, query: gr.Textbox, screen: gr.State, links: dict, lesson, lecture_default: bool):
    """"Copy link to this view" and the lecture box (which reloads the view with lecture mode switched): the query
    string of what is on screen, or of the lesson's step while a lesson runs."""
    inputs = {screen, head.model, head.lecture, lesson.state, *links.values()}

    def link_query(values: dict) -> str:
        shown = values[screen] if isinstance(values[screen], dict) else {}
        tab = (shown.get("tabs") or {}).get(shown.get("chapter"))
        return lesson.link(values[lesson.state], values[head.lecture], lecture_default) or make_query(
            tab, values[head.model], values[head.lecture], {key: values[c] for key, c in links.items()}, lecture_default)

    head.link_button.click(link_query, inputs, query, **UI).then(None, query, head.link_box, js=SHOW_LINK)
    head.lecture.input(link_query, inputs, query, **UI).then(None, query, None, js="(q) => { window.location.search = q }")
