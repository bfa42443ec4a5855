"""Two models side by side: the comparison's own math on toy tensors, and the tab showing the very numbers each
model's own tabs show."""
import math
from urllib.parse import parse_qs

import pytest
import torch

from core.analysis.compare import attention_entropy, depths, top_k_overlap, top_k_texts, uniform_entropy
from core.inputs import InputError
from core.model.attention import causal_mask
from core.weights.tokenizers import CharTokenizer
from explainers.tabs import attention, compare, lm_head, residual

TEXT = "The capital of France is"  # under 32 characters: the attention tab reads all of it, as this one does


def test_attention_entropy_of_a_toy_pattern():
    """Head 0 looks at the first token only (0 nats); head 1 spreads evenly over what each query may see:
    queries see 1, 2 and 3 keys, so (log 1 + log 2 + log 3) / 3. The masked zeros add nothing (0 log 0 = 0)."""
    focused = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, 0, 0]])
    even = torch.tensor([[1.0, 0, 0], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]])
    patterns = torch.stack([torch.stack([focused, even]), torch.stack([even, even])])           # (L=2, H=2, 3, 3)
    spread = (math.log(2) + math.log(3)) / 3
    torch.testing.assert_close(attention_entropy(patterns), torch.tensor([spread / 2, spread]))
    assert uniform_entropy(causal_mask(3, 3)) == pytest.approx(spread)
    assert uniform_entropy(torch.zeros(3, 3)) == pytest.approx(math.log(3))  # bidirectional: every query sees 3


def test_depth_places_the_embeddings_at_0_and_the_last_block_at_1():
    torch.testing.assert_close(depths(4), torch.tensor([0, 0.25, 0.5, 0.75, 1]))


def test_top_k_overlap_matches_tokens_by_text_not_by_id():
    a, b = CharTokenizer(list("abcde")), CharTokenizer(list("edcba"))  # the same letters, numbered the other way
    top_a = top_k_texts(torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0]), a, 3)   # a, b, c
    top_b = top_k_texts(torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0]), b, 3)   # e, c, b
    assert top_a == [("a", pytest.approx(0.4)), ("b", pytest.approx(0.3)), ("c", pytest.approx(0.2))]
    assert top_k_overlap(top_a, top_b) == ["b", "c"]  # ids 1 and 2 in a's vocabulary, 3 and 2 in b's


def panels(fig) -> dict[str, list]:
    """A depth figure's lines by name."""
    return {trace.name: list(trace.y) for trace in fig.data}


def test_the_side_by_side_view_equals_each_models_own_tabs():
    left, right = "tiny-gpt-char", "smollm2-135m"
    notice, left_html, right_html, top, overlap, stream, entropy = compare.update(left, right, TEXT)
    assert notice == "" and "24 tokens" in left_html and "5 tokens" in right_html
    assert f"?tab=lm_head&amp;model={right}&amp;text=The+capital" in right_html
    for i, name in enumerate([left, right]):
        # the LM head tab at temperature 1 with top-k and top-p off: its ten most likely tokens' probabilities
        stages_fig = lm_head.update(name, TEXT, -1, 1.0, 0, 1.0, 0, 10)[0]
        after = next(t for t in stages_fig.data if t.name == "after (renormalised)")
        torch.testing.assert_close(torch.tensor(top.data[i].x), torch.tensor(after.x[:compare.K]))
        # the residual tab's stream at its default position, the last token
        growth = residual.update(name, TEXT, -1, "")[3]
        torch.testing.assert_close(torch.tensor(panels(stream)[f"{name} ‖stream‖"]), torch.tensor(growth.data[0].y))
        # the attention tab's entropy per head, averaged over the heads
        summary = attention.update_all(name, TEXT, 0, 0, [])[5]
        torch.testing.assert_close(torch.tensor(panels(entropy)[name]), torch.tensor(summary.data[0].z).mean(-1))
    shared = [visible for visible in overlap.split("`")[1::2]]
    assert overlap.startswith(f"**Top-10 overlap: {len(shared)} of 10**") and shared == ["␣"]


def test_an_entropy_point_opens_that_layer_in_the_attention_tab():
    *_, entropy = compare.update("tiny-gpt-char", "tiny-moe", TEXT)
    line = next(t for t in entropy.data if t.name == "tiny-moe")
    assert [parse_qs(link[1:]) for link in line.customdata][2] == {
        "tab": ["attention"], "model": ["tiny-moe"], "text": [TEXT], "layer": ["2"]}


@pytest.mark.parametrize("encoder, why, head", [("minilm-l6", "no output head", False),
                                                ("tiny-bert-word", "fills in [MASK]", True)])
def test_an_encoder_is_compared_where_it_can_be_and_the_top_10_says_plainly_why_not(encoder, why, head):
    notice, _, right_html, top, overlap, stream, entropy = compare.update("tiny-gpt-char", encoder, TEXT)
    assert overlap.startswith("**No top-10 overlap:** comparing next tokens needs two decoders.")
    assert f"{encoder} is an encoder" in overlap and why in overlap and "Traceback" not in overlap
    assert len(top.data) == 1 and "no next token" in top.layout.annotations[-1].text
    assert "(encoder," in right_html and ("tab=lm_head" in right_html) == head  # a masked LM's [MASK] is shown there
    assert {"tiny-gpt-char ‖stream‖", f"{encoder} ‖stream‖"} == set(panels(stream))
    assert {"tiny-gpt-char", encoder} <= set(panels(entropy))


def test_a_text_longer_than_the_patterns_kept_is_cut_per_model_with_a_note():
    notice, left_html, right_html, *_ = compare.update("tiny-gpt-char", "tiny-moe", "to be or not to be, " * 5)
    assert notice.count("Showing the last 64 of 100 tokens") == 2 and notice.startswith("tiny-gpt-char: ")


@pytest.mark.parametrize("left, right, text, message", [
    ("tiny-gpt-char", "tiny-moe", "   ", "Type some text first"),
    ("tiny-gpt-char", "", TEXT, "Choose a model first"),
    ("no such model", "tiny-moe", TEXT, "There is no model"),
])
def test_bad_input_is_a_plain_message(left, right, text, message):
    with pytest.raises(InputError, match=message):
        compare.update(left, right, text)
