"""The LLM explainer: `python app.py [--host H] [--port P] [--device D] [--model M]`."""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import socket
import threading
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


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Model events run as many at a time as there are cores (at most 4), each with its share of the cores as torch
# threads: threads x events never exceed the cores. On 2 cores that is 2 events of 1 thread: one thread per
# forward is ~1.5x slower for a lone learner than two, but two forwards of two threads each on two cores thrash
# (OpenMP teams waiting on each other's cores: 20x slower, measured), and a class sends many at once.
# The count goes in OMP_NUM_THREADS before torch is imported: torch.set_num_threads does not reach MKL in the
# handler threads Gradio starts later (each ran its matrix products on both cores: two requests at once
# took as long as two one after the other, measured).
LIMITS = {"model": min(cores(), 4), "generate": 1, "sweep": 1, "train": 1, "quantize": 1}
THREADS = max(1, cores() // LIMITS["model"])
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, str(THREADS))

import gradio as gr  # noqa: E402

from core import zoo  # noqa: E402
from core.device import describe, pick_device  # noqa: E402
from core.projection import warm_umap  # noqa: E402
from explainers import CHAPTERS, TABS, serving, tab_id  # noqa: E402
from explainers.inputs import model_choices, unavailable_note  # noqa: E402
from explainers.lessons import build as build_lessons  # noqa: E402
from explainers.links import linked_view, make_query, restore  # noqa: E402
from explainers.serving import Page, zero_gpu  # noqa: E402

UI = dict(queue=False, api_visibility="private")  # page plumbing: instant, and not an API endpoint
GATE = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")  # queued: a stop is no HTTP error


def build_app(default_model: str | None = None, lecture: bool = False) -> gr.Blocks:
    """The page: a model picker, lecture mode and deep links around a row of chapters (explainers.CHAPTERS),
    each a row of tabs, one per module.

    Model events share one queue group, LIMITS["model"] at a time (see THREADS). Generation, sweeps, training and
    quantization run one at a time in groups of their own, so long work never holds up the other tabs."""
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
        page = Page(model_picker, lecture_box, limits=LIMITS)
        lesson = build_lessons(page)  # a sidebar: a lesson's steps drive the view (wired below, after the restore)
        # What is on screen, for links: the chapter, and the tab each chapter's row shows (Gradio keeps it while
        # another chapter is open). A Tab's select fires whenever its row selects it, by a click or by restore().
        chapter_on_screen = gr.State("chapter-1")
        rows, shown, tab_ids = {}, {}, {}  # chapter id -> its row of tabs, the State of the tab it shows, its tabs' ids
        # A tab draws when it comes on screen, not with every page load: `restored` counts the times a link set the
        # widgets (the page's own at load, a lesson's step), `drawn[tab]` is that count when the tab last drew.
        restored_count, drawn = gr.State(0), {}
        with gr.Tabs(elem_classes="chapters") as chapter_row:
            for number, (title, modules) in enumerate([c for c in CHAPTERS if c[1]], 1):  # an empty one is not drawn
                chapter_id = f"chapter-{number}"
                tab_ids[chapter_id] = [tab_id(module) for module in modules]
                with gr.Tab(f"{number} · {title}", id=chapter_id) as chapter:
                    shown[chapter_id] = gr.State(tab_ids[chapter_id][0])
                    with gr.Tabs(elem_classes="chapter-tabs") as rows[chapter_id]:
                        for module, name in zip(modules, tab_ids[chapter_id]):
                            page.building = name
                            with gr.Tab(module.TITLE, id=name, elem_id=f"tab-{name}") as tab:
                                module.build(page)
                                drawn[name] = gr.State(-1)  # inside the Tab: a row of tabs holds only tabs
                            tab.select(lambda name=name: name, None, shown[chapter_id], **UI)
                            page.view(name).attach(tab.select(stale, [restored_count, drawn[name]], drawn[name], **GATE))
                chapter.select(lambda chapter_id=chapter_id: chapter_id, None, chapter_on_screen, **UI)
                for name in tab_ids[chapter_id]:  # a chapter shows the tab its row had selected
                    page.view(name).attach(chapter.select(
                        lambda count, last, showing, name=name: stale(count, last, showing == name),
                        [restored_count, drawn[name], shown[chapter_id]], drawn[name], **GATE))
        page.building = None
        links = page.links
        link_inputs = {chapter_on_screen, *shown.values(), model_picker, lecture_box, *links.values(), lesson.state}

        def link_query(values: dict) -> str:
            tab = next((values[tab] for chapter, tab in shown.items() if chapter == values[chapter_on_screen]), None)
            return lesson.link(values[lesson.state], values[lecture_box], lecture) or make_query(  # a lesson's step
                tab, values[model_picker], values[lecture_box], {key: values[c] for key, c in links.items()}, lecture)

        restore_ids = itertools.count(1)  # a new one for every link restored: every tab drawn before it is stale

        def restored(text: str):
            """The link's view (a lesson link: its step's), and what is on screen for the tabs to know; on a fresh
            server whose default model is still being prepared, a tiny one meanwhile."""
            serving.last_call[0] = time.monotonic()
            text = lesson.view_query(text)
            start = default if zoo.ready(default) else FIRST_MODEL
            updates = restore(text, links, tab_ids, start, lecture)
            chapter, tab = linked_view(text, tab_ids)
            on_screen = [chapter or gr.skip(), *[tab if c == chapter else gr.skip() for c in shown], next(restore_ids)]
            if start == default or updates[len(rows) + 1] != start:  # ready, or the link names a model
                return *updates, *on_screen
            note = (f"**{default}** is being prepared for its first use on this server (once, under a minute), so "
                    f"this page opened with **{start}**. Pick {default} in Model whenever you like.")
            return (*updates[:len(rows) + 3], " ".join(n for n in (updates[len(rows) + 3], note) if n),
                    *updates[len(rows) + 4:], *on_screen)

        view = [chapter_row, *rows.values(), model_picker, lecture_box, link_note, *links.values(),
                chapter_on_screen, *shown.values(), restored_count]
        restoring = demo.load(restored, query, view, js="() => [window.location.search]", concurrency_limit=None,
                              api_visibility="private")
        restoring.then(None, lecture_box, None, js="(on) => { document.body.classList.toggle('lecture', on) }")
        for chapter_id, names in tab_ids.items():  # after a link: the tab on screen draws, the others when shown
            for name in names:
                page.loaded.follow("then", dict(
                    fn=lambda count, on, showing, chapter_id=chapter_id, name=name: stale(
                        count, -1, on == chapter_id and showing == name),
                    inputs=[restored_count, chapter_on_screen, shown[chapter_id]], outputs=drawn[name], **GATE),
                    page.view(name))
        page.loaded.attach(restoring)
        lesson.wire(restored, restoring, view)
        link_button.click(link_query, link_inputs, query, **UI).then(None, query, link_box, js=SHOW_LINK)
        # lecture mode changes every figure: reload this view with it switched
        lecture_box.input(link_query, link_inputs, query, **UI).then(
            None, query, None, js="(q) => { window.location.search = q }")
    demo.page = page  # its links and handlers, for tests and benchmarks
    return demo


def stale(count: int, last: int, on_screen: bool = True) -> int:
    """Opens a tab's view (returns the count of links restored, for its `drawn` state) when it is on screen and
    has not drawn since the last link; otherwise stops the tab's page-load handlers, silently."""
    if not on_screen or last == count:
        raise gr.Error("Nothing to draw: this tab is not on screen, or drew since the last link.", visible=False,
                       print_exception=False)
    return count


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


FIRST_MODEL = "tiny-gpt-char"  # what a page opens with while the default model is prepared on a fresh server


def warm_up(default_model: str | None) -> None:
    """Start-up work in one background thread, in the order learners need it, so it does not compete with the
    first pages for the cores: the default model (SmolLM2's first start converts its GGUF, in a low-priority
    process of its own: pages open with a tiny model meanwhile), then, once the first page has drawn, each tab's
    own warm-up and UMAP's numba compile (CPU seconds on first use)."""
    def run():
        names = [default_model or "smollm2-135m"]
        if zero_gpu():  # a request runs in a forked GPU worker, which sees only the models loaded here, at start
            names += [name for name, problem in zoo.available().items() if problem is None and name not in names
                      and not zoo.SPECS[name].source.startswith("Hugging Face hub")]  # hub-only ones: when asked
        for name in names:
            if zoo.available().get(name) is None:
                try:
                    zoo.convert_apart(name)
                    zoo.load(name)
                except Exception:  # a request will meet the same problem and say it plainly
                    logging.getLogger("explainer").exception("preparing %s at start failed", name)
        # The rest is Python holding the GIL for seconds (UMAP's compile: ~20 s): not while the first pages draw.
        # It waits for a first page or request (at most a minute), then for 3 s without one.
        begun = time.monotonic()
        while time.monotonic() - begun < 60 and (serving.last_call[0] == 0 or
                                                 time.monotonic() - serving.last_call[0] < 3):
            time.sleep(0.5)
        for module in TABS:
            if hasattr(module, "warm_up"):
                module.warm_up()
        warm_umap()
        print(f"start-up work done, {time.monotonic() - START:.0f} s after the start", flush=True)
    threading.Thread(target=run, daemon=True, name="warm-up").start()


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
    warm_up(args.model)
    demo = build_app(args.model, lecture=args.lecture)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, **page_extras())


if __name__ == "__main__":
    main()
