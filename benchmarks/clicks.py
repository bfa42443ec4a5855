"""Seconds from a click to the figure it asks for, as a learner meets them: `python benchmarks/clicks.py [--runs 3]`.

Starts the app, waits for its start-up work, and opens it in headless Chromium at 1400x900. Measured from the
click to the first figure of the tab it opens drawn ("first": the figure the click is about, at the tab's top),
and to the last change of any figure there ("all": done once nothing has redrawn for 1.5 s; the browser draws a
tab's several figures one after another):
- **stage click**: each stage of the Overview's flow on SmolLM2 opens its tab (the forward of the text is
  recorded). "in page" is what the page does now (the address changes, the view is applied in place); "reload" is
  what it did before (the page reloaded at the link), measured on the same server in the same run as the reference.
- **lesson step**: the shipped lesson, Start then Next through every step (each step applies its view in place).
Target (issue #31): a stage click's figure within 1.5 s on SmolLM2, a lesson step within 1.5 s. Needs Debian's
/usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.load import free_port, start_server, wait_until_idle  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
QUIET = 1.5  # seconds with no figure redrawn: the view is done
# Every change inside a figure stamps the time: the last stamp after a click is when its view finished drawing.
STAMP = """() => { window.__drawn = performance.now(); window.__first = {}; new MutationObserver((changes) => {
  const now = performance.now();
  for (const c of changes) {
    const plot = c.target.closest?.('.js-plotly-plot, .prose, table');
    if (!plot) continue;
    window.__drawn = now;
    const tab = plot.closest('[id^=tab-]')?.id;
    if (tab && plot.matches('.js-plotly-plot') && !(tab in window.__first)) window.__first[tab] = now;
  }
}).observe(document.body, {childList: true, subtree: true, characterData: true}); }"""


def settled(page, since: float, tab: str | None = None) -> tuple[float, float]:
    """Seconds from `since` (the page's performance.now() at the click, ms) to the tab's first figure drawn (that of
    the last change when the tab's figures did not change) and to the last figure change."""
    page.evaluate("window.__first = {}")
    page.wait_for_function(f"() => performance.now() - window.__drawn > {QUIET * 1000} && window.__drawn > {since}"
                           " && !document.querySelector('.pending, .generating')", timeout=120_000, polling=100)
    last = (page.evaluate("window.__drawn") - since) / 1000
    first = page.evaluate(f"window.__first['tab-{tab}']") if tab else None
    return ((first - since) / 1000 if first else last), last


def stage_clicks(browser, url: str) -> dict[str, list[float]]:
    """The Overview's stage links, each clicked on a fresh page (in page) and followed by a reload (before)."""
    times = {"in page": [], "in page, all": [], "reload": []}
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/?tab=overview&model=smollm2-135m")
    page.wait_for_selector("#tab-overview a[data-view]", timeout=120_000)
    links = [a.get_attribute("href") for a in page.locator("#tab-overview a[data-view]").all()]
    page.close()
    for href in dict.fromkeys(links):
        tab = href.split("tab=")[1].split("&")[0]
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/?tab=overview&model=smollm2-135m")
        page.wait_for_selector("#tab-overview a[data-view]", timeout=120_000)
        page.evaluate(STAMP)
        settled(page, 0)
        since = page.evaluate("performance.now()")
        page.locator(f"#tab-overview a[data-view][href='{href}']").first.click()
        page.wait_for_selector(f"#tab-{tab}", state="visible", timeout=60_000)
        first, last = settled(page, since, tab)
        times["in page"].append(first)
        times["in page, all"].append(last)
        start = time.perf_counter()  # before: the link loaded as a new page
        page.goto(f"{url}/{href}&lecture=0")
        page.evaluate(STAMP)
        page.wait_for_selector(f"#tab-{tab} .js-plotly-plot, #tab-{tab} table", timeout=120_000)
        gap = time.perf_counter() - start
        times["reload"].append(gap + settled(page, 0)[0])
        print(f"  {tab:14s} in page {first:5.2f} s (all {last:5.2f} s)   reload {times['reload'][-1]:5.2f} s", flush=True)
        page.close()
    return times


def lesson_steps(browser, url: str) -> list[tuple[float, float]]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/")
    page.wait_for_selector("#tab-overview .js-plotly-plot", timeout=120_000)
    page.evaluate(STAMP)
    settled(page, 0)
    times, button = [], "#lesson-start"
    while True:
        since = page.evaluate("performance.now()")
        page.locator(button).click()
        page.wait_for_timeout(300)
        tab = page.evaluate("[...document.querySelectorAll('[id^=tab-]')].find((e) => e.offsetParent && "
                            "!e.id.endsWith('-button'))?.id.slice(4)")
        times.append(settled(page, since, tab))
        heading = page.inner_text(".lesson-heading").split("\n")[0]
        first, last = times[-1]
        print(f"  {heading[:14]:14s} {tab or '':12s} first figure {first:5.2f} s (all {last:5.2f} s)", flush=True)
        button = "#lesson-next"
        if page.locator(button).is_disabled():
            break
    page.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "app.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc, _ = start_server(port, log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#tab-overview .js-plotly-plot", timeout=300_000)
            page.close()
            wait_until_idle(log)
            clicks = {"in page": [], "in page, all": [], "reload": []}
            steps = []
            for run in range(args.runs):
                print(f"run {run + 1}: stage clicks (Overview -> tab, SmolLM2)")
                for key, values in stage_clicks(browser, url).items():
                    clicks[key] += values
                print(f"run {run + 1}: lesson steps")
                steps += lesson_steps(browser, url)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    median = {key: statistics.median(values) for key, values in clicks.items()}
    print(f"stage click: in page median {median['in page']:.2f} s to the first figure (max {max(clicks['in page']):.2f}), "
          f"{median['in page, all']:.2f} s to all; reload median {median['reload']:.2f} s "
          f"(max {max(clicks['reload']):.2f}); ratio {median['in page'] / median['reload']:.2f}")
    first, last = [s[0] for s in steps], [s[1] for s in steps]
    print(f"lesson step: median {statistics.median(first):.2f} s to the first figure (max {max(first):.2f}), "
          f"{statistics.median(last):.2f} s to all (max {max(last):.2f}) over {len(steps)} steps")


if __name__ == "__main__":
    main()
