"""The app in headless Chromium: every tab loads, runs its examples and draws, with no error."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (installed by .ci/run)")]
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


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("app") / "app.log")


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


@pytest.fixture(scope="module")
def page(url):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.console_errors = []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_selector(".js-plotly-plot", timeout=120_000)
        yield page
        browser.close()


def settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Gradio shows no pending output, twice: a tab's view opens with a quick queued event that shows no
    progress of its own, then its handlers run."""
    for _ in range(2):
        page.wait_for_timeout(400)
        page.wait_for_function("document.querySelectorAll('.pending, .generating').length === 0", timeout=timeout_ms,
                               polling=POLL)


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
    """Open the chapter holding the tab, then the tab."""
    select(page, next(chapter for chapter, tabs in CHAPTERS.items() if title in [t for _, t in tabs]))
    select(page, title)


def tab_panel(page):
    """The panel of the tab on screen (inside its chapter's panel)."""
    return page.locator(".chapter-tabs [role=tabpanel]:visible").first


@pytest.mark.parametrize("tab", TABS)
def test_tab_runs_an_example_and_draws(page, tab):
    open_tab(page, tab)
    settle(page)
    panel = tab_panel(page)
    examples = panel.locator(".gallery-item, tr.tr-body, button.gallery-item")
    if examples.count():  # one click on its last example; every example's values are drawn in test_product.py
        examples.last.click()
        settle(page)
    # long work (patching, training, fine-tuning) runs when asked: their own tests below run it
    if tab not in ("Activation patching", "Training", "Fine-tuning"):
        assert panel.locator(".js-plotly-plot").count() >= 1 or panel.locator("span[title^='id ']").count() > 0
    assert error_toasts(page) == []
    assert page.console_errors == []


@pytest.mark.parametrize("tab, button", [("LM head & sampling", "Next token: draw one and append it"),
                                         ("KV cache", "Generate both ways")])
def test_tab_buttons_run(page, tab, button):
    open_tab(page, tab)
    settle(page)
    panel = tab_panel(page)
    before = panel.locator("textarea").first.input_value()
    if tab == "KV cache":  # the example test left N at 128; the uncached run is quadratic, keep CI quick
        panel.locator("input[type=number]").first.fill("8")
        panel.locator("input[type=number]").first.press("Enter")
    panel.get_by_role("button", name=button).click()
    settle(page)
    if tab == "KV cache":  # streamed: wait for the final summary, not just for an idle moment between yields
        panel.get_by_text("Identical tokens in both runs: yes").wait_for(timeout=120_000)
    else:
        assert panel.locator("textarea").first.input_value().startswith(before.rstrip())
        assert panel.locator("table").first.inner_text().count("\n") >= 1
    assert error_toasts(page) == []
    assert page.console_errors == []


@pytest.mark.parametrize("tab, drawn, key", [("tokenizer", "span[title^='id ']", "Shift+Enter"),  # a two-line box
                                             ("lm_head", ".js-plotly-plot", "Enter")])
def test_an_empty_text_gets_one_plain_message(fresh, url, tab, drawn, key):
    fresh.goto(url + f"?tab={tab}&model=tiny-gpt-char")
    fresh.wait_for_selector(drawn + " >> visible=true", timeout=120_000)
    settle(fresh)
    box = tab_panel(fresh).locator("textarea").first
    box.fill("   ")
    box.press(key)
    fresh.locator(".toast-body.error").first.wait_for(timeout=WAIT)
    settle(fresh)
    toasts = error_toasts(fresh)  # the tokens and the BPE panel both need a text; one message says so
    assert "".join(toasts).count("Type some text first: the input is empty.") == 1, toasts  # Gradio groups repeats
    assert fresh.console_errors == []


def test_a_cancelled_generation_leaves_the_kv_tab_usable(page):
    open_tab(page, "KV cache")
    panel = tab_panel(page)
    count = panel.locator("input[type=number]").first
    count.fill("256")
    count.press("Enter")
    panel.get_by_role("button", name="Generate both ways").click()
    page.wait_for_function("document.body.innerText.includes('Running with')", timeout=WAIT, polling=POLL)  # under way
    panel.get_by_role("button", name="Cancel").click()  # reaches this run's job (pressed sooner, it could miss it)
    page.wait_for_function("document.body.innerText.includes('Cancelled (')", timeout=WAIT, polling=POLL)
    count.fill("6")
    count.press("Enter")
    panel.get_by_role("button", name="Generate both ways").click()
    panel.get_by_text("Identical tokens in both runs: yes").wait_for(timeout=120_000)
    assert "over 6 tokens" in panel.inner_text()
    assert error_toasts(page) == []


LEFT = ("AbortError: signal is aborted without reason", "Unexpected error Connection errored out")  # what a page
# logs when it is left (a new link opened in it) with answers on their way: their fetches and its event stream end


@pytest.fixture
def fresh(page):
    """Another page of the same browser, for a view opened from a link."""
    other = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
    other.console_errors = []
    other.on("console", lambda m: other.console_errors.append(m.text) if m.type == "error" and not  # a page left
             m.text.startswith(LEFT) else None)  # with answers on their way
    yield other
    other.close()


def open_link(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot >> visible=true", timeout=120_000)
    settle(page)


def slider_value(panel, label: str) -> str:
    return panel.get_by_label(label, exact=True).first.input_value()


def test_a_deep_link_restores_tab_model_and_settings(fresh, url):
    open_link(fresh, url + "?tab=causal_mask&model=tiny-gpt-char&text=ROMEO%3A+hello&layer=2&head=3&mask=bidirectional")
    assert fresh.get_by_role("tab", name="Causal mask").get_attribute("aria-selected") == "true"
    panel = tab_panel(fresh)
    assert panel.locator("textarea").first.input_value() == "ROMEO: hello"
    assert slider_value(panel, "number input for Layer") == "2" and slider_value(panel, "number input for Head") == "3"
    assert panel.get_by_label("bidirectional").is_checked()
    assert "tiny-gpt-char" in fresh.locator("input[role=listbox], input[aria-label=Model]").first.input_value()
    assert "0:R" in panel.locator(".js-plotly-plot").first.inner_text()  # the figure drew the linked text
    assert error_toasts(fresh) == [] and fresh.console_errors == []


@pytest.mark.parametrize("chapter, tab_id, title", [(c, *tabs[-1]) for c, tabs in CHAPTERS.items()])
def test_a_link_to_a_tab_opens_it_inside_its_chapter(fresh, url, chapter, tab_id, title):
    """Links made before there were chapters (`?tab=attention`) still open their tab, its chapter selected: the last
    tab of each chapter here (a page load each); every tab's link is checked on the built app in test_product.py."""
    fresh.goto(url + f"?tab={tab_id}&model=tiny-gpt-char")  # a tiny model: every tab's first update is quick
    fresh.get_by_role("tab", name=title, exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    assert [t.inner_text() for t in fresh.get_by_role("tab", selected=True).all()] == [chapter, title]  # visible ones
    assert fresh.locator(f"#tab-{tab_id}").is_visible()
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def copy_link(page) -> str:
    """Press "Copy link to this view" on a page just opened: the link it shows."""
    page.get_by_role("button", name="Copy link to this view").click()
    page.wait_for_function("document.querySelector('[placeholder^=\"the link\"]').value !== ''", timeout=WAIT)
    return page.locator("[placeholder^='the link']").first.input_value()


def test_copy_link_names_the_tab_on_screen_after_switching_chapters(fresh, url):
    """Back in a chapter, Gradio shows the tab last open in it; the link names that tab, not the chapter's first."""
    open_link(fresh, url + "?model=tiny-gpt-char")
    open_tab(fresh, "Embeddings")
    select(fresh, "1 · The whole model")
    select(fresh, "2 · Text to tokens")
    assert fresh.get_by_role("tab", name="Embeddings", exact=True, selected=True).is_visible()
    assert parse_qs(urlsplit(copy_link(fresh)).query)["tab"] == ["embeddings"]
    settle(fresh)  # leaving a page with answers on their way logs their abort
    open_link(fresh, url + "?tab=attention&model=tiny-gpt-char")  # a tab opened by a link, not its chapter's first
    select(fresh, "1 · The whole model")
    select(fresh, "3 · Inside a block")
    assert parse_qs(urlsplit(copy_link(fresh)).query)["tab"] == ["attention"]
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def test_copy_link_gives_a_link_that_reopens_the_same_view(page, fresh, url):
    open_link(page, url + "?tab=lm_head&model=tiny-gpt-char&text=To+be&temperature=0.7&top_p=0.8")
    page.get_by_role("button", name="Copy link to this view").click()
    page.wait_for_function("document.querySelector('input[placeholder^=\"the link\"], textarea[placeholder^=\"the link\"]')"
                           ".value.includes('tab=lm_head')", timeout=WAIT)
    link = page.locator("[placeholder^='the link']").first.input_value()
    assert link.startswith(url) and "temperature=0.7" in link and "top_p=0.8" in link and page.url == link
    open_link(fresh, link)
    panel = tab_panel(fresh)
    assert panel.locator("textarea").first.input_value() == "To be"
    assert slider_value(panel, "number input for Temperature (0 = greedy)") == "0.7"
    assert error_toasts(fresh) == []


def test_a_bad_link_shows_the_defaults_and_a_note(fresh, url):
    open_link(fresh, url + "?tab=attention&layer=banana&model=gpt5&x=%00")
    fresh.get_by_text("could not be used").wait_for(timeout=WAIT)
    assert "gpt5" in fresh.locator("body").inner_text()
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def font_sizes(page) -> tuple[float, float]:
    """(paragraph text, figure tick labels) in px on the visible tab."""
    return page.evaluate("""() => {
        const panel = [...document.querySelectorAll('.chapter-tabs [role=tabpanel]')].find(p => p.offsetParent !== null);
        const size = (el) => parseFloat(getComputedStyle(el).fontSize);
        return [size(panel.querySelector('.prose p')), size(panel.querySelector('.js-plotly-plot .xtick text'))];
    }""")


def test_lecture_mode_enlarges_text_and_figures(page, fresh, url):
    open_link(page, url + "?tab=causal_mask&model=tiny-gpt-char")
    open_link(fresh, url + "?tab=causal_mask&model=tiny-gpt-char&lecture=1")
    (prose, ticks), (big_prose, big_ticks) = font_sizes(page), font_sizes(fresh)
    assert big_prose >= 1.2 * prose and big_ticks >= 1.2 * ticks, (prose, big_prose, ticks, big_ticks)
    assert fresh.evaluate("document.body.classList.contains('lecture')")
    fresh.get_by_label("Lecture mode (large type, high contrast)").uncheck()  # the toggle reloads the view without it
    fresh.wait_for_function("!location.search.includes('lecture=1')", timeout=WAIT)
    fresh.wait_for_selector(".js-plotly-plot >> visible=true", timeout=120_000)
    assert not fresh.evaluate("document.body.classList.contains('lecture')")
    assert "tab=causal_mask" in fresh.url and "model=tiny-gpt-char" in fresh.url
    assert error_toasts(fresh) == []


def test_every_figure_saves_as_png_svg_csv_and_json(page, url):
    open_link(page, url + "?tab=lm_head&model=tiny-gpt-char")
    bar = tab_panel(page).locator(".export-bar").first
    files = {}
    for kind in ["PNG", "SVG", "CSV", "JSON"]:
        with page.expect_download(timeout=WAIT) as download:
            bar.get_by_role("button", name=kind).click()
        files[kind] = Path(download.value.path()).read_bytes()
    assert files["PNG"].startswith(b"\x89PNG") and b"<svg" in files["SVG"][:500]
    import json
    numbers = json.loads(files["JSON"])
    assert numbers["traces"] and any(len(t.get("x", [])) > 1 for t in numbers["traces"])
    assert files["CSV"].decode().startswith("trace 0") and files["CSV"].count(b"\n") > 5
    assert page.console_errors == []


@pytest.mark.parametrize("model", ["smollm2-135m", "minilm-l6", "tiny-moe"])
def test_the_flow_and_the_block_tab_draw_on_every_kind_of_model(fresh, url, model):
    """A decoder, an encoder and an MoE: the flow's stages and figure, then one block, with no error."""
    open_link(fresh, url + f"?tab=overview&model={model}")
    panel = tab_panel(fresh)
    stages = panel.locator("a[data-view]")
    assert stages.count() >= 7 and "× attention" in panel.inner_text()
    assert ("Next token" in panel.inner_text()) == (model != "minilm-l6")  # an encoder has no next token
    assert panel.locator(".js-plotly-plot").first.locator(".heatmaplayer").count() == 1
    open_link(fresh, url + f"?tab=block&model={model}&layer=1&position=2")
    panel = tab_panel(fresh)
    assert "Layer 1, position 2" in panel.inner_text() and panel.locator(".js-plotly-plot").count() == 3
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def test_a_stage_or_a_cell_of_the_flow_opens_the_tab_that_explains_it(fresh, url):
    """In the page: no reload (a mark left on the window stays), the address is the view's, Back returns."""
    open_link(fresh, url + "?tab=overview&model=tiny-gpt-char&text=To+be+or+not")
    fresh.evaluate("window.stayed = true")
    tab_panel(fresh).get_by_text("4 × attention").click()
    fresh.wait_for_url("**tab=attention**", timeout=WAIT)
    fresh.get_by_role("tab", name="Attention heads", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    assert tab_panel(fresh).locator("textarea").first.input_value() == "To be or not"
    assert fresh.evaluate("window.stayed") is True  # opened in the page, not by loading it again
    fresh.go_back()
    fresh.get_by_role("tab", name="Overview", exact=True, selected=True).wait_for(timeout=WAIT)
    assert "tab=overview" in fresh.url and fresh.evaluate("window.stayed") is True
    settle(fresh)
    cells = tab_panel(fresh).locator(".js-plotly-plot .nsewdrag").first
    cells.scroll_into_view_if_needed()
    box = cells.bounding_box()  # the top row is the last block's FFN, at the middle position of the 12 characters
    fresh.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + 3)
    fresh.wait_for_url("**tab=block**", timeout=WAIT)
    position = parse_qs(urlsplit(fresh.url).query)["position"][0]
    assert position in ("5", "6")
    fresh.get_by_role("tab", name="Block: norm & FFN", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    assert slider_value(panel, "number input for Layer") == "3"
    assert f"Layer 3, position {position}" in panel.inner_text()
    assert fresh.evaluate("window.stayed") is True
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def head_shown(page) -> str:
    """The Attention tab's one-head figure's title ("L0 H3: pattern")."""
    return page.evaluate("() => [...document.querySelectorAll('#tab-attention .js-plotly-plot')].map((g) => "
                         "(g.layout.annotations || []).map((a) => a.text).join(' ')).join(' ')")


def test_a_slider_redraws_on_enter_in_its_box_and_on_the_arrow_keys(fresh, url):
    open_link(fresh, url + "?tab=attention&model=tiny-gpt-char")
    panel = tab_panel(fresh)
    assert "L0 H0: pattern" in head_shown(fresh)
    box = panel.get_by_label("number input for Head")
    box.fill("2")
    box.press("Enter")  # focus stays in the box: Gradio alone would redraw only when it is left
    fresh.wait_for_function("() => document.querySelector('#tab-attention').innerText !== null && "
                            "[...document.querySelectorAll('#tab-attention .js-plotly-plot')].some((g) => "
                            "(g.layout.annotations || []).some((a) => a.text === 'L0 H2: pattern'))", timeout=WAIT)
    handle = panel.get_by_label("range slider for Head")
    handle.focus()
    handle.press("ArrowRight")
    fresh.wait_for_function("() => [...document.querySelectorAll('#tab-attention .js-plotly-plot')].some((g) => "
                            "(g.layout.annotations || []).some((a) => a.text === 'L0 H3: pattern'))", timeout=WAIT)
    assert box.input_value() == "3" and error_toasts(fresh) == [] and fresh.console_errors == []


def test_a_sentence_typed_on_one_tab_is_the_text_of_every_tab(fresh, url):
    """Typed on the Overview, it is the Causal mask's and the Block's text (and what they draw); typed on the LM
    head, it comes back to the Block; patching keeps its own two prompts."""
    open_link(fresh, url + "?tab=overview&model=tiny-gpt-char")
    typed = tab_panel(fresh).locator("textarea").first
    typed.fill("A dog ran")
    typed.press("Enter")
    settle(fresh)
    for title in ("Causal mask", "Block: norm & FFN"):
        open_tab(fresh, title)
        settle(fresh)
        assert tab_panel(fresh).locator("textarea").first.input_value() == "A dog ran", title
    assert "of 9 tokens" in tab_panel(fresh).inner_text()  # the Block drew it: 9 characters
    open_tab(fresh, "LM head & sampling")
    settle(fresh)
    typed = tab_panel(fresh).locator("textarea").first
    typed.fill("To be")
    typed.press("Enter")
    settle(fresh)
    open_tab(fresh, "Block: norm & FFN")
    settle(fresh)
    assert tab_panel(fresh).locator("textarea").first.input_value() == "To be"
    assert "of 5 tokens" in tab_panel(fresh).inner_text()
    open_tab(fresh, "Activation patching")
    assert "To be" not in [t.input_value() for t in tab_panel(fresh).locator("textarea").all()]
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def test_a_patching_sweep_draws_and_mismatched_prompts_get_a_plain_message(fresh, url):
    fresh.goto(url + "?tab=patching&model=tiny-gpt-char&clean=the+king+and+quee&corrupt=the+lord+and+ladi"
                     "&answer=n&wrong=e&patch=residual+stream,heads")
    fresh.get_by_role("tab", name="Activation patching", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    panel.get_by_role("button", name="Run the patching sweep").click()
    panel.get_by_text("2 of 2 sweeps").wait_for(timeout=120_000)
    settle(fresh)
    assert panel.locator(".js-plotly-plot .heatmaplayer").count() == 2 and "predicts 'n'" in panel.inner_text()
    corrupt = panel.get_by_label("Corrupted prompt (same number of tokens)")
    corrupt.fill("the lords and ladi")
    panel.get_by_role("button", name="Run the patching sweep").click()
    fresh.locator(".toast-body.error").first.wait_for(timeout=WAIT)
    assert "must be the same length" in "".join(error_toasts(fresh))
    assert fresh.console_errors == []


def test_two_branches_from_two_candidates_show_side_by_side(fresh, url):
    """Pick a candidate, branch; pick another, branch: the tree has a row for each and the table their texts."""
    open_link(fresh, url + "?tab=lm_head&model=tiny-gpt-char")
    panel = tab_panel(fresh)
    picked = []
    for option in (1, 3):
        panel.get_by_label("Candidate to force (token, probability at T=1, unfiltered)").click()
        choice = fresh.get_by_role("option").nth(option)
        picked.append(choice.inner_text().split(" (")[0])
        choice.click()
        panel.get_by_role("button", name="Branch", exact=True).click()
        settle(fresh)
    tree = panel.locator(".js-plotly-plot").filter(has_text="then what the model writes greedily")
    rows = tree.locator(".ytick").all_text_contents()  # SVG text: no innerText
    assert len(rows) == 2 and {row.split(" (")[0] for row in rows} == set(picked), (rows, picked)
    assert panel.get_by_text("the branch's text").count() == 1
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def test_two_models_side_by_side_draw_say_plainly_what_an_encoder_lacks_and_link_into_their_tabs(fresh, url):
    open_link(fresh, url + "?tab=compare&left=tiny-gpt-char&right=tiny-moe&text=The+cat+sat+on+the")
    panel = tab_panel(fresh)
    assert panel.locator(".js-plotly-plot").count() == 3 and "Top-10 overlap:" in panel.inner_text()
    assert panel.locator("span[title^='id ']").count() == 2 * len("The cat sat on the")  # both models read characters
    panel.get_by_label("Right model").click()
    fresh.get_by_role("option", name="minilm-l6", exact=False).click()
    panel.get_by_text("comparing next tokens needs two decoders").wait_for(timeout=WAIT)
    settle(fresh)
    assert "minilm-l6 is an encoder" in panel.inner_text() and panel.locator(".js-plotly-plot").count() == 3
    assert error_toasts(fresh) == []
    panel.get_by_role("link", name="LM head & sampling").click()  # the left model's: the encoder has no LM head link
    fresh.get_by_role("tab", name="LM head & sampling", exact=True, selected=True).wait_for(timeout=WAIT)
    assert "model=tiny-gpt-char" in fresh.url and "text=The+cat+sat+on+the" in fresh.url
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def dataframe_rows(panel, i: int):
    """The rows of the panel's i-th table (a Gradio 6 Dataframe draws them as [role=row] divs, not <tr>)."""
    return panel.locator(".virtual-body").nth(i).locator("[role=row]")


def test_beam_search_draws_its_tree_beside_greedy_and_grows_with_its_width(fresh, url):
    open_link(fresh, url + "?tab=beam_search&model=tiny-gpt-char&text=ROMEO%3A&width=3&n=6")
    panel = tab_panel(fresh)
    panel.get_by_text("Searched").wait_for(timeout=WAIT)           # "Searched 6 steps with 3 beams, looking at ..."
    assert "with 3 beams" in panel.inner_text() and panel.locator(".js-plotly-plot").count() == 1
    assert "finished" in panel.locator(".js-plotly-plot").inner_text()  # the legend: kept, finished, pruned
    assert dataframe_rows(panel, 0).count() == 3 and dataframe_rows(panel, 1).count() == 3
    assert "greedy" in dataframe_rows(panel, 1).nth(1).inner_text()
    width = panel.get_by_label("number input for Beam width B", exact=True)
    width.fill("8")
    width.press("Tab")
    panel.get_by_role("button", name="Search", exact=True).click()
    panel.get_by_text("with 8 beams").wait_for(timeout=WAIT)
    assert dataframe_rows(panel, 0).count() == 8
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def test_steering_draws_its_shift_and_sweep_generates_per_coefficient_and_refuses_a_bad_pair(fresh, url):
    open_link(fresh, url + "?tab=steering&model=tiny-gpt-char&text=ROMEO%3A+I&pairs=love+%7C+hate&layer=2&c=4")
    panel = tab_panel(fresh)
    panel.get_by_text("moves by").wait_for(timeout=WAIT)
    assert panel.locator(".js-plotly-plot").count() == 2 and "steered, c = 4" in panel.inner_text()
    panel.get_by_role("button", name="Generate", exact=True).click()
    panel.get_by_text("Greedy continuations of 12 tokens").wait_for(timeout=WAIT)
    rows = dataframe_rows(panel, 0)
    assert rows.count() == 4 and rows.nth(0).locator("[role=gridcell]").first.inner_text().strip() == "-4"
    box = panel.get_by_label("Contrast pairs: plus | minus, one a line")
    box.fill("love | hated")
    box.press("Shift+Enter")
    fresh.locator(".toast-body.error").first.wait_for(timeout=WAIT)
    assert "'love' is 4 tokens and 'hated' is 5" in "".join(error_toasts(fresh))
    assert fresh.console_errors == []


def test_a_gradio_client_calls_the_named_api(url):
    """The README's example: the endpoints answer a client with what the tab shows."""
    from gradio_client import Client
    client = Client(url, verbose=False)
    html = client.predict("The cat sat on the mat.", ["tiny-gpt-char", "smollm2-135m"], api_name="/tokenize")
    assert "tiny-gpt-char" in html and "smollm2-135m" in html
    stages, notice, *_ = client.predict("smollm2-135m", "The capital of France is", -1, 1.0, 0, 1.0, 0, 100,
                                        api_name="/lm_head")
    assert "Paris" in json.dumps(stages)
    with pytest.raises(Exception, match="Type some text"):
        client.predict("", ["tiny-gpt-char"], api_name="/tokenize")


def test_training_streams_its_default_run_cancels_keeps_and_refuses_bad_settings(fresh, url):
    fresh.goto(url + "?tab=training&model=tiny-gpt-char")
    fresh.get_by_role("tab", name="Training", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    panel.get_by_role("button", name="Train from scratch").click()
    fresh.wait_for_function("document.body.innerText.includes('tokens/s')", timeout=WAIT, polling=500)
    curves = panel.locator(".js-plotly-plot").filter(has_text="held-out")
    assert curves.locator(".scatterlayer .trace").count() == 3  # training batch, held-out, guessing uniformly
    assert panel.get_by_text("step 0", exact=True).count() == 1  # the untrained model's sample
    panel.get_by_role("button", name="Cancel").click()
    fresh.wait_for_function("document.body.innerText.includes('Cancelled after')", timeout=WAIT, polling=200)
    settle(fresh)
    panel.get_by_role("button", name="Keep this model for the other tabs").click()
    fresh.wait_for_function("document.body.innerText.includes('Kept as my-tiny-gpt-')", timeout=WAIT, polling=200)
    assert error_toasts(fresh) == []
    panel.get_by_label("Peak learning rate (0.0001 to 0.03)").fill("5")
    panel.get_by_role("button", name="Train from scratch").click()
    fresh.locator(".toast-body.error").first.wait_for(timeout=WAIT)
    assert "The learning rate must be from 0.0001 to 0.03" in "".join(error_toasts(fresh))



def test_fine_tuning_runs_draws_its_curves_cancels_and_refuses_bad_input_plainly(fresh, url):
    """A short run through the page (the default run's numbers are tests/test_finetune.py's)."""
    fresh.goto(url + "?tab=finetune")
    fresh.get_by_role("tab", name="Fine-tuning", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    run = panel.get_by_role("button", name="Fine-tune both ways")
    panel.get_by_text("Settings").click()
    steps = panel.get_by_label("number input for Steps")
    steps.fill("6")
    steps.press("Enter")
    run.click()  # tiny-gpt-char on the Constitution, full fine-tuning and LoRA side by side, 6 steps
    panel.get_by_text("Merged the adapter").wait_for(timeout=600_000)
    settle(fresh)
    assert panel.locator(".js-plotly-plot").count() == 3  # the curves, next-token probabilities, dW
    assert panel.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").count() >= 5
    assert "ROUGE-L" in panel.inner_text() and "| before" not in panel.inner_text()  # tables drawn as tables
    assert error_toasts(fresh) == []
    steps.fill("1000")
    steps.press("Enter")
    run.click()
    fresh.wait_for_function("document.body.innerText.includes('Step ')", timeout=120_000)
    panel.get_by_role("button", name="Cancel").click()
    fresh.wait_for_function("document.body.innerText.includes('Cancelled at step')", timeout=WAIT)
    settle(fresh)
    assert error_toasts(fresh) == []
    panel.get_by_role("radio", name="My own text (paste it below)").check()
    pasted = panel.get_by_role("textbox", name="Your text")
    for text, message in [("", "The corpus is empty"), ("abc", "paste at least"), ("x" * 5_000_000, "paste at most")]:
        pasted.fill(text)
        run.click()
        fresh.locator(".toast-body.error").filter(has_text=message).first.wait_for(timeout=WAIT)
    panel.get_by_role("radio", name="The Constitution of the United States").check()
    panel.get_by_label("Learning rate, full").fill("5")
    run.click()
    fresh.locator(".toast-body.error").filter(has_text="must be from").first.wait_for(timeout=WAIT)


def test_instruction_tuning_shows_the_template_replies_live_fine_tunes_and_refuses_bad_settings(fresh, url):
    """A short reply and a short SFT run through the page (the default run's numbers are tests/test_instruct.py's)."""
    fresh.goto(url + "?tab=instruct&model=tiny-gpt-char&n=6&steps=8")
    fresh.get_by_role("tab", name="Instruction tuning", exact=True, selected=True).wait_for(timeout=WAIT)
    panel = tab_panel(fresh)
    panel.get_by_text("reply starts here").wait_for(timeout=WAIT)  # the template, drawn when the tab opened
    assert "tiny-gpt-char** has no chat template" not in panel.inner_text()  # rendered as Markdown
    assert "has no chat template" in panel.inner_text() and panel.locator("span[title^='id 1:']").count() >= 3
    panel.get_by_role("button", name="Reply").click()
    fresh.wait_for_function("document.body.innerText.includes('6-token limit') || "
                            "document.body.innerText.includes('closed its turn')", timeout=WAIT, polling=300)
    assert panel.locator("span[title*='The five likeliest']").count() >= 1
    panel.get_by_role("button", name="Fine-tune on the pairs").click()
    fresh.wait_for_function("document.body.innerText.includes('Held-out response loss')", timeout=WAIT, polling=300)
    settle(fresh)
    assert "Finished" in panel.inner_text() and "Right:" in panel.inner_text()
    curves = panel.locator(".js-plotly-plot").filter(has_text="held-out pairs")
    assert curves.locator(".scatterlayer .trace").count() == 3
    assert error_toasts(fresh) == []
    panel.get_by_label("Peak learning rate (0.00001 to 0.01)").fill("5")
    panel.get_by_role("button", name="Fine-tune on the pairs").click()
    fresh.locator(".toast-body.error").filter(has_text="learning rate must be from").first.wait_for(timeout=WAIT)
    box = panel.get_by_label("Instruction", exact=True)
    box.fill("   ")
    box.press("Enter")
    fresh.locator(".toast-body.error").filter(has_text="Type an instruction first").first.wait_for(timeout=WAIT)
    assert fresh.console_errors == []
def test_preference_tuning_runs_a_short_dpo_cancels_and_refuses_bad_settings_plainly(fresh, url):
    """A short DPO run through the page (the default run's numbers are tests/test_preference.py's)."""
    fresh.goto(url + "?tab=preference")
    fresh.get_by_role("tab", name="Preference tuning", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    assert "Reward model" in panel.inner_text() and "chosen y_c" in panel.inner_text()  # RLHF's stages, the pairs
    steps = panel.get_by_label("number input for Steps")
    steps.fill("4")
    steps.press("Enter")
    run = panel.get_by_role("button", name="Run DPO")
    run.click()
    panel.get_by_text("Finished: 4 steps").wait_for(timeout=600_000)
    settle(fresh)
    assert panel.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").count() >= 10
    text = panel.inner_text()
    assert "after DPO (the policy)" in text and "reward accuracy" in text and "| DPO loss" not in text
    assert error_toasts(fresh) == []
    steps.fill("300")
    steps.press("Enter")
    run.click()
    fresh.wait_for_function("document.body.innerText.includes('Step ')", timeout=120_000)
    panel.get_by_role("button", name="Cancel").click()
    fresh.wait_for_function("document.body.innerText.includes('Cancelled at step')", timeout=WAIT)
    settle(fresh)
    assert error_toasts(fresh) == []
    panel.get_by_label("β (0.01 to 5)").fill("100")
    run.click()
    fresh.locator(".toast-body.error").filter(has_text="The beta must be from").first.wait_for(timeout=WAIT)
def test_data_parallelism_trains_on_two_processes_checks_the_weights_and_computes_memory(fresh, url):
    """A short run through the page (the default run's numbers are tests/test_parallel.py's), then the calculator."""
    open_link(fresh, url + "?tab=parallel&steps=10&batch=4&width=16&layers=1")
    panel = tab_panel(fresh)
    panel.get_by_text("31.4 GB").first.wait_for(timeout=WAIT)  # the calculator opens on the paper's example
    panel.get_by_role("button", name="Train on 2 processes").click()
    panel.get_by_text("The check").wait_for(timeout=300_000)
    settle(fresh)
    text = panel.inner_text()
    assert "Finished 10 steps" in text and "max |w_ranks − w_one process|" in text
    assert "each rank sends 2(N − 1)/N × that" in text
    assert "rank 1: windows 2 to 3" in text and error_toasts(fresh) == []
    run = panel.locator(".js-plotly-plot").filter(has_text="median time per step")
    assert run.locator(".scatterlayer .trace").count() == 3 and run.locator(".barlayer .trace").count() == 3
    panel.get_by_role("button", name="SmolLM2-135M on 8 GPUs").click()
    panel.get_by_text("Memory per GPU on 8 GPUs").wait_for(timeout=WAIT)
    assert "269 MB" in panel.inner_text()
    gpus = panel.get_by_label("GPUs (N)")
    gpus.fill("0")
    gpus.press("Enter")
    fresh.locator(".toast-body.error").filter(has_text="number of GPUs must be from 1").first.wait_for(timeout=WAIT)
    panel.get_by_label("Peak learning rate (0.0001 to 0.03)").fill("5")
    panel.get_by_role("button", name="Train on 2 processes").click()
    fresh.locator(".toast-body.error").filter(has_text="learning rate must be from").first.wait_for(timeout=WAIT)
def test_scaling_trains_a_short_ladder_from_a_link_moves_the_budget_and_calculates(fresh, url):
    """Three sizes of 20 steps through the page (the default ladder's numbers are tests/test_scaling.py's)."""
    open_link(fresh, url + "?tab=scaling&sizes=8,16,32&steps=20&budget=9")
    panel = tab_panel(fresh)
    panel.get_by_text("5.88 × 10").first.wait_for(timeout=WAIT)  # the calculator drew Chinchilla's numbers on opening
    panel.get_by_role("button", name="Train the ladder").click()
    fresh.wait_for_function("document.body.innerText.includes('Finished the ladder')", timeout=300_000, polling=500)
    settle(fresh)
    plots = panel.locator(".js-plotly-plot")
    assert plots.nth(0).locator(".scatterlayer .trace").count() == 4  # three sizes and the fitted power law
    assert "α =" in plots.nth(0).inner_text() and plots.nth(1).locator(".scatterlayer .trace").count() == 3
    assert "frontier" in plots.nth(2).inner_text() and "the best size is width" in panel.inner_text()
    budget = panel.get_by_label("number input for Compute budget: 10^x FLOPs")
    budget.fill("13")
    budget.press("Enter")
    panel.get_by_text("Its whole run cost").wait_for(timeout=WAIT)  # beyond every run: the best finished size
    for box, value in [("Parameters N", "135M"), ("Training tokens D", "2T")]:
        panel.get_by_label(box).fill(value)
    panel.get_by_label("Training tokens D").press("Enter")
    panel.get_by_text("C = 6ND = 1.62 × 10").wait_for(timeout=WAIT)
    assert error_toasts(fresh) == []
    panel.get_by_label("Parameters N").fill("banana")
    panel.get_by_label("Parameters N").press("Enter")
    fresh.locator(".toast-body.error").filter(has_text="must be a number such as 70e9").first.wait_for(timeout=WAIT)
    panel.get_by_label("Peak learning rate (0.0001 to 0.03)").fill("5")
    panel.get_by_role("button", name="Train the ladder").click()
    fresh.locator(".toast-body.error").filter(has_text="The learning rate must be from").first.wait_for(timeout=WAIT)


def test_the_quantization_tab_follows_group_size_and_layer_and_refuses_a_bad_group(fresh, url):
    open_link(fresh, url + "?tab=quantization&model=tiny-gpt-char")
    panel = tab_panel(fresh)
    panel.get_by_text("bytes per weight (fp32: 4)").wait_for(timeout=120_000)
    settle(fresh)
    assert panel.locator(".js-plotly-plot").count() == 4  # the GGUF block, the errors, the scales, the size
    assert "groups of 32" in panel.inner_text() and "Layer 0's relative error" in panel.inner_text()
    group = panel.get_by_label("Group size (int4)")
    group.fill("64")
    group.press("Enter")
    panel.get_by_text("groups of 64").wait_for(timeout=120_000)
    assert "int4, one per group of 64" in " ".join(panel.locator(".y2tick").all_text_contents())
    track = panel.locator("input[type=range]").first.bounding_box()  # a click at the end: the last layer, 3
    fresh.mouse.click(track["x"] + track["width"] - 2, track["y"] + track["height"] / 2)
    panel.get_by_text("Layer 3's relative error").wait_for(timeout=120_000)
    panel.get_by_text("blk.3.ffn_down.weight").first.wait_for(timeout=120_000)
    group.fill("48")
    group.press("Enter")
    fresh.locator(".toast-body.error").first.wait_for(timeout=WAIT)
    assert "does not divide rows of 128" in "".join(error_toasts(fresh))


# Lesson mode: a lesson on the tiny models walks through six tabs; a broken one is reported with its lines.
WALK = """# A test walk
model: tiny-gpt-char
text: To be or not

## Tokens
tab: tokenizer
tokenizers: tiny-gpt-char

Characters, one token each.

## The mask
tab: causal_mask
layer: 1
mask: causal

Only the past.

## Heads
tab: attention
layer: 2
head: 1

A head.

## A block
tab: block
layer: 1

Norm and FFN.

## The stream
tab: residual

Sums.

## Sampling
tab: lm_head
temperature: 0.5
top_k: 5

The next token.
"""
BROKEN = """# A broken lesson
model: tiny-gpt-char

## Good one
tab: overview

First.

## Typo
tab: atention

## Too hot
tab: lm_head
temperature: 9

## Good two
tab: causal_mask

Last.
"""
WALK_TABS = ["tokenizer", "causal_mask", "attention", "block", "residual", "lm_head"]


@pytest.fixture(scope="module")
def lesson_url(tmp_path_factory):
    """The app with a lessons folder of its own: the test lessons and the shipped one."""
    folder = tmp_path_factory.mktemp("lessons")
    (folder / "test-walk.md").write_text(WALK)
    (folder / "broken.md").write_text(BROKEN)
    (folder / "tokens-to-sampling.md").write_text((ROOT / "assets/lessons/tokens-to-sampling.md").read_text())
    yield from serve(folder / "app.log", "--model", "tiny-gpt-char", EXPLAINER_LESSONS=str(folder))


def lesson_heading(page) -> str:
    return page.locator(".lesson-heading").first.inner_text()


def wait_for_step(page, k: int, n: int, tab: str) -> None:
    """Step k of n is shown: its heading, its tab open in its chapter, its figures drawn, no error."""
    page.wait_for_function(f"document.querySelector('.lesson-heading')?.innerText.includes('Step {k} of {n}')",
                           timeout=WAIT)
    page.locator(f"#tab-{tab}").wait_for(state="visible", timeout=WAIT)
    settle(page)
    assert error_toasts(page) == [], (k, error_toasts(page))


def test_a_lesson_runs_start_to_end_with_next_and_the_arrow_keys(fresh, lesson_url):
    fresh.goto(lesson_url)
    fresh.wait_for_selector(".js-plotly-plot >> visible=true", timeout=120_000)
    settle(fresh)
    fresh.locator(".lesson-launcher input").first.click()
    fresh.get_by_role("option", name="A test walk").click()
    fresh.get_by_role("button", name="Start the lesson").click()
    n = len(WALK_TABS)
    wait_for_step(fresh, 1, n, WALK_TABS[0])
    assert fresh.get_by_role("button", name="← Back").is_disabled()
    assert fresh.get_by_role("button", name="Start the lesson").count() == 0  # the launcher hides during a lesson
    for k, tab in enumerate(WALK_TABS[1:], 2):
        if k % 2:
            fresh.keyboard.press("ArrowRight")
        else:
            fresh.get_by_role("button", name="Next →").click()
        wait_for_step(fresh, k, n, tab)
        if tab == "causal_mask":  # the figures follow the step: its text, redrawn
            panel = tab_panel(fresh)
            assert panel.locator("textarea").first.input_value() == "To be or not"
            assert "0:T" in panel.locator(".js-plotly-plot").first.inner_text()
            assert slider_value(panel, "number input for Layer") == "1"
    assert fresh.get_by_role("button", name="Next →").is_disabled()
    assert slider_value(tab_panel(fresh), "number input for Temperature (0 = greedy)") == "0.5"
    fresh.keyboard.press("ArrowLeft")
    wait_for_step(fresh, n - 1, n, WALK_TABS[-2])
    box = tab_panel(fresh).locator("textarea").first  # arrows in a text box move the caret, not the lesson
    box.focus()
    box.press("ArrowLeft")
    fresh.wait_for_timeout(1000)
    assert f"Step {n - 1} of {n}" in lesson_heading(fresh)
    assert parse_qs(urlsplit(copy_link(fresh)).query) == {"lesson": ["test-walk"], "step": [str(n - 1)]}
    fresh.get_by_role("button", name="End the lesson").click()
    fresh.get_by_role("button", name="Start the lesson").wait_for(timeout=WAIT)
    assert fresh.console_errors == []


IN_VIEW = "[...document.querySelectorAll(%s)].find((e) => e.offsetParent !== null).getBoundingClientRect().top"


def in_view(page, selector: str) -> float:
    """Where the first visible element matching selector starts, in px from the top of the window."""
    return page.evaluate(f"() => {IN_VIEW % repr(selector)}")


def test_a_lesson_step_scrolls_its_figure_into_view_in_lecture_mode_at_1280x720(page, lesson_url):
    """The lecturer never scrolls: each step's figure (or the widget its `focus:` names) is at the top of the
    screen; the six chapters, and each one's tabs, fit beside the open sidebar; the header leaves most of the first
    screen to the tab."""
    lecture = page.context.browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        lecture.goto(lesson_url + "?lecture=1")
        lecture.wait_for_selector(".js-plotly-plot >> visible=true", timeout=120_000)
        settle(lecture)
        assert in_view(lecture, ".chapters") < 300  # was 475 px of header before any content
        lecture.locator(".lesson-launcher input").first.click()
        lecture.get_by_role("option", name="From tokens to sampling").click()
        lecture.get_by_role("button", name="Start the lesson").click()
        wait_for_step(lecture, 1, 17, "overview")
        assert lecture.locator(".chapters > .tab-wrapper .overflow-menu:not(.hide)").count() == 0  # no "..." menu
        for k, tab, target in [(2, "tokenizer", "#setting-tokenizer-text"), (3, "tokenizer", "#setting-tokenizer-text"),
                               (4, "tokenizer", "#setting-tokenizer-vocab"),
                               (5, "embeddings", "#tab-embeddings .js-plotly-plot"),
                               (6, "embeddings", "#setting-embeddings-text")]:
            lecture.get_by_role("button", name="Next →").click()
            wait_for_step(lecture, k, 17, tab)
            try:  # the step's last scroll comes after the figures above it drew (settled above)
                lecture.wait_for_function(f"(t => t >= 0 && t < 120)({IN_VIEW % repr(target)})", timeout=10_000,
                                          polling=POLL)
            except Exception:
                raise AssertionError((k, target, in_view(lecture, target))) from None
        for chapter in CHAPTERS:  # and each chapter's tabs fit in one row beside it (six in Learning)
            lecture.get_by_role("tab", name=chapter).click()
            lecture.get_by_role("tab", name=CHAPTERS[chapter][0][1], exact=True).wait_for(timeout=WAIT)
            lecture.wait_for_timeout(300)
            assert lecture.locator(".overflow-menu:not(.hide) >> visible=true").count() == 0, chapter
    finally:
        lecture.close()


def test_a_broken_lesson_names_its_bad_steps_by_line_and_runs_the_rest(fresh, lesson_url):
    fresh.goto(lesson_url + "?lesson=broken")
    wait_for_step(fresh, 1, 2, "overview")
    report = fresh.locator(".lesson-report").first.inner_text()
    assert "line 10: step “Typo”: no tab 'atention'" in report, report
    assert "line 14: step “Too hot”: temperature='9' does not fit" in report, report
    fresh.keyboard.press("ArrowRight")
    wait_for_step(fresh, 2, 2, "causal_mask")
    assert "Last." in fresh.locator(".lesson-narration").first.inner_text()
    assert fresh.console_errors == []


def test_a_link_opens_the_shipped_lesson_at_a_step(fresh, lesson_url):
    fresh.goto(lesson_url + "?lesson=tokens-to-sampling&step=14&lecture=1")
    wait_for_step(fresh, 14, 17, "lm_head")
    assert tab_panel(fresh).locator("textarea").first.input_value() == "Once upon a time, there was a little"
    assert "smollm2-135m" in fresh.locator("input[role=listbox], input[aria-label=Model]").first.input_value()
    assert fresh.evaluate("document.body.classList.contains('lecture')")
    fresh.get_by_role("tab", name="4 · Out to text", exact=True).wait_for()  # the chapter row fits beside the panel
    assert fresh.console_errors == []


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory):
    """A server whose Hugging Face cache holds a random Gemma 3 (a sliding and a global layer) under a hub id, as a
    download leaves it; the hub itself offline."""
    import huggingface_hub.constants
    from conftest import tiny_hf
    from test_load_by_name import in_hub_cache
    cache = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", cache)
        in_hub_cache("test-org/tiny-gemma3", tiny_hf("gemma3"))
    yield from serve(tmp_path_factory.mktemp("app") / "app.log", HF_HUB_CACHE=str(cache),
                     EXPLAINER_CACHE=str(tmp_path_factory.mktemp("converted")))


def test_a_hub_id_typed_into_the_picker_loads_that_model_and_a_missing_one_is_refused_in_a_sentence(fresh, hub_url):
    open_link(fresh, hub_url + "?tab=causal_mask&model=tiny-gpt-char")
    box = fresh.get_by_label("Model", exact=True)
    box.fill("test-org/not-here")
    box.press("Enter")
    fresh.get_by_text("test-org/not-here is not in this server's Hugging Face cache").wait_for(timeout=WAIT)
    assert box.input_value().startswith("tiny-gpt-char")          # the picker stays on the model shown
    box.fill("test-org/tiny-gemma3")
    box.press("Enter")
    panel = tab_panel(fresh)
    panel.get_by_text("Layer 0 slides: each query sees only the last 5 tokens").wait_for(timeout=120_000)
    settle(fresh)
    assert box.input_value().startswith("test-org/tiny-gemma3") and "Gemma3 family" in box.input_value()
    assert error_toasts(fresh) == [] and fresh.console_errors == []


def slider_range(panel, label: str) -> tuple[str, str]:
    track = panel.get_by_label(f"range slider for {label}", exact=True).first
    return track.get_attribute("min"), track.get_attribute("max")


def test_a_model_switch_moves_the_block_tab_s_layer_into_the_new_model_and_a_new_text_sets_the_position_range(fresh,
                                                                                                          url):
    """Block at layer 29 on SmolLM2 (30 layers), then MiniLM (6): the layer shows 5 of at most 5 and the note says it
    moved, with no error; the position slider spans the text's tokens, after a switch and after a new text."""
    from playwright.sync_api import expect

    from core.weights import zoo
    position = "Position (−1 = the last token)"
    open_link(fresh, url + "?tab=block&model=smollm2-135m&layer=29")
    panel = tab_panel(fresh)
    assert slider_value(panel, "number input for Layer") == "29" and slider_range(panel, "Layer") == ("0", "29")
    text = panel.locator("textarea").first
    tokens = len(zoo.load("smollm2-135m").tokenizer.tokens(text.input_value()))
    assert slider_range(panel, position) == ("-1", str(tokens - 1))
    box = fresh.get_by_label("Model", exact=True)
    box.fill("minilm-l6")
    box.press("Enter")
    panel.get_by_text("The layer was 29; minilm-l6 has 6 layers, 0 to 5, so 5 is shown.").wait_for(timeout=WAIT)
    settle(fresh)
    assert slider_value(panel, "number input for Layer") == "5" and slider_range(panel, "Layer") == ("0", "5")
    assert "Layer 5," in panel.inner_text()
    tokens = len(zoo.load("minilm-l6").tokenizer.tokens(text.input_value()))
    assert slider_range(panel, position) == ("-1", str(tokens - 1))
    assert error_toasts(fresh) == [] and panel.get_by_text("Error", exact=True).count() == 0
    longer = "ROMEO: But soft, what light through yonder window breaks? It is the east"
    text.fill(longer)
    text.press("Enter")
    tokens = len(zoo.load("minilm-l6").tokenizer.tokens(longer))
    expect(panel.get_by_label(f"range slider for {position}", exact=True)).to_have_attribute("max", str(tokens - 1),
                                                                                            timeout=WAIT)
    settle(fresh)
    assert f"of {tokens} tokens" in panel.inner_text()
    assert error_toasts(fresh) == [] and panel.get_by_text("Error", exact=True).count() == 0
    assert fresh.console_errors == []
