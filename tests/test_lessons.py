"""Lesson files: parsed with their line numbers, checked like deep links, bad steps named and left out."""
import re
import textwrap
from urllib.parse import parse_qs

import numpy as np
import pytest

from explainers.chapters import TABS, tab_id
from explainers.page import lesson_files as lessons
from explainers.page.inputs import get_model
from explainers.page.lesson_files import check, lesson_link, parse
from explainers.tabs import attention, block, causal_mask, embeddings, lm_head, residual, tokenizer

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
    assert first[panel.state] == {"lesson": name, "step": 0} and "Step 1 of 17" in first[panel.heading]
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
    ("tokens-to-sampling", {"bogus": 1}, "lesson-next", "Step 1 of 17"),  # no lesson runs: Next starts it
    ("tokens-to-sampling", {"lesson": "tokens-to-sampling", "step": 99}, "lesson-next", "Step 17 of 17"),
    ("nope", None, "lesson-start", None), (None, "state", "lesson-start", None)])
def test_odd_states_and_names_give_a_step_or_a_note(panel, name, state, pressed, shown):
    out = panel.go(name, state, False, Pressed(pressed))
    if shown:
        assert shown in out[panel.heading]
    else:
        assert out[panel.state] is None and "There is no lesson" in out[panel.report]
    assert panel.go(name, state, False) == {panel.step_query: None, panel.focus: ""}  # not pressed: nothing to apply


# What the shipped lesson says, its figures show: each claim about a number, a head or a neuron is computed here
# through the tab function that draws the step's figure, with the lesson's text and the step's own settings.

WALK = parse(lessons.Path(lessons.LESSONS / "tokens-to-sampling.md").read_text(), "tokens-to-sampling")
SMOL = "smollm2-135m"


def walk_step(title: str) -> tuple[dict, str]:
    """(the step's settings, the lesson-wide ones under them, as plain values; its narration on one line)."""
    step = next(s for s in WALK.steps if s.title == title)
    settings = {k: v for k, (v, _) in WALK.settings.items()} | {k: v for k, (v, _) in step.settings.items()}
    assert settings["model"] == SMOL
    return settings, " ".join(step.narration.split())


def said(narration: str, value: float, fmt: str = ".2f") -> bool:
    """The narration gives this number as the figure rounds it."""
    return f"{value:{fmt}}" in narration


def pattern_rows(settings) -> tuple[list[str], np.ndarray]:
    """The attention tab's one-head heatmap for the step: (token words, pattern rows)."""
    head = attention.update_head(SMOL, settings["text"], int(settings["layer"]), int(settings["head"]))[1].data[0]
    return [label.split(":", 1)[1].lstrip("␣") for label in head.x], np.asarray(head.z, dtype=float)


def test_lesson_tokens_claims_hold():
    s, narration = walk_step("Text becomes tokens")
    smol = tokenizer.compute_tokenization(get_model(SMOL).tokenizer, s["text"])
    assert "␣cat" in [t.piece for t in smol["tokens"]] and "`␣cat`" in narration        # the space kept inside
    counts = {name: tokenizer.compute_tokenization(get_model(name).tokenizer, s["text"])["count"]
              for name in s["tokenizers"].split(",")}
    assert counts["tiny-gpt-char"] > counts[SMOL] >= counts["tiny-bert-word"]           # characters: many; words: few
    s, narration = walk_step("Rare words break into pieces")
    smol = tokenizer.compute_tokenization(get_model(SMOL).tokenizer, s["text"])["tokens"]
    start = next(i for i, t in enumerate(smol) if t.piece.startswith("␣unbel"))
    assert "".join(t.piece for t in smol[start:start + 3]) == "␣unbelievably" and "*unbelievably* takes three" in narration
    assert [t.piece for t in smol if t.piece.isdigit()] == list("1234567")                 # digit by digit
    words = tokenizer.compute_tokenization(get_model("tiny-bert-word").tokenizer, s["text"])["tokens"]
    assert {t.piece for t in words if t.unknown} >= {"unbelievably", "1234567"} and "`[UNK]`" in narration
    s, _ = walk_step("How BPE learns its vocabulary")
    sizes = tokenizer.compute_bpe(s["text"], int(s["vocab"]))["segmentations"]
    lengths = [len(tokens) for _, tokens in sorted(sizes.items())]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]           # more merges, fewer tokens


def test_lesson_embedding_claims_hold():
    s, narration = walk_step("Tokens become vectors")
    assert f"{get_model(SMOL).cfg.d_model} numbers" in narration
    fig, _ = embeddings.update_static(SMOL, s["groups"].split(","), "", s["projection"], s["dims"], 15, "")
    centres = {t.name: np.c_[t.x, t.y].mean(0) for t in fig.data}
    for trace in fig.data:  # "form their own groups": every word is nearest its own group's centre
        for point in np.c_[trace.x, trace.y]:
            assert min(centres, key=lambda g: np.linalg.norm(point - centres[g])) == trace.name
    s, narration = walk_step("The same word in two contexts")
    cosine = embeddings.update_contextual(SMOL, s["text"], int(s["layer"]), s["word"])[1].data[0].y
    assert cosine[0] == pytest.approx(1, abs=1e-4)                                         # one table row
    assert 0.75 < cosine[7] < 0.85 and "about 0.8 by layer 7" in narration                # drift apart
    assert min(cosine[1:]) < 0.85 and max(cosine[7:]) < 0.9


def test_lesson_mask_claims_hold():
    s, narration = walk_step("Attention scores, step by step")
    fig, _, *_sliders = causal_mask.update(SMOL, s["text"], int(s["layer"]), int(s["head"]), s["mask"], 3)
    qk, scaled, _, pattern = (np.asarray(t.z, dtype=float) for t in fig.data[:4])
    d = get_model(SMOL).cfg.d_head
    assert d == 64 and "d = 64: ÷ 8" in narration
    np.testing.assert_allclose(scaled, qk / 8, rtol=1e-4, atol=1e-4)
    assert np.all(pattern[np.triu_indices_from(pattern, 1)] == 0)                            # exactly 0 on the future
    s, _ = walk_step("Other masks")
    window = int(s["window"])
    pattern = np.asarray(causal_mask.update(SMOL, s["text"], int(s["layer"]), int(s["head"]), s["mask"], window)[0]
                         .data[3].z, dtype=float)
    seen = pattern > 0
    assert all(seen[t].nonzero()[0].tolist() == list(range(max(0, t - window + 1), t + 1)) for t in range(len(seen)))


def test_lesson_head_claims_hold():
    """What each attention step says of its head, read from the head's own heatmap."""
    cfg = get_model(SMOL).cfg
    s, narration = walk_step("Many heads, many patterns")
    assert f"SmolLM2 has {cfg.n_heads} per layer, in {cfg.n_layers} layers" in narration
    words, rows = pattern_rows(s)
    assert all(rows[t].argmax() == t - 1 for t in range(1, len(rows)))                      # the previous token
    s, narration = walk_step('A head that looks at "cat" from everywhere')
    words, rows = pattern_rows(s)
    cat = words.index("cat")
    strongest = {words[t]: words[rows[t].argmax()] for t in range(cat + 1, len(words))}
    assert strongest["it"] == "cat" and said(narration, rows[words.index("it"), cat])
    for word in ["sat", "on", "the", "because"]:  # the other rows the narration names look at cat too
        assert strongest[word] == "cat" and said(narration, rows[words.index(word), cat])
    assert max(rows[words.index(w), cat] for w in ["sat", "on", "the"]) > rows[words.index("it"), cat]
    s, narration = walk_step('A head where "it" stands out')
    words, rows = pattern_rows(s)
    first = [t for t in range(1, len(words)) if rows[t].argmax() == 0]
    assert len(first) > (len(words) - 1) / 2                                                 # most rows rest on The
    it, mat = words.index("it"), words.index("mat")
    assert rows[it].argmax() == cat and said(narration, rows[it, cat]) and said(narration, rows[mat, cat])
    others = [rows[t, cat] for t in range(cat + 1, len(words)) if t != it]
    assert max(others) == rows[mat, cat] < rows[it, cat]                                     # only mat comes close
    words, rows = pattern_rows(dict(s, text="The girl ate the apple because she was"))       # the sentence to try
    assert words[rows[words.index("she")].argmax()] == "girl"


def test_lesson_block_and_residual_claims_hold():
    s, narration = walk_step("Inside a block: norm and feed-forward")
    _, _, _, table, _, neurons, note, *_sliders = block.update(SMOL, s["text"], int(s["layer"]), int(s["position"]),
                                                                s["norm"])
    assert "This model uses **RMSNorm**" in table and "RMSNorm for SmolLM2" in narration
    writes = neurons["writes ‖·‖"].tolist()
    assert writes == sorted(writes, reverse=True) and "write the most into the stream" in narration
    assert "pushes up" in neurons.columns
    s, narration = walk_step("The residual stream")
    notice = residual.update(SMOL, s["text"], int(s["position"]), "")[0]
    assert "explaining the logit of **'␣girl'**" in notice and "here *girl*" in narration


def lm_head_probabilities(settings) -> tuple[dict[str, float], str]:
    """The LM head tab's probability panel for the step ({token: probability after the filters}) and its note."""
    fig, note, _, _, *_sliders = lm_head.update(SMOL, settings["text"], -1, float(settings["temperature"]),
                                                int(settings["top_k"]), float(settings["top_p"]),
                                                int(settings.get("seed", 0)), 100)
    after = fig.data[-1]
    return {name.split(" (")[0].lstrip("␣"): p for name, p in zip(after.y, after.x)}, note


def test_lesson_sampling_claims_hold():
    s, narration = walk_step("From a vector to probabilities")
    assert f"{get_model(SMOL).cfg.vocab_size:,} tokens" in narration
    probs, _ = lm_head_probabilities(s)
    top = sorted(probs, key=probs.get, reverse=True)
    assert top[:2] == ["girl", "town"] and probs["girl"] + probs["town"] > 0.5               # share most of it
    assert said(narration, probs["girl"], ".0%") and said(narration, probs["town"], ".0%")
    hot, _ = lm_head_probabilities(walk_step("Temperature")[0])
    assert hot["girl"] < probs["girl"] and sum(hot.values()) < sum(probs.values())          # flatter: the tail gains
    _, note = lm_head_probabilities(walk_step("Top-k: keep the k best")[0])
    assert "**5** after top-k" in note
    s, narration = walk_step("Top-p and drawing the next token")
    probs, note = lm_head_probabilities(s)
    kept = [token for token, p in probs.items() if p > 0]
    assert f"**{len(kept)}** after top-p" in note and f"here {len(kept)} (" in narration
    assert all(f"*{token}*" in narration for token in kept)
