"""Lesson files: parsed with their line numbers, checked like deep links, bad steps named and left out."""
import re
import textwrap
from urllib.parse import parse_qs

import pytest

from explainers.chapters import TABS, tab_id
from explainers.page import lesson_files as lessons
from explainers.page.lesson_files import check, lesson_link, parse

TAB_IDS = [tab_id(module) for module in TABS]


@pytest.fixture(scope="module")
def LINKS(demo):
    """The real page's link settings, as the lessons are checked against them."""
    return demo.views.links


GOOD = textwrap.dedent("""\
    # Attention, briefly
    model: tiny-gpt-char
    text: To be or not

    What this lesson is for (not shown as a step).

    ## The mask
    tab: causal_mask
    layer: 1
    mask: bidirectional

    A token sees only the past.
    Second line of the same paragraph.

    Note: a second paragraph, after a blank line, is narration too.

    ## Heads
    view: ?tab=attention&model=tiny-gpt-char&layer=2&head=1
    head: 3

    Every head looks its own way.

    ```
    ## not a step: inside a code fence
    ```
    """)


def query(step) -> dict:
    return {k: v[0] for k, v in parse_qs(step.query[1:]).items()}


def test_a_lesson_file_gives_its_title_settings_and_steps_with_their_lines():
    lesson = parse(GOOD, "attention")
    assert lesson.title == "Attention, briefly" and lesson.problems == []
    assert lesson.settings == {"model": ("tiny-gpt-char", 2), "text": ("To be or not", 3)}
    first, second = lesson.steps
    assert (first.title, first.line) == ("The mask", 7)
    assert first.settings == {"tab": ("causal_mask", 8), "layer": ("1", 9), "mask": ("bidirectional", 10)}
    assert first.narration == ("A token sees only the past.\nSecond line of the same paragraph.\n\n"
                               "Note: a second paragraph, after a blank line, is narration too.")
    assert second.settings["tab"] == ("attention", 18) and second.settings["head"] == ("3", 19)  # its own line wins
    assert "## not a step" in second.narration


def test_a_checked_step_is_a_deep_link_with_the_lesson_wide_settings_its_tab_has(LINKS):
    lesson = check(parse(GOOD, "attention"), LINKS, TAB_IDS)
    assert lesson.problems == [] and len(lesson.steps) == 2
    assert query(lesson.steps[0]) == {"tab": "causal_mask", "model": "tiny-gpt-char", "text": "To be or not",
                                      "layer": "1", "mask": "bidirectional"}
    assert query(lesson.steps[1])["head"] == "3" and query(lesson.steps[1])["text"] == "To be or not"


BAD = textwrap.dedent("""\
    # A lesson with mistakes
    text: hello
    colour: red

    ## Fine
    tab: tokenizer

    Runs.

    ## A typo in the tab
    tab: atention
    layer: 2

    ## A setting the tab does not have
    tab: lm_head
    temprature: 0.5

    ## A value out of range
    tab: lm_head
    temperature: 9

    ## A model that is not here
    tab: lm_head
    model: gpt5

    ## Narration but no settings
    The settings line is missing.

    ## Lecture is the viewer's
    tab: overview
    lecture: 1

    ## Also fine
    tab: attention
    layer: 1
    """)


def test_each_bad_step_is_named_with_its_line_and_the_others_still_run(LINKS):
    lesson = check(parse(BAD, "bad"), LINKS, TAB_IDS)
    assert [s.title for s in lesson.steps] == ["Fine", "Also fine"]
    said = dict(lesson.problems)
    assert "no tab has a setting 'colour'" in said[3]
    assert "no tab 'atention'" in said[11] and "A typo in the tab" in said[11]
    assert "unknown setting 'temprature'" in said[16]
    assert "temperature='9' does not fit" in said[20]
    assert "model 'gpt5' is not available" in said[24]
    assert "has no settings" in said[26]
    assert "lecture mode is the viewer's choice" in said[31]
    assert [line for line, _ in lesson.problems] == sorted(said)
    note = lessons.report(lesson)
    assert "line 11: step “A typo in the tab”: no tab 'atention'" in note and "the others run" in note


def test_a_file_without_steps_says_so():
    assert parse("# Nothing here\n\nJust prose.\n", "empty").problems == [(1, "no steps: each step starts with a "
                                                                             "`## ` heading")]


@pytest.mark.parametrize("link, expected", [("?lesson=tokens-to-sampling&step=5", ("tokens-to-sampling", 4, "")),
                                            ("?lesson=x&lecture=1", ("x", 0, "1")),
                                            ("?lesson=x&step=banana", ("x", 0, "")),
                                            ("?tab=attention", (None, 0, "")), (None, (None, 0, ""))])
def test_a_lesson_link_names_the_lesson_and_its_step(link, expected):
    assert lesson_link(link) == expected


def test_only_lessons_in_the_folder_can_be_opened(tmp_path, LINKS):
    (tmp_path / "one.md").write_text(GOOD)
    (tmp_path / "README.md").write_text("# how to write one")
    assert list(lessons.available(tmp_path)) == ["one"]
    assert lessons.load("one", LINKS, TAB_IDS, tmp_path).title == "Attention, briefly"
    for name in ["../one", "README", "nope", None, 3]:
        assert lessons.load(name, LINKS, TAB_IDS, tmp_path) is None


def test_every_step_of_the_shipped_lessons_shows_as_written(LINKS):
    """Each lesson in assets/lessons/ against the real tabs, links and models: no step is left out."""
    found = lessons.available()
    assert "tokens-to-sampling" in found
    for name in found:
        lesson = lessons.load(name, LINKS, TAB_IDS)
        assert lesson.problems == [], (name, lesson.problems)
        assert all(step.narration and step.title for step in lesson.steps)
    walk = lessons.load("tokens-to-sampling", LINKS, TAB_IDS)
    tabs = [query(step)["tab"] for step in walk.steps]
    assert 14 <= len(tabs) <= 18 and tabs[0] == "overview" and tabs[-1] == "lm_head"
    order = ["tokenizer", "embeddings", "causal_mask", "attention", "block", "residual", "lm_head"]
    assert [t for t in dict.fromkeys(tabs) if t in order] == order  # the tutorials' path, in order


def test_a_lesson_link_opens_its_steps_view_and_copy_link_names_the_step(demo):
    """The panel turns `?lesson=...&step=k` into that step's deep link for the page's restore (keeping the link's
    lecture setting), and "Copy link" in a lesson gives the lesson and step."""
    panel = demo.lesson
    walk = lessons.load("tokens-to-sampling", demo.views.links, TAB_IDS)
    assert panel.view_query("?lesson=tokens-to-sampling&step=5&lecture=1") == walk.steps[4].query + "&lecture=1"
    assert panel.view_query("?lesson=tokens-to-sampling&step=99") == walk.steps[-1].query
    assert panel.view_query("?lesson=nope") == "?"
    assert panel.view_query("?tab=attention&layer=2") == "?tab=attention&layer=2"
    assert panel.link({"lesson": "tokens-to-sampling", "step": 4}, True) == "?lesson=tokens-to-sampling&step=5&lecture=1"
    assert panel.link({"lesson": "tokens-to-sampling", "step": 4}, True, lecture_default=True) == \
        "?lesson=tokens-to-sampling&step=5"
    assert panel.link({"bogus": 1}, False) is None and panel.link(None, True) is None


def test_the_lesson_readme_lists_every_tab_and_its_settings(LINKS):
    """The table a lecturer writes from is the page's own list of link settings."""
    text = (lessons.Path(__file__).resolve().parent.parent / "assets" / "lessons" / "README.md").read_text()
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| `")]
    listed = {row[1].strip(" `"): set(re.findall(r"`([a-z_]+)`", row[2])) for row in rows}
    registered = {}
    for key in LINKS:
        tab, setting = key.split(".", 1)
        registered.setdefault(tab, set()).add(setting)
    assert listed == registered


class Pressed:
    """The event Gradio hands a handler: its target is the session's copy of the pressed button."""

    def __init__(self, elem_id: str):
        self.target = type("Button", (), {"elem_id": elem_id})()


@pytest.fixture(scope="module")
def panel(demo):
    return demo.lesson


def test_start_next_and_back_show_a_step_and_the_page_draws_only_its_tab(demo, panel):
    """A step's view is applied as a link is: the step's tab is selected and draws; every other tab is stale and
    draws when it is next shown."""
    views, name = demo.views, "tokens-to-sampling"

    def step(out, drawn):
        applied = views.apply(out[panel.step_query])
        looked = views.look(applied[views.screen], applied[views.generation], drawn)
        requested = [tab for tab, request in views.requests.items() if request in looked]
        return applied, looked, requested

    first = panel.go(name, None, False, Pressed("lesson-start"))
    assert first[panel.state] == {"lesson": name, "step": 0} and "Step 1 of 16" in first[panel.heading]
    applied, looked, requested = step(first, {})
    assert applied[views.w["model"]] == "smollm2-135m" and requested == ["overview"]
    second = panel.go(name, first[panel.state], False, Pressed("lesson-next"))
    assert second[panel.state]["step"] == 1 and second[panel.back].interactive is True
    applied, looked, requested = step(second, looked[views.drawn])
    assert requested == ["tokenizer"]  # the step's tab only
    generation, drawn = applied[views.generation], looked[views.drawn]
    back = panel.go(name, second[panel.state], True, Pressed("lesson-back"))
    assert back[panel.state]["step"] == 0
    applied, looked, requested = step(back, drawn)
    assert requested == ["overview"] and applied[views.w["lecture"]] is True  # the viewer's lecture mode is kept
    assert applied[views.generation] > generation and all(  # every other tab draws again when shown
        looked[views.drawn].get(tab) != applied[views.generation] for tab in views.requests if tab != "overview")


@pytest.mark.parametrize("name, state, pressed, shown", [
    ("tokens-to-sampling", {"bogus": 1}, "lesson-next", "Step 1 of 16"),  # no lesson runs: Next starts it
    ("tokens-to-sampling", {"lesson": "tokens-to-sampling", "step": 99}, "lesson-next", "Step 16 of 16"),
    ("nope", None, "lesson-start", None), (None, "state", "lesson-start", None)])
def test_odd_states_and_names_give_a_step_or_a_note(panel, name, state, pressed, shown):
    out = panel.go(name, state, False, Pressed(pressed))
    if shown:
        assert shown in out[panel.heading]
    else:
        assert out[panel.state] is None and "There is no lesson" in out[panel.report]
    assert panel.go(name, state, False) == {panel.step_query: None, panel.focus: ""}  # not pressed: nothing to apply
