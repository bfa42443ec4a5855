"""What the browser tests share: the tabs as the page shows them, a server of the app, and waits on a page.
The fixtures that use them (`url`, `page`, `fresh`) are in conftest.py."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (installed by .ci/run)")
ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = {  # as the page shows them: chapter -> its tabs' (id, title); the id is what a link names
    "1 · The whole model": [("overview", "Overview")],
    "2 · Text to tokens": [("tokenizer", "Tokenizer"), ("embeddings", "Embeddings")],
    "3 · Inside a block": [("causal_mask", "Causal mask"), ("attention", "Attention heads"), ("block", "Block: norm & FFN"),
                           ("moe", "MoE routing"), ("residual", "Residual stream")],
    "4 · Out to text": [("lm_head", "LM head & sampling"), ("beam_search", "Beam search"),
                        ("compare", "Two models side by side")],
    "5 · Learning": [("training", "Training"), ("finetune", "Fine-tuning"),
                     ("instruct", "Instruction tuning"), ("preference", "Preference tuning"),
                     ("scaling", "Scaling laws"), ("parallel", "Data parallelism")],
    "6 · Beyond": [("kv_cache", "KV cache"), ("patching", "Activation patching"), ("steering", "Steering vectors"),
                 ("quantization", "Quantization")],
}
TABS = [title for tabs in CHAPTERS.values() for _, title in tabs]


WAIT = 120_000  # ms a browser test waits for something to appear: generous, so a loaded machine is not a failure
POLL = 200  # ms between a wait's checks: on a timer, as animation frames may not come to a page behind another


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(log, *args: str, **env: str):
    """A server of the app (`app.py --port P *args`, with `env` added) until the caller is done: its address.
    Its log must hold no traceback."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **env}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(address, timeout=1)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.5)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()


def settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Gradio shows no pending output, twice: a tab's view opens with a quick queued event that shows no
    progress of its own, then its handlers run."""
    for _ in range(2):
        page.wait_for_timeout(400)
        page.wait_for_function("document.querySelectorAll('.pending, .generating').length === 0", timeout=timeout_ms,
                               polling=POLL)


def wait_for_text(page, text: str, timeout_ms: int = WAIT) -> None:
    """Wait until the page shows `text`; past the timeout, fail with what the tab on screen shows instead."""
    from playwright.sync_api import TimeoutError
    try:
        page.wait_for_function("(text) => document.body.innerText.includes(text)", arg=text, timeout=timeout_ms,
                               polling=POLL)
    except TimeoutError:
        shown = tab_panel(page).inner_text()[:2000]
        raise AssertionError(f"{text!r} was not shown within {timeout_ms / 1000:.0f} s; error toasts: "
                             f"{error_toasts(page)}; the tab shows:\n{shown}") from None


def error_toasts(page) -> list[str]:
    return page.locator(".toast-body.error").all_inner_texts()


def select(page, name: str) -> None:
    """Click a chapter or a tab, then wait for the answers to the selects it sent (they record what is on screen,
    for "Copy link to this view"; a chapter opened for the first time also sends its first tab's)."""
    sent = []
    listen = lambda request: sent.append(request)  # a function: playwright marks it (a bound method it cannot)
    page.on("request", listen)
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(500)
    page.remove_listener("request", listen)
    for request in sent:
        request.response()


def open_tab(page, title: str) -> None:
    """Open the chapter holding the tab, then the tab, on a page brought to the front: a page opened since (a fresh
    one) leaves it behind, where no animation frame comes, and Playwright's clicks wait for frames."""
    page.bring_to_front()
    select(page, next(chapter for chapter, tabs in CHAPTERS.items() if title in [t for _, t in tabs]))
    select(page, title)


def tab_panel(page):
    """The panel of the tab on screen (inside its chapter's panel)."""
    return page.locator(".chapter-tabs [role=tabpanel]:visible").first


LEFT = ("AbortError: signal is aborted without reason", "Unexpected error Connection errored out")  # what a page
# logs when it is left (a new link opened in it) with answers on their way: their fetches and its event stream end


def record_errors(page) -> None:
    """Keep the console errors the page logs in `page.console_errors`, but for those of a page left."""
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" and not
            m.text.startswith(LEFT) else None)


def open_link(page, url: str) -> None:
    page.bring_to_front()  # as in open_tab
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot >> visible=true", timeout=120_000)
    settle(page)


def slider_value(panel, label: str) -> str:
    return panel.get_by_label(label, exact=True).first.input_value()

