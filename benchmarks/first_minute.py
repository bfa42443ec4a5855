"""The first minute of a fresh server, as a new user meets it: `python benchmarks/first_minute.py [--runs 2]`.

Each run starts the app with an empty cache (a fresh machine or a restarted Space: SmolLM2's GGUF has to be
converted), opens the page in headless Chromium the moment the server answers, and prints the seconds from
the start of the process to:
- the page served;
- the first figure drawn on the page (the Overview; a tiny model while SmolLM2 is prepared);
- SmolLM2 ready (its Overview drawn after picking it in the model box).
Target (issue #19): the first figure within 20 s on 2 cores. Needs Debian's /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.load import free_port, start_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def one_run(browser, cache: Path) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "EXPLAINER_CACHE": str(cache)}
    start = time.perf_counter()
    proc, served = start_server(port, cache / "app.log", env)
    times = {"page served": served}
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#tab-overview .js-plotly-plot", timeout=300_000)
        times["first figure"] = time.perf_counter() - start
        first = "tiny" if "× attention" in page.inner_text("#tab-overview") and \
            "30 × attention" not in page.inner_text("#tab-overview") else "smollm2"
        times["first figure's model"] = first
        if first != "smollm2":
            page.get_by_label("Model", exact=True).click()
            page.get_by_role("option", name="smollm2-135m", exact=False).first.click()
        page.wait_for_function("document.querySelector('#tab-overview').innerText.includes('30 × attention')",
                               timeout=300_000)
        times["SmolLM2 drawn"] = time.perf_counter() - start
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as cache:
                times = one_run(browser, Path(cache))
            print(f"run {run + 1}: " + "   ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in times.items()), flush=True)
        browser.close()
    print(f"{os.cpu_count()} cores; target: the first figure within 20 s of the start")


if __name__ == "__main__":
    main()
