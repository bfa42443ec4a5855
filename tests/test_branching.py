"""Branching in the LM-head tab: force a candidate token, then the model goes on greedily; branches kept side by side."""
import json

import plotly.graph_objects as go
import pytest
import torch

from core.inference.generation import branch, generate
from core.inference.sampling import SamplingSettings
from core.inputs import InputError
from core.weights import zoo
from explainers.tabs import lm_head

CAT = "The cat sat on the"


def candidates(name, text=CAT) -> list[int]:
    return [token for _, token in lm_head.branch_choices(name, text, -1).choices]


@pytest.mark.parametrize("name", ["smollm2-135m", "tiny-gpt-char"])
def test_a_branch_is_the_forced_token_then_greedy_generation_from_it(name):
    model = zoo.load(name, "cpu")
    ids = model.tokenizer.encode(CAT)
    forced = candidates(name)[3]                                      # not the model's own choice
    g = branch(model, ids, forced, 10)
    assert g.new_ids[0] == forced and len(g.new_ids) == len(g.probs) == 11
    greedy = generate(model, ids + [forced], 10, settings=SamplingSettings(temperature=0))
    assert g.new_ids[1:] == greedy.new_ids


@pytest.mark.parametrize("name", ["smollm2-135m", "tiny-gpt-char"])
def test_each_probability_is_the_softmax_of_a_plain_forward_at_that_step(name):
    model = zoo.load(name, "cpu")
    ids = model.tokenizer.encode(CAT)
    g = branch(model, ids, candidates(name)[1], 6)
    with torch.no_grad():
        for step, (token, p) in enumerate(zip(g.new_ids, g.probs)):
            probs = model(torch.tensor([ids + g.new_ids[:step]]))[0, -1].softmax(-1)    # (V,)
            assert p == pytest.approx(probs[token].item(), abs=1e-5), step
            if step:                                                  # greedy: the most likely token
                assert token == int(probs.argmax())


@pytest.mark.parametrize("name", ["tiny-bert-word", "minilm-l6"])
def test_an_encoder_cannot_branch(name):
    with pytest.raises(InputError, match="needs a decoder"):
        branch(zoo.load(name, "cpu"), [1, 2, 3], 4, 5)
    with pytest.raises(InputError, match="needs a decoder"):
        lm_head.add_branch(name, CAT, -1, None, 5, None)


def test_two_branches_are_kept_a_repeat_replaces_its_own_and_clearing_empties_them():
    name = "tiny-gpt-char"
    first, second = candidates(name)[:2]
    fig, rows, state, _ = lm_head.add_branch(name, CAT, -1, first, 8, None)
    fig, rows, state, _ = lm_head.add_branch(name, CAT, -1, second, 8, state)
    assert [b["ids"][0] for b in state["branches"]] == [first, second] and len(rows) == 2
    fig, rows, state, _ = lm_head.add_branch(name, CAT, -1, second, 3, state)   # the same candidate, shorter
    assert [len(b["ids"]) for b in state["branches"]] == [9, 4]
    branches = state["branches"]
    z = fig.data[0].z                                                  # one row per branch, NaN past its end
    assert [list(row[:len(b["probs"])]) for row, b in zip(z, branches)] == [b["probs"] for b in branches]
    assert json.loads(go.Figure(fig.to_dict()).to_json()) == json.loads(fig.to_json())   # valid Plotly
    _, _, other, _ = lm_head.add_branch(name, "To be or not", -1, None, 4, state)      # another text: a new tree
    assert len(other["branches"]) == 1
    assert lm_head.clear_branches()[2] is None
    _, rows, state, _ = lm_head.add_branch(name, CAT, -1, first, 8, None)
    assert len(rows) == 1


def test_the_candidates_are_the_ten_most_likely_tokens_with_their_probability():
    choices = lm_head.branch_choices("tiny-gpt-char", CAT, -1).choices
    probs = zoo.load("tiny-gpt-char", "cpu")(torch.tensor([zoo.load("tiny-gpt-char", "cpu").tokenizer.encode(CAT)]))
    top = probs[0, -1].softmax(-1).topk(10)
    assert [token for _, token in choices] == top.indices.tolist()
    assert choices[0][0].endswith(f"({top.values[0].item():.1%})")
    assert lm_head.branch_choices("tiny-bert-word", "to be or [MASK]", -1).choices == []


def test_the_chart_and_the_picker_say_which_probability_each_shows(demo):
    """The chart's last panel is after temperature and filters; the picker's is the model's own (T=1, no filter):
    at T=0.7, top-k 3 the two differ for the most likely token, and each is labelled as what it is."""
    fig = lm_head.update("tiny-gpt-char", CAT, -1, 0.7, 3, 1.0, 0, 10)[0]
    last = fig.data[-1]
    shown = dict(zip(last.y, last.text))
    top_name = max(zip(fig.data[0].x, fig.data[0].y))[1]                      # the highest logit's token
    picker = lm_head.branch_choices("tiny-gpt-char", CAT, -1)
    titles = [a.text for a in fig.layout.annotations if a.text]
    labels = [getattr(b, "label", None) or "" for b in demo.blocks.values()]
    assert "probabilities<br>(after T and filters)" in titles
    assert "Candidate to force (token, probability at T=1, unfiltered)" in labels
    assert picker.choices[0][0].split("(")[-1] != shown[top_name] + ")"       # two numbers, each labelled


@pytest.mark.parametrize("candidate, length, message", [
    ("no such option", 5, "Pick the token"), (9999, 5, "not one of the 10 candidates"),
    (None, float("nan"), "must be a whole number"), (None, "ten", "must be a whole number")])
def test_bad_branch_input_gets_a_plain_message(candidate, length, message):
    with pytest.raises(InputError, match=message):
        lm_head.add_branch("tiny-gpt-char", CAT, -1, candidate, length, "state")


def test_odd_text_and_lengths_out_of_range_still_branch_or_say_why():
    _, rows, _, note = lm_head.add_branch("tiny-gpt-char", CAT, -1, None, 1000, {"bogus": 1})
    assert "branch length was 1000" in note and len(rows) == 1
    for text in ["👩‍👩‍👧 family", "مرحبا بالعالم", "a\x00b"]:
        assert lm_head.add_branch("smollm2-135m", text, -1, None, 3, None)[1]
    with pytest.raises(InputError, match="fills this model's context"):
        lm_head.add_branch("tiny-gpt-char", "x" * 10_000, -1, None, 5, None)
    _, _, state, note = lm_head.add_branch("tiny-gpt-char", "x" * 10_000, 120, None, 40, None)
    assert "Only 6 tokens fit" in note and len(state["branches"][0]["ids"]) == 7
    with pytest.raises(InputError, match="empty"):
        lm_head.add_branch("tiny-gpt-char", " ", -1, None, 5, None)
