"""The app in headless Chromium, tab by tab: every tab loads, runs an example and draws, with no error; its buttons,
sliders, figures' downloads and lecture mode work."""
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser import (
    TABS,
    WAIT,
    error_toasts,
    needs_chromium,
    open_link,
    open_tab,
    settle,
    slider_value,
    tab_panel,
    wait_for_text,
)

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.mark.parametrize("tab", TABS)
def test_tab_runs_an_example_and_draws(page, tab):
    open_tab(page, tab)
    settle(page)
    panel = tab_panel(page)
    examples = panel.locator(".gallery-item, tr.tr-body, button.gallery-item")
    if examples.count():  # one click on its last example; every example's values are drawn in test_product.py
        examples.last.click()
        settle(page)
    # long work (patching, training, fine-tuning) runs when asked: their own tests run it (test_browser_learning.py)
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


def test_a_cancelled_generation_leaves_the_kv_tab_usable(fresh, url):
    """In a session of its own: on the shared page, after the other KV tests, the run once never started (its
    outputs showed Gradio's "Error", the summary stayed at "Starting…"; the cause is not found)."""
    open_link(fresh, url + "?tab=kv_cache&model=smollm2-135m&n=256")
    panel = tab_panel(fresh)
    panel.get_by_role("button", name="Generate both ways").click()
    wait_for_text(fresh, "Running with")  # under way
    panel.get_by_role("button", name="Cancel").click()  # reaches this run's job (pressed sooner, it could miss it)
    wait_for_text(fresh, "Cancelled (")
    count = panel.locator("input[type=number]").first
    count.fill("6")
    count.press("Enter")
    settle(fresh)
    panel.get_by_role("button", name="Generate both ways").click()
    panel.get_by_text("Identical tokens in both runs: yes").wait_for(timeout=120_000)
    assert "over 6 tokens" in panel.inner_text()
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
