"""The app in headless Chromium, by link: deep links and "Copy link to this view", lessons, a model by its hub id and a
model switch."""
from urllib.parse import parse_qs, urlsplit

import pytest
from browser import (
    CHAPTERS,
    POLL,
    ROOT,
    WAIT,
    error_toasts,
    needs_chromium,
    open_link,
    open_tab,
    select,
    serve,
    settle,
    slider_value,
    tab_panel,
)

pytestmark = [pytest.mark.slow, needs_chromium]


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
