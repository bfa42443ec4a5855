"""Cold starts: a deep link opened the moment the server answers, while every tab's load handler races the others
(loading models, tokenizers and their code in request threads), draws with no error, two starts in a row (a
decoder's attention and an MoE block; other deep links are opened on a warm server in test_browser_links.py)."""
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from browser import CHROMIUM, ROOT, error_toasts, free_port, settle

pytestmark = pytest.mark.slow  # each test starts fresh Python processes
LINKS = ["?tab=block&model=tiny-moe", "?tab=attention&model=smollm2-135m&lecture=1"]


def start_server(log_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
    proc.terminate()
    raise AssertionError("the server did not answer within 120 s")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (installed by .ci/run)")
def test_cold_starts_open_a_deep_link_at_once_with_no_error(tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        for start in range(len(LINKS)):
            log = tmp_path / f"app-{start}.log"
            proc, url = start_server(log)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            try:
                page.goto(url + LINKS[start % len(LINKS)])
                page.wait_for_selector(".js-plotly-plot >> visible=true", timeout=120_000)
                settle(page)
                assert error_toasts(page) == [], (start, error_toasts(page))
                assert errors == [], (start, errors)
            finally:
                page.close()
                proc.terminate()
                proc.wait(timeout=20)
            text = log.read_text()
            assert "Traceback" not in text and "failed" not in text, (start, text[-3000:])
        browser.close()


LOAD_EVERY_MODEL = """
import sys
import app  # what the server imports before it serves
from core.weights import zoo
from core.analysis.projection import project
import numpy
before = dict(sys.modules)
for name, problem in zoo.available().items():
    if problem is None:
        model = zoo.load(name, "cpu")
        model.tokenizer.tokens("The cat sat on the mat.")
project(numpy.random.default_rng(0).normal(size=(40, 8)), "PCA")
project(numpy.random.default_rng(0).normal(size=(40, 8)), "t-SNE")
known = {id(m) for m in before.values()}
print(sorted(n for n in set(sys.modules) - set(before) if id(sys.modules[n]) not in known))
"""


def test_loading_every_model_in_a_handler_imports_nothing_new():
    """Handlers load models and project vectors in request threads: everything that needs is imported when the
    server starts, in one thread (transformers registers a few aliases of modules it has, which import nothing)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", LOAD_EVERY_MODEL], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
