"""Deep links, lecture mode, code panels and a bad-input battery over every handler of the built app."""
import inspect
import logging
import math
import re
import textwrap
from urllib.parse import parse_qs

import gradio as gr
import pytest
import torch

from explainers import chapters
from explainers.draw.widgets import FittedSlider
from explainers.page.groups import GROUPS
from explainers.page.links import make_query, parse_value, restore
from explainers.page.serving import handler


@pytest.fixture(scope="module")
def LINKS(demo):
    return demo.views.links


def test_every_tab_registers_link_settings_for_its_widgets(demo, LINKS):
    tabs = {key.split(".")[0] for key in LINKS}
    assert tabs == {"overview", "tokenizer", "embeddings", "causal_mask", "attention", "block", "moe", "residual",
                    "lm_head", "beam_search", "compare", "training", "finetune", "instruct", "preference", "scaling",
                    "parallel", "kv_cache", "patching", "steering", "quantization"}
    assert all(c in demo.blocks.values() for c in LINKS.values())


CHAPTERS = {"chapter-1": ["overview"], "chapter-2": ["tokenizer", "embeddings"],
            "chapter-3": ["causal_mask", "attention", "moe"], "chapter-4": ["lm_head"], "chapter-5": ["kv_cache"]}


def test_a_link_restores_tab_model_and_settings(LINKS):
    view = restore("?tab=causal_mask&model=tiny-gpt-char&text=ROMEO%3A+hi&layer=2&head=1&mask=bidirectional&window=5",
                   LINKS, {"chapter-1": ["overview"], "chapter-2": ["causal_mask"]}, "smollm2-135m")
    assert view.chapter == "chapter-2" and view.tab == "causal_mask"
    assert view.model == "tiny-gpt-char"
    assert view.lecture is False and view.note == ""
    got = view.values
    assert got["causal_mask.text"] == "ROMEO: hi" and got["causal_mask.layer"] == 2 and got["causal_mask.head"] == 1
    assert got["causal_mask.mask"] == "bidirectional" and got["causal_mask.window"] == 5
    assert all(k.startswith("causal_mask.") for k in got)  # the other widgets are left as they are


def test_a_link_made_from_a_view_restores_that_view(LINKS):
    values = {k: c.value for k, c in LINKS.items()}
    values.update({"moe.layer": 3, "moe.noise": 0.25, "moe.disable": ["e1", "e6"], "moe.text": "To be & not, = ?"})
    query = make_query("moe", "tiny-moe", True, values)
    assert parse_qs(query[1:])["disable"] == ["e1,e6"]
    view = restore(query, LINKS, {"chapter-1": ["moe"]}, "smollm2-135m")
    assert (view.chapter, view.tab, view.model, view.lecture, view.note) == ("chapter-1", "moe", "tiny-moe", True, "")
    for key in LINKS:
        if key.startswith("moe."):
            got = view.values[key]
            assert (got.value if isinstance(got, gr.Dropdown) else got) == values[key], key
    assert restore("?tab=moe", LINKS, {"chapter-1": ["moe"]}, "smollm2-135m", lecture_default=True).lecture is True
    assert restore("?tab=moe&lecture=0", LINKS, {"chapter-1": ["moe"]}, "smollm2-135m", lecture_default=True).lecture \
        is False


EVERY_TAB = [(f"?tab={chapters.tab_id(tab)}" + ("&model=tiny-gpt-char" if i % 2 else ""), f"chapter-{c}")
             for c, (_, tabs) in enumerate(chapters.CHAPTERS, 1) for i, tab in enumerate(tabs)]  # a link, its chapter


@pytest.mark.parametrize("query, chapter", EVERY_TAB)
def test_a_link_to_a_tab_selects_its_chapter_and_the_tab_in_it(demo, query, chapter):
    """The page's updates for a link to any tab: its chapter in the chapter row, its tab in that chapter's row, no
    other row (the browser opens one link per chapter: tests/test_browser_links.py)."""
    views = demo.views
    updates = views.apply(query)
    tab = query.split("&")[0].removeprefix("?tab=")
    assert updates[views.w["chapters"]].selected == chapter
    rows = {c: updates[row].selected for c, row in views.w["rows"].items() if row in updates}
    assert rows == {chapter: tab} and updates[views.screen]["tabs"][chapter] == tab
    assert updates[views.screen]["chapter"] == chapter


def test_nothing_draws_before_the_page_s_link_is_applied(demo):
    """As the page loads, Gradio sends the select of the first chapter and its first tab before the link is applied
    (generation 0): drawing the Overview then, on the default model, would be wasted work for a link to another tab.
    Once the link is applied, the tab it opens draws."""
    views = demo.views
    loading = views.selected("chapter-1", "overview", None, 0, {})
    assert loading[views.screen]["chapter"] == "chapter-1"  # what is on screen is kept
    assert not any(request in loading for request in views.requests.values())
    applied = views.apply("?tab=causal_mask&model=tiny-gpt-char")
    looked = views.look(applied[views.screen], applied[views.generation], {})
    assert [tab for tab, request in views.requests.items() if request in looked] == ["causal_mask"]


def test_a_view_that_fails_to_open_still_leaves_the_page_drawing(demo, monkeypatch, caplog):
    """Past generation 0 whatever happens: a fault while a link is restored is said in the note, logged, and the tab
    on screen draws its defaults."""
    import explainers.page.views as views_module
    views = demo.views
    monkeypatch.setattr(views_module, "start_model", lambda default: 1 / 0)
    applied = views.apply("?tab=causal_mask")
    assert applied[views.generation] > 0 and "could not be opened" in applied[views.w["note"]]
    assert "ZeroDivisionError" in caplog.text
    looked = views.look(None, applied[views.generation], {})
    assert [tab for tab, request in views.requests.items() if request in looked] == ["overview"]


def test_one_text_for_the_page_follows_the_learner_across_tabs(demo):
    """A link's text is the page's; a tab with a text that drew another text is stale, and takes the page's text
    (in the browser, before its draws) when it comes on screen; tabs without a text do not care; patching keeps
    its two prompts."""
    views = demo.views
    applied = views.apply("?tab=overview&model=tiny-gpt-char&text=A dog ran home")
    assert applied[views.text] == "A dog ran home"
    generation = applied[views.generation]
    drawn = views.look(applied[views.screen], generation, {}, "A dog ran home")[views.drawn]
    block = {"chapter": "chapter-3", "tabs": {"chapter-3": "block"}}
    first = views.look(block, generation, drawn, "A dog ran home")
    assert views.requests["block"] in first
    assert views.requests["block"] not in views.look(block, generation, first[views.drawn], "A dog ran home")
    again = views.look(block, generation, first[views.drawn], "To be or not")  # typed on another tab meanwhile
    assert views.requests["block"] in again and again[views.requests["block"]] != first[views.requests["block"]]
    quant = {"chapter": "chapter-6", "tabs": {"chapter-6": "quantization"}}
    done = views.look(quant, generation, drawn, "A dog ran home")[views.drawn]
    assert views.requests["quantization"] not in views.look(quant, generation, done, "To be or not")
    assert {"overview", "tokenizer", "causal_mask", "attention", "block", "moe", "residual", "lm_head"} <= set(views.texted)
    assert "patching" not in views.texted and "embeddings" not in views.texted  # two prompts; a sentence with its word
    kept = views.apply("?tab=quantization&model=tiny-gpt-char", "To be or not")
    assert kept[views.text] == "To be or not"  # a link without a text leaves the page's
    own = views.apply("?tab=embeddings&model=tiny-gpt-char&text=The bank by the bank", "To be or not")
    assert own[views.text] == "To be or not"  # and so does the sentence of a tab that keeps its own


def test_a_link_without_a_tab_stays_on_the_first_chapter_and_tab(demo):
    views = demo.views
    updates = views.apply("?model=tiny-gpt-char")
    assert updates[views.w["chapters"]].selected is None  # the page opens on them
    assert not any(row in updates for row in views.w["rows"].values()) and views.screen not in updates


@pytest.mark.parametrize("query, problem", [
    ("?tab=nowhere", "no tab 'nowhere'"),
    ("?model=gpt5", "model 'gpt5' is not available"),
    ("?tab=attention&layer=abc", "layer='abc' does not fit"),
    ("?tab=attention&layer=1e9", "layer='1e9' does not fit 'Layer' (it takes a number from 0 to 63)"),
    ("?tab=lm_head&temperature=nan", "temperature='nan' does not fit"),
    ("?tab=causal_mask&mask=rainbow", "mask='rainbow' does not fit"),
    ("?tab=causal_mask&mask=rainbow", "(it takes one of model's own, causal"),
    ("?tab=moe&disable=e1,e99", "disable='e1,e99' does not fit"),
    ("?tab=kv_cache&text=" + "x" * 3000, "text='xxx"),
    ("?tab=lm_head&colour=red", "unknown setting 'colour'"),
    ("?layer=2", "unknown setting 'layer' (no tab given)"),
    ("?lecture=maybe", "lecture must be 0 or 1"),
])
def test_a_bad_link_shows_defaults_and_says_which_settings_it_dropped(LINKS, query, problem):
    view = restore(query, LINKS, CHAPTERS, "smollm2-135m")
    assert problem in view.note and view.model == "smollm2-135m"
    assert view.values == {}


def test_link_values_are_checked_against_the_widget():
    slider = gr.Slider(0, 10, step=1, render=False)
    assert parse_value(slider, "3") == 3 and parse_value(slider, "2.5") == 2.5
    for raw in ["-1", "11", "inf", "x", ""]:
        with pytest.raises(ValueError, match="a number from 0 to 10"):
            parse_value(slider, raw)
    assert parse_value(gr.Textbox(render=False), "a\x00b\nc") == "ab\nc"


def event_of(demo, fn):
    """The first event of the app that runs fn."""
    return next(b for b in demo.fns.values() if getattr(b.fn, "__wrapped__", None) is fn)


def test_lecture_mode_styles_the_figures_of_a_session_in_lecture_mode_once():
    """`--lecture` makes the box start ticked; each session's box is the handler's last input, so a session that
    untick it gets plain figures, and figures are styled once (the attention update calls two other updates)."""
    import app
    from explainers.tabs import attention
    demo = app.build_app(lecture=True)
    assert demo.page.lecture.value is True
    event = event_of(demo, attention.update_all)
    assert event.inputs[-1] is demo.page.lecture
    args = ["tiny-gpt-char", "To be or not", 1, 2, ["L0 H1"]]
    plain, big = event.fn(*args, False), event.fn(*args, True)
    figures = [(p, b) for p, b in zip(plain, big) if hasattr(p, "layout")]
    assert len(figures) == 7
    for p, b in figures:
        assert b.layout.height == pytest.approx(int((p.layout.height or 450) * 1.25), abs=1)
        assert p.layout.font.size is None and b.layout.font.size >= 17
    assert big[1].data[0].z.tolist() == plain[1].data[0].z.tolist()  # same numbers, larger type


def resolve(dotted: str):
    """core.model.attention.Attention.forward -> that function: the longest importable module, then attributes."""
    import importlib
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise LookupError(dotted)


def test_code_panels_show_the_source_of_the_core_functions_that_run(demo):
    codes = [b for b in demo.blocks.values() if isinstance(b, gr.Code)]
    assert len(codes) >= 30
    for code in codes:
        assert code.label.startswith("core."), code.label  # the model math lives in core
        assert code.value.rstrip() == textwrap.dedent(inspect.getsource(resolve(code.label))).rstrip()


# The bad-input battery: every handler of the app, every input, the bad values a user or an API client can send.
BAD_TEXT = ["", "  \n\t ", "x" * 10_000, "👩‍👩‍👧‍👦 family 🏳️‍🌈", "שלום עולם مرحبا بالعالم", "a\x00b\x07c\x1b[0m\r", None, 42]
BAD_NUMBER = [-1e9, 1e9, math.nan, math.inf, "ten", None, -1]
BAD_CHOICE = ["no such option", None, 7, ""]
BAD_LIST = [["nope"], "e1", None, [None]]
BAD_MODEL = ["", "gpt5", None, "gpt2", 3]


def bad_values(component):
    if getattr(component, "label", None) == "Model":
        return BAD_MODEL
    if isinstance(component, gr.Textbox):
        return BAD_TEXT
    if isinstance(component, (gr.Slider, gr.Number)):
        return BAD_NUMBER
    if isinstance(component, gr.CheckboxGroup) or (isinstance(component, gr.Dropdown) and component.multiselect):
        return BAD_LIST
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        return BAD_CHOICE
    if isinstance(component, gr.Checkbox):
        return [None, "yes"]
    if isinstance(component, gr.State):
        return [{"bogus": 1}, "state"]
    return []


def handlers():
    import app
    demo = app.build_app()
    seen, found = set(), []
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        key = (getattr(fn, "__wrapped__", fn), tuple(c._id for c in block_fn.inputs))
        if fn is None or key in seen or not block_fn.inputs or block_fn.name == "load_example":
            continue
        seen.add(key)
        found.append(pytest.param(block_fn, id=f"{block_fn.name}({len(block_fn.inputs)})"))
    return found


def call(block_fn, values):
    args = [{c: v for c, v in zip(block_fn.inputs, values)}] if block_fn.inputs_as_dict else list(values)
    result = block_fn.fn(*args)
    return list(result)[-1] if inspect.isgenerator(result) else result


LONG_JOBS = [name for name, group in GROUPS.items() if group.cap is not None]


def stopped_job():
    """A long job's handle (the session's State) with Cancel already pressed."""
    from explainers.page.jobs import Job
    job = Job()
    job.stop.set()
    return job


@pytest.mark.parametrize("block_fn", handlers())
def test_every_handler_answers_bad_input_with_a_plain_message(block_fn, caplog):
    """Each input in turn gets each bad value (the others their defaults, on the tiny model): the handler returns
    or raises gr.Error with a sentence; nothing else escapes and nothing is logged as a bug."""
    defaults = ["tiny-gpt-char" if getattr(c, "label", None) == "Model" else c.value for c in block_fn.inputs]
    if block_fn.concurrency_id in LONG_JOBS:  # a long job: each call checks its input, then stops before a step
        defaults = [stopped_job() if isinstance(c, gr.State) else v
                    for c, v in zip(block_fn.inputs, defaults)]
    tried, bugs = 0, []
    with caplog.at_level(logging.ERROR, logger="explainer"):
        for i, component in enumerate(block_fn.inputs):
            if block_fn.concurrency_id in LONG_JOBS and isinstance(component, gr.State):
                continue  # a run's handle is the page's, not input: with a bad one a whole default run would start
            for bad in bad_values(component):
                values = list(defaults)
                values[i] = bad
                tried += 1
                caplog.clear()
                try:
                    call(block_fn, values)
                except gr.Error as e:
                    # a sentence: not a bare key or value that escaped as a KeyError ('nope')
                    assert " " in e.message.strip() and "Traceback" not in e.message and len(e.message) < 400, \
                        (component.label, repr(bad)[:30], e.message)
                except Exception as e:  # noqa: BLE001 - what escaped is the finding
                    bugs.append((component.label, repr(bad)[:30], repr(e)[:120]))
                bugs += [(component.label, repr(bad)[:30], repr(r.exc_info[1])[:120]) for r in caplog.records]
    assert tried > 0
    assert not bugs, bugs


# A model switch at every tab's extreme settings, as the page runs it: the tab's draws in turn, with Gradio's checks.
SWITCHES = {"smollm2-135m": ["smollm2-135m", "minilm-l6", "tiny-gpt-char", "tiny-moe", "smollm2-135m"],
            "minilm-l6": ["minilm-l6", "tiny-gpt-char", "tiny-moe", "minilm-l6"]}  # the biggest model first
FITTED = {  # tab -> its settings whose range is the model's or the text's: link key -> the name its note gives
    "attention": {"layer": "layer", "head": "head"}, "block": {"layer": "layer", "position": "position"},
    "causal_mask": {"layer": "layer", "head": "head"}, "embeddings": {"layer": "layer"},
    "lm_head": {"position": "position"}, "moe": {"layer": "layer", "position": "position", "top_k": "top-k"},
    "residual": {"position": "position"}, "quantization": {"layer": "layer"}, "steering": {"layer": "layer"}}
RANGED_LABEL = re.compile(r"^(Layer|Head|Position|Block ℓ|Token for|Experts per token)\b")
BIGGEST = {"block": "smollm2-135m", "lm_head": "smollm2-135m"}  # SmolLM2's 30 layers; the rest start on MiniLM's 6



class Session:
    """One page session as Gradio keeps it: every widget's value and every slider's range, which a handler's slider
    update changes. Gradio refuses an input outside its slider's range ("Value 29 is greater than maximum value 5"),
    and the browser keeps a value that an update leaves outside the slider's new range: both fail here."""

    def __init__(self, demo):
        self.model = demo.views.w["model"]
        self.values = {c._id: getattr(c, "value", None) for c in demo.blocks.values()}
        self.ranges = {c._id: (c.minimum, c.maximum) for c in demo.blocks.values() if isinstance(c, gr.Slider)}

    def draw(self, view) -> str:
        """The tab's draws in turn, as when it comes on screen: the notes it shows. A gr.Error fails the test."""
        notes = []
        for draw in view.draws:
            for c in draw["inputs"]:
                if c._id in self.ranges and not isinstance(c, FittedSlider):  # its handler fits it
                    low, high = self.ranges[c._id]
                    assert low <= self.values[c._id] <= high, f"Gradio refuses {c.label} = {self.values[c._id]} " \
                                                              f"(range {low} to {high})"
            try:
                result = draw["fn"](*[self.values[c._id] for c in draw["inputs"]])
                result = list(result)[-1] if inspect.isgenerator(result) else result
            except gr.Error as e:
                pytest.fail(f"{draw['fn'].__name__} showed an error: {e.message}")
            outputs = draw["outputs"] if isinstance(draw["outputs"], list) else [draw["outputs"]]
            for c, value in zip(outputs, result if len(outputs) > 1 else [result]):
                self.show(c, value)
                notes += [value] if isinstance(value, str) else []
        return " ".join(notes)

    def show(self, component, value) -> None:
        if isinstance(value, gr.components.Component):
            update = value.constructor_args
        elif isinstance(value, dict) and value.get("__type__") == "update":  # gr.skip()
            update = value
        else:
            update = {"value": value}
        if component._id in self.ranges:
            low, high = update.get("minimum", self.ranges[component._id][0]), update.get("maximum",
                                                                                          self.ranges[component._id][1])
            shown = update.get("value", self.values[component._id])
            assert low <= shown <= high, f"{component.label} left at {shown} outside its new range {low} to {high}"
            self.ranges[component._id] = (low, high)
        if "value" in update:
            self.values[component._id] = update["value"]


def test_a_link_beyond_a_range_the_tab_fitted_earlier_is_fitted_with_a_note(demo, LINKS):
    """A lesson step or a figure's link asks for the block's layer 20 on SmolLM2 after the tab fitted its slider to
    tiny-gpt-char (0 to 3): Gradio does not refuse it (a FittedSlider), the tab's handler draws layer 20 of SmolLM2."""
    view, session = demo.views.views["block"], Session(demo)
    layer = view.links["layer"]
    session.values[session.model._id] = "tiny-gpt-char"
    session.values[layer._id] = 29
    assert "The layer was 29" in session.draw(view)
    assert session.ranges[layer._id] == (0, 3) and session.values[layer._id] == 3
    restored = restore("?tab=block&model=smollm2-135m&layer=20", LINKS, {"c": ["block"]}, "tiny-gpt-char")
    for key, value in restored.values.items():
        session.show(LINKS[key], value) if key != "block.layer" else session.values.update({layer._id: value})
    session.values[session.model._id] = restored.model
    assert layer.preprocess(20) == 20  # what Gradio hands the handler, whatever range the session's slider has
    assert "Layer **20**" in session.draw(view) and session.ranges[layer._id] == (0, 29)
    config = demo.get_config_file()
    assert {c["type"] for c in config["components"] if c["id"] == layer._id} == {"slider"}  # drawn as Gradio's


def test_every_setting_ranged_by_the_model_or_the_text_is_fitted_by_its_tab(demo):
    ranged = {tab: {key for key, c in view.links.items() if isinstance(c, gr.Slider) and RANGED_LABEL.match(c.label)}
              for tab, view in demo.views.views.items()}
    assert {tab: keys for tab, keys in ranged.items() if keys} == {tab: set(keys) for tab, keys in FITTED.items()}


def shown_model(tab: str, name: str):
    from core.weights import zoo
    model = zoo.load(name)
    return zoo.load("tiny-moe") if tab == "moe" and not model.cfg.n_experts else model   # the tab shows tiny-moe then


def model_top(tab: str, setting: str, name: str) -> int | None:
    """The largest value a setting takes on this model (None for a position: the text's)."""
    cfg = shown_model(tab, name).cfg
    return {"layer": cfg.n_layers - (tab != "embeddings"), "head": cfg.n_heads - 1, "top-k": cfg.n_experts}.get(setting)


@pytest.mark.parametrize("tab", sorted(FITTED))
def test_a_model_switch_fits_every_setting_to_the_new_model_and_says_so_in_the_tab_s_note(demo, tab):
    """At its largest layer, head, position or top-k on one model, the tab switched to the next: each setting takes
    the new model's range, a moved one is named in the note, and Gradio never sees a value outside a slider's range.
    Then a shorter text: a position moves into the text's range, and the note says it is the text's."""
    view, session = demo.views.views[tab], Session(demo)
    settings = {key: view.links[key] for key in FITTED[tab]}
    for i, name in enumerate(SWITCHES[BIGGEST.get(tab, "minilm-l6")]):
        before = {key: session.values[s._id] for key, s in settings.items()}
        session.values[session.model._id] = name
        notes = session.draw(view)
        for key, slider in settings.items():
            setting, high = FITTED[tab][key], session.ranges[slider._id][1]
            assert model_top(tab, setting, name) in (None, high), (name, key, high)
            if before[key] > high:
                assert session.values[slider._id] == high and f"The {setting} was {before[key]}" in notes, notes
            else:
                assert session.values[slider._id] == before[key] and f"The {setting} was" not in notes, notes
            session.values[slider._id] = high  # the extreme setting, for the next switch
        if i == 0:
            assert not re.search(r"The \S+ was", session.draw(view))  # the largest values fit the model they came from
    if "position" in settings:
        position = settings["position"]._id
        model = shown_model(tab, session.values[session.model._id])
        session.values[view.links["text"]._id] = "Hi"
        T = len(model.tokenizer.tokens("Hi"))
        notes = session.draw(view)
        assert session.ranges[position] == (-1, T - 1) and session.values[position] == T - 1
        assert "The position was" in notes and f"the text is {T} token{'s' if T > 1 else ''} for {model.name}" in notes


def example_rows(demo) -> list[tuple[str, dict]]:
    """Every example row on the page, with each tab whose draws read its widgets: (tab, {widget id: value})."""
    rows = []
    for dataset in [block for block in demo.blocks.values() if isinstance(block, gr.Dataset)]:
        ids = [c._id for c in dataset._components]
        tabs = [tab for tab, view in demo.views.views.items()
                if set(ids) & {c._id for draw in view.draws for c in draw["inputs"]}]
        rows += [(tab, dict(zip(ids, sample))) for tab in tabs for sample in dataset.raw_samples]
    return rows


def test_every_example_draws_its_tab_with_no_error(demo):
    """A click on an example sets its widgets and the tab redraws: every example of every tab, on the page's
    default model, through Gradio's range checks (the browser clicks one example per tab: test_browser.py)."""
    rows = example_rows(demo)
    assert {tab for tab, _ in rows} >= {"overview", "tokenizer", "embeddings", "causal_mask", "attention", "block",
                                         "moe", "residual", "lm_head", "beam_search", "compare", "steering"}
    for tab, example in rows:
        session = Session(demo)
        session.values.update(example)
        session.draw(demo.views.views[tab])


def test_a_remembered_answer_is_shared_and_lecture_styles_a_copy():
    from explainers.page.inputs import get_model
    from explainers.tabs import causal_mask
    update = handler(causal_mask.update)
    model = get_model("tiny-gpt-char")
    runs = []
    hook = model.embed.register_forward_hook(lambda *_: runs.append(1))
    try:
        args = ("tiny-gpt-char", "A text remembered once", 2, 2, "causal", 3)
        first = update(*args, False)
        again = update(*args, False)
        assert again[0] is first[0] and len(runs) == 1  # the second click did not run the model
        big = update(*args, True)[0]
        assert big is not first[0] and big.layout.font.size and first[0].layout.font.size is None
        other_layer = update(*args[:2], 1, *args[3:], False)[0]
        assert other_layer is not first[0] and len(runs) == 1  # a new drawing from the shared (deeper) forward
    finally:
        hook.remove()


def test_one_text_in_three_tabs_runs_the_model_once():
    """Attention heads, LM head and embeddings read one shared forward of the same token ids, and it gives what
    each of them computed on its own (the LM head a plain forward, the embeddings core.hidden_states)."""
    from core.analysis.embeddings import hidden_states
    from explainers.activations import run
    from explainers.page.inputs import get_model
    from explainers.tabs import attention, embeddings, lm_head
    name, text = "tiny-gpt-char", "Seen in three tabs at once"
    model = get_model(name)
    runs = []
    hook = model.embed.register_forward_hook(lambda *_: runs.append(1))
    try:
        attention.update_all(name, text, 1, 0, [])  # its ablation with no head zeroed reads the same forward
        lm_head.update(name, text, -1, 1.0, 0, 1.0, 0, 100)
        embeddings.update_contextual(name, text, 2, "")
    finally:
        hook.remove()
    assert len(runs) == 1
    ids = tuple(model.tokenizer.encode(text))
    with torch.no_grad():
        torch.testing.assert_close(run(name, ids).logits(-1), model(torch.tensor([ids]))[0, -1])
        torch.testing.assert_close(run(name, ids).cache.accumulated_resid(), hidden_states(model, torch.tensor(ids)))


def test_a_handler_with_a_progress_bar_is_remembered_too():
    from explainers.tabs import embeddings
    update = handler(embeddings.update_static)
    args = ("tiny-bert-word", ["numbers"], "apple, pear, plum", "PCA", "2D", 5, "king", False)
    first = update(*args, gr.Progress())
    again = update(*args, gr.Progress())
    assert again[0] is first[0]  # a new progress bar per click is not a new question


def test_a_bug_in_a_handler_is_logged_with_its_traceback_and_told_plainly(caplog):
    from core.inputs import InputError

    def broken(text):
        return {}[text]  # a programming error, not bad input

    def refuses(text):
        raise InputError("Type a shorter text.")

    with caplog.at_level(logging.ERROR, logger="explainer"):
        with pytest.raises(gr.Error, match="Something went wrong \\(KeyError\\)"):
            handler(broken, remember=False)("x", False)
        assert len(caplog.records) == 1 and caplog.records[0].exc_info[0] is KeyError
        assert "broken" in caplog.text and "Traceback" in caplog.text
        caplog.clear()
        with pytest.raises(gr.Error, match="Type a shorter text."):
            handler(refuses, remember=False)("x", False)
        assert caplog.records == []


def figures_in(result) -> list:
    import plotly.graph_objects as go
    return [r for r in (result if isinstance(result, (tuple, list)) else [result]) if isinstance(r, go.Figure)]


@pytest.mark.parametrize("training, at_least", [(False, 60), pytest.param(True, 8, marks=pytest.mark.slow)],
                         ids=["every-tab-but-training", "training-at-its-defaults"])
def test_every_figure_the_tabs_draw_is_valid_plotly(training, at_least):
    """Tabs build figures as unchecked dicts (figures.figure); Plotly's checked objects must read each one back
    unchanged: no unknown property, no shorthand only Plotly's objects expand (a title as a bare string), no
    colour-scale name that plotly.js draws in other colours. The training group's handlers run real training at
    their defaults, stopped by a cap of a few seconds (the answer a capped run draws; each tab's own slow test runs
    its whole default run), so they are the slow tier's."""
    import json

    import plotly.graph_objects as go

    from explainers.page.jobs import Job
    checked = 0
    for param in handlers():
        block_fn = param.values[0]
        if (block_fn.concurrency_id == "train") != training:
            continue
        takes_a_model = any(getattr(c, "label", None) == "Model" for c in block_fn.inputs)
        for model in ("tiny-gpt-char", "tiny-bert-word", "tiny-moe") if takes_a_model else (None,):  # else once
            values = [model if getattr(c, "label", None) == "Model" else c.value for c in block_fn.inputs]
            if training:  # the session's job: a run stopped by a 5 s cap
                values = [Job(cap=5) if isinstance(c, gr.State) else v for c, v in zip(block_fn.inputs, values)]
            try:
                result = call(block_fn, values)
            except gr.Error:
                continue
            for fig in figures_in(result):
                drawn = json.loads(fig.to_json())
                assert json.loads(go.Figure(fig.to_dict()).to_json()) == drawn, (block_fn.name, model)
                checked += 1
    assert checked >= at_least


@pytest.mark.parametrize("rows,cols,gap", [(1, 2, (0.2, 0)), (2, 5, (0.02, 0.04)), (3, 3, (0.05, 0.1))])
def test_grid_lays_out_plots_where_make_subplots_does(rows, cols, gap):
    from plotly.subplots import make_subplots

    from explainers.draw.figures import grid
    titles = [f"plot {i}" for i in range(rows * cols)]
    want = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=gap[0],
                         vertical_spacing=gap[1]).layout
    got = grid(cols, rows, titles, gap=gap)
    for i in range(rows * cols):
        for letter in "xy":
            key = f"{letter}axis{i + 1 if i else ''}"
            assert got[key]["domain"] == pytest.approx(list(want[key].domain))
            assert got[key]["anchor"] == want[key].anchor
        assert (got["annotations"][i]["x"], got["annotations"][i]["y"]) == pytest.approx(
            (want.annotations[i].x, want.annotations[i].y))


def test_a_shared_call_runs_once_for_callers_that_arrive_together():
    import threading
    import time

    from explainers.page.serving import shared
    runs = []

    @shared(4)
    def slow(x):
        runs.append(x)
        time.sleep(0.2)
        if x == "bad":
            raise ValueError("no")
        return [x]

    answers = []
    threads = [threading.Thread(target=lambda: answers.append(slow("a"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs == ["a"] and len(answers) == 6 and all(a is answers[0] for a in answers)
    assert slow("b") == ["b"] and runs == ["a", "b"]
    for _ in range(2):
        with pytest.raises(ValueError):
            slow("bad")
    assert runs.count("bad") == 2  # an error is not kept: the next call tries again
