"""The LLM explainer: `python app.py [--host H] [--port P] [--device D] [--model M]`."""
from __future__ import annotations

import argparse
import os
import socket
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def hub_reachable(timeout: float = 1.5) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


if "HF_HUB_OFFLINE" not in os.environ and not os.environ.get("SPACE_ID") and not hub_reachable():
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub: never wait on it

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from core import zoo  # noqa: E402
from core.device import describe, pick_device  # noqa: E402
from core.projection import warm_umap  # noqa: E402
from explainers import CHAPTERS, TABS, tab_id  # noqa: E402
from explainers.inputs import model_choices, unavailable_note  # noqa: E402
from explainers.lessons import build as build_lessons  # noqa: E402
from explainers.links import make_query, restore  # noqa: E402
from explainers.serving import Page  # noqa: E402


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_app(default_model: str | None = None, lecture: bool = False) -> gr.Blocks:
    """The page: a model picker, lecture mode and deep links around a row of chapters (explainers.CHAPTERS),
    each a row of tabs, one per module.

    Model events share one queue group, as many at a time as there are cores (each uses all the cores' torch
    threads; the Python half of one, building figures, runs while another's matrix products do). Generation
    runs one at a time in its own group, so a long run never holds up the other tabs."""
    choices = model_choices()
    names = [name for _, name in choices]
    default = default_model if default_model in names else ("smollm2-135m" if "smollm2-135m" in names else names[0])
    with gr.Blocks(title="LLM internals, live") as demo:
        gr.Markdown("# LLM internals, live\nEvery picture is computed now by a real model running on "
                    f"**{describe(pick_device())}**.")
        with gr.Row():
            model_picker = gr.Dropdown(choices, value=default, label="Model", scale=3)
            with gr.Column(scale=2):
                with gr.Row():
                    lecture_box = gr.Checkbox(lecture, label="Lecture mode (large type, high contrast)", container=False)
                    link_button = gr.Button("Copy link to this view", size="sm")
                link_box = gr.Textbox(show_label=False, placeholder="the link to this view appears here",
                                      buttons=["copy"], interactive=False, container=False)
        query = gr.Textbox(visible=False)  # the page's query string, in and out
        link_note = gr.Markdown()
        note = unavailable_note()
        if note:
            gr.Markdown(note)
        page = Page(model_picker, lecture_box,
                    limits={"model": min(cores(), 4), "generate": 1, "sweep": 1, "train": 1, "quantize": 1})
        lesson = build_lessons(page)  # a sidebar: a lesson's steps drive the view (wired below, after the restore)
        # What is on screen, for links: the chapter, and the tab each chapter's row shows (Gradio keeps it while
        # another chapter is open). A Tab's select fires whenever its row selects it, by a click or by restore().
        chapter_on_screen = gr.State("chapter-1")
        rows, shown, tab_ids = {}, {}, {}  # chapter id -> its row of tabs, the State of the tab it shows, its tabs' ids
        with gr.Tabs(elem_classes="chapters") as chapter_row:
            for number, (title, modules) in enumerate([c for c in CHAPTERS if c[1]], 1):  # an empty one is not drawn
                chapter_id = f"chapter-{number}"
                tab_ids[chapter_id] = [tab_id(module) for module in modules]
                with gr.Tab(f"{number} · {title}", id=chapter_id) as chapter:
                    shown[chapter_id] = gr.State(tab_ids[chapter_id][0])
                    with gr.Tabs(elem_classes="chapter-tabs") as rows[chapter_id]:
                        for module, name in zip(modules, tab_ids[chapter_id]):
                            with gr.Tab(module.TITLE, id=name, elem_id=f"tab-{name}") as tab:
                                module.build(page)
                            tab.select(lambda name=name: name, None, shown[chapter_id], queue=False)
                chapter.select(lambda chapter_id=chapter_id: chapter_id, None, chapter_on_screen, queue=False)
        links = page.links
        link_inputs = {chapter_on_screen, *shown.values(), model_picker, lecture_box, *links.values(), lesson.state}

        def link_query(values: dict) -> str:
            tab = next((values[tab] for chapter, tab in shown.items() if chapter == values[chapter_on_screen]), None)
            return lesson.link(values[lesson.state], values[lecture_box], lecture) or make_query(  # a lesson's step
                tab, values[model_picker], values[lecture_box], {key: values[c] for key, c in links.items()}, lecture)

        def restored(text: str):
            return restore(lesson.view_query(text), links, tab_ids, default, lecture)  # a lesson link: its step

        view = [chapter_row, *rows.values(), model_picker, lecture_box, link_note, *links.values()]
        restoring = demo.load(restored, query, view, js="() => [window.location.search]", concurrency_limit=None)
        restoring.then(None, lecture_box, None, js="(on) => { document.body.classList.toggle('lecture', on) }")
        page.loaded.attach(restoring)
        lesson.wire(restored, restoring, view)
        link_button.click(link_query, link_inputs, query, queue=False).then(None, query, link_box, js=SHOW_LINK)
        # lecture mode changes every figure: reload this view with it switched
        lecture_box.input(link_query, link_inputs, query, queue=False).then(
            None, query, None, js="(q) => { window.location.search = q }")
    demo.page = page  # its links and handlers, for tests and benchmarks
    return demo


SHOW_LINK = """(q) => {
  const url = window.location.origin + window.location.pathname + q;
  window.history.replaceState(null, "", url);
  navigator.clipboard?.writeText(url).catch(() => {});
  return url;
}"""


WEB = Path(__file__).resolve().parent / "assets" / "web"


def page_extras() -> dict:
    """launch() arguments for the page: its stylesheet, the export bar, and plotly.js served for image export."""
    import plotly
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    script = (WEB / "export.js").read_text().replace("__PLOTLY_URL__", f"gradio_api/file={plotly_js}")
    return dict(css=(WEB / "app.css").read_text(), head=f"<script>{script}</script>", allowed_paths=[str(plotly_js)])


def warm_up() -> None:
    """Start-up work in the background, so the first learners do not wait for it: UMAP's numba compile (CPU seconds
    on first use, see the README) and each tab's own warm-up."""
    warm_umap()
    for module in TABS:
        if hasattr(module, "warm_up"):
            threading.Thread(target=module.warm_up, daemon=True, name=f"warm-{module.__name__}").start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--model", help=f"model selected at start: {', '.join(zoo.SPECS)}")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    parser.add_argument("--lecture", action="store_true", help="start in lecture mode: large type, high contrast")
    args = parser.parse_args()
    if args.device:
        try:
            os.environ["EXPLAINER_DEVICE"] = str(pick_device(args.device))
        except ValueError as e:
            parser.error(str(e))
    if args.model and args.model not in zoo.SPECS:
        parser.error(f"unknown model {args.model!r}; choose one of {', '.join(zoo.SPECS)}")
    torch.set_num_threads(cores())
    warm_up()
    demo = build_app(args.model, lecture=args.lecture)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, **page_extras())


if __name__ == "__main__":
    main()
