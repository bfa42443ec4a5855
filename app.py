"""The LLM explainer: `python app.py [--host H] [--port P] [--device D] [--model M] [--lecture] [--share]`."""
from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

START = time.monotonic()
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def hub_reachable(timeout: float = 1.5) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


if "HF_HUB_OFFLINE" not in os.environ and not os.environ.get("SPACE_ID") and not hub_reachable():
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub: never wait on it

from explainers.page.groups import THREADS  # noqa: E402  (imports nothing heavy)

# Before torch is imported: torch.set_num_threads does not reach MKL in the handler threads Gradio starts later.
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, str(THREADS))

import gradio as gr  # noqa: E402

from core.device import pick_device  # noqa: E402
from core.paths import WEB  # noqa: E402
from core.weights import hub, zoo  # noqa: E402
from explainers.chapters import CHAPTERS, TABS  # noqa: E402
from explainers.page import layout  # noqa: E402
from explainers.page.lessons import LessonPanel  # noqa: E402
from explainers.page.startup import warm_up  # noqa: E402
from explainers.page.tab import Page  # noqa: E402
from explainers.page.views import QUEUED, Views  # noqa: E402

READ_QUERY = "(query, ...rest) => [window.location.search, ...rest]"


def build_app(default_model: str | None = None, lecture: bool = False, chapters: list = CHAPTERS) -> gr.Blocks:
    """The page: a header, a lesson sidebar and a row of chapters, each a row of tabs (explainers.chapters); when
    each tab draws is explainers.page.views'."""
    with gr.Blocks(title="LLM internals, live") as demo:
        head = layout.header(default_model, lecture)
        page = Page(head.model, head.lecture)
        lesson = LessonPanel(head.model, head.lecture)
        rows = layout.chapters(chapters, page)
        links = {f"{tab}.{key}": widget for tab, view in rows.views.items() for key, widget in view.links.items()}
        for name, widget in links.items():  # what a lesson step's `focus:` scrolls to
            widget.elem_id = widget.elem_id or "setting-" + name.replace(".", "-")
        lesson.links, lesson.tabs = links, list(rows.tab_tabs)
        query = gr.Textbox(visible=False)  # the page's query string, in and out
        views = Views(rows.layout, rows.views, links, dict(chapters=rows.row, rows=rows.rows, model=head.model,
                      lecture=head.lecture, note=head.note), head.model.value, lecture, lesson)
        views.wire_draws()
        views.wire_selects(rows.chapter_tabs, rows.tab_tabs, head.model)
        loaded = demo.load(views.apply, views.apply_inputs(query), views.apply_outputs(), js=READ_QUERY, **QUEUED)
        loaded.then(None, head.lecture, None, js="(on) => { document.body.classList.toggle('lecture', on) }")
        views.restored(loaded)
        # a stage or a cell that opens another tab (assets/web/export.js) sets the address, then clicks this
        opener = gr.Button(elem_id="open-view", visible="hidden")
        views.restored(opener.click(views.apply, views.apply_inputs(query), views.apply_outputs(), js=READ_QUERY,
                                    **QUEUED))
        lesson.scroll(views.restored(lesson.wire(loaded, query, views)))
        layout.wire_copy_link(head, query, views.screen, links, lesson, lecture)
    demo.page, demo.views, demo.lesson = page, views, lesson  # for tests and benchmarks
    return demo


def page_extras() -> dict:
    """launch() arguments for the page: its stylesheet, the export bar, and plotly.js served for image export."""
    import plotly
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    script = (WEB / "export.js").read_text().replace("__PLOTLY_URL__", f"gradio_api/file={plotly_js}")
    return dict(css=(WEB / "app.css").read_text(), head=f"<script>{script}</script>", allowed_paths=[str(plotly_js)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: a model given by its hub id passes the zoo's checks (its config is read, no
    weights) and is added to the zoo, or the parser exits with the reason."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--model", help=f"model selected at start: {', '.join(zoo.SPECS)}, or a Hugging Face hub "
                                         "id (ORG/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    parser.add_argument("--lecture", action="store_true", help="start in lecture mode: large type, high contrast")
    args = parser.parse_args(argv)
    if args.device:
        try:
            os.environ["EXPLAINER_DEVICE"] = str(pick_device(args.device))
        except ValueError as e:
            parser.error(str(e))
    try:
        hub.max_params()  # a Space owner's cap that is not a number is said now, not to the first visitor
        if args.model and args.model not in zoo.SPECS:
            args.model = zoo.add_hub_model(args.model)
    except ValueError as e:  # InputError is one
        parser.error(str(e))
    return args


def main() -> None:
    args = parse_args()
    warm_up(args.model, TABS, START)
    demo = build_app(args.model, lecture=args.lecture)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, **page_extras())


if __name__ == "__main__":
    main()
