"""Steering vectors: the direction is the streams' difference, c = 0 is the model untouched, the hook never stays,
and the tab refuses what it cannot steer with a plain sentence."""
import pytest
import torch

from core.analysis.steering import (
    contrast_direction,
    contrast_tokens,
    hook_name,
    steered,
    steered_generation,
    steered_logits,
)
from core.inference.generation import generate
from core.inputs import InputError
from explainers.page.jobs import Job
from explainers.tabs import steering

PROMPT = [5, 17, 42, 8, 99]
PAIRS = [([3, 7, 11], [3, 9, 11]), ([20, 21], [22, 23])]


def test_the_direction_is_the_mean_difference_of_the_streams(decoder_pair):
    _, model, _ = decoder_pair
    names = [hook_name(1)]
    streams = [model.run_with_cache(torch.tensor([ids]), names=names)[1][names[0]][0] for pair in PAIRS for ids in pair]
    expected = torch.stack([(streams[0] - streams[1]).mean(0), (streams[2] - streams[3]).mean(0)]).mean(0)
    torch.testing.assert_close(contrast_direction(model, PAIRS, 1), expected, rtol=1e-5, atol=1e-5)


def test_adding_the_difference_of_two_tokens_at_block_0_turns_one_into_the_other(decoder_pair):
    """Entering block 0 the stream is the token's embedding (plus its position's, the same for both): minus + 1 x
    (plus - minus) is plus, so the model predicts exactly as it does after plus."""
    _, model, _ = decoder_pair
    v = contrast_direction(model, [([30], [40])], 0)
    with torch.no_grad():
        plus = model(torch.tensor([[30]]))[0, -1]
    torch.testing.assert_close(steered_logits(model, [40], v, 0, [1.0])[0], plus, rtol=1e-5, atol=1e-5)


def test_a_coefficient_of_0_is_exactly_the_unsteered_model(decoder_pair):
    _, model, _ = decoder_pair
    v = contrast_direction(model, PAIRS, 1)
    with torch.no_grad():
        plain = model(torch.tensor([PROMPT]), last_only=True)[0, -1]
    assert torch.equal(steered_logits(model, PROMPT, v, 1, [0.0])[0], plain)
    assert steered_generation(model, PROMPT, v, 1, 0.0, 8).new_ids == generate(model, PROMPT, 8).new_ids
    assert steered_generation(model, PROMPT, v, 1, 3.0, 8).new_ids != generate(model, PROMPT, 8).new_ids


def test_one_batched_forward_equals_each_coefficient_alone(decoder_pair):
    _, model, _ = decoder_pair
    v = contrast_direction(model, PAIRS, 1)
    batched = steered_logits(model, PROMPT, v, 1, [-2.0, 0.5, 4.0])
    for row, c in zip(batched, [-2.0, 0.5, 4.0]):
        torch.testing.assert_close(row, steered_logits(model, PROMPT, v, 1, [c])[0], rtol=1e-5, atol=1e-5)


def test_the_hook_is_gone_after_the_call_even_after_an_error(decoder_pair):
    _, model, _ = decoder_pair
    v = contrast_direction(model, PAIRS, 1)
    point = dict(model.named_modules())[hook_name(1)]
    with torch.no_grad():
        plain = model(torch.tensor([PROMPT]))
        with pytest.raises(RuntimeError, match="boom"), steered(model, v, 1, 5.0):
            assert point.active()
            raise RuntimeError("boom")
        assert not point.active()
        assert torch.equal(model(torch.tensor([PROMPT])), plain)


def test_contrast_pairs_must_differ_and_have_as_many_tokens(decoder_pair):
    _, model, _ = decoder_pair
    with pytest.raises(InputError, match="as many tokens on both sides"):
        contrast_direction(model, [([1, 2], [3])], 0)
    with pytest.raises(InputError, match="the same tokens"):
        contrast_tokens([([1, 2], [1, 2])])
    assert contrast_tokens(PAIRS) == (7, 9)


def test_the_tab_draws_the_shift_and_the_sweep_and_generates_per_coefficient():
    shift, swept, note, _ = steering.update("tiny-gpt-char", "ROMEO: I", "love | hate", 2, 4)
    assert [t.name for t in swept.data] == ["logit difference", "P('l')", "P('h')"]
    assert len(swept.data[0].x) == len(steering.SWEEP) and "moves by" in note
    assert shift.data[0].y != shift.data[1].y   # the steered top-10 is not the plain one
    *_, (rows, status) = steering.continuations("tiny-gpt-char", "ROMEO: I", "love | hate", 2, "-4, 0, 4", 6, Job())
    assert [r[0] for r in rows] == [-4.0, 0.0, 4.0] and "block 2" in status
    tiny = steering.get_model("tiny-gpt-char")
    assert rows[1][1] == tiny.tokenizer.decode(generate(tiny, tiny.tokenizer.encode("ROMEO: I"), 6).new_ids)


def test_cancel_stops_between_coefficients():
    job = Job()
    runs = steering.continuations("tiny-gpt-char", "ROMEO: I", "love | hate", 2, "-4, 0, 4", 6, job)
    rows, _ = next(runs)
    job.stop.set()
    rows, status = next(runs)
    assert len(rows) == 1 and status.startswith("**Cancelled** after 1 of 3")


def test_an_encoder_is_told_on_the_tab_and_its_layer_slider_still_follows_the_model():
    """A model switch redraws the tab: an encoder gets a sentence on the tab, not an error toast; Generate refuses."""
    shift, swept, note, layer = steering.update("minilm-l6", "ROMEO: I", "love | hate", 29, 4)
    assert shift is None and swept is None and "minilm-l6 is an encoder" in note and "The layer was 29" in note
    assert (layer.maximum, layer.value) == (5, 5)
    with pytest.raises(InputError, match="is an encoder"):
        next(steering.continuations("minilm-l6", "ROMEO: I", "love | hate", 2, "-4, 0, 4", 6, Job()))


@pytest.mark.parametrize("model, pairs, layer, problem", [
    ("tiny-gpt-char", "love | hated", 1, "'love' is 4 tokens and 'hated' is 5"),
    ("tiny-gpt-char", "love hate", 1, "should read `plus | minus`"),
    ("tiny-gpt-char", "love | love", 1, "the same tokens"),
    ("tiny-gpt-char", "\n".join(["a | b"] * 9), 1, "At most 8 contrast pairs"),
    ("tiny-gpt-char", "love | hate", "x", "The layer must be a whole number"),
])
def test_the_tab_refuses_what_it_cannot_steer_plainly(model, pairs, layer, problem):
    with pytest.raises(InputError, match=problem.replace("|", r"\|").replace("(", r"\(")):
        steering.update(model, "ROMEO: I", pairs, layer, 4)


@pytest.mark.parametrize("coefficients", ["", "1, 2, 3, 4, 5, 6, 7", "1, lots", "50"])
def test_bad_coefficients_get_a_plain_message(coefficients):
    with pytest.raises(InputError, match="coefficient"):
        next(steering.continuations("tiny-gpt-char", "ROMEO: I", "love | hate", 2, coefficients, 6, Job()))
