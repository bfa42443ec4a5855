"""Sampling filters equal transformers' logits warpers; greedy is the argmax; seeds repeat."""
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from core.inference.sampling import SamplingSettings, sample, stages

SETTINGS = [(0.7, 0, 1.0), (1.3, 20, 1.0), (1.0, 0, 0.9), (0.8, 50, 0.75), (2.0, 5, 0.3), (1.0, 1000, 0.01)]


@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_stages_equal_transformers_warpers(temperature, top_k, top_p):
    logits = torch.randn(4, 500, generator=torch.Generator().manual_seed(0)) * 3
    ours = stages(logits, SamplingSettings(temperature, top_k, top_p))
    theirs = TemperatureLogitsWarper(temperature)(None, logits)
    assert torch.equal(ours["temperature"], theirs)
    if top_k:
        theirs = TopKLogitsWarper(top_k)(None, theirs)
    assert torch.equal(ours["top_k"], theirs)
    if top_p < 1:
        theirs = TopPLogitsWarper(top_p)(None, theirs)
    assert torch.equal(ours["top_p"], theirs)
    torch.testing.assert_close(ours["probs"].sum(-1), torch.ones(4))


def test_top_k_one_and_temperature_zero_give_the_argmax():
    logits = torch.randn(8, 300, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, SamplingSettings(1.0, 1, 1.0), g), logits.argmax(-1))
    assert torch.equal(sample(logits, SamplingSettings(0.0)), logits.argmax(-1))
    greedy = stages(logits, SamplingSettings(0.0))["probs"]
    assert torch.equal(greedy.argmax(-1), logits.argmax(-1)) and torch.all(greedy.max(-1).values == 1)


def test_a_seeded_draw_repeats_and_different_seeds_differ():
    logits = torch.zeros(1000, 50)
    s = SamplingSettings(1.0, 0, 1.0)
    a = sample(logits, s, torch.Generator().manual_seed(7))
    b = sample(logits, s, torch.Generator().manual_seed(7))
    c = sample(logits, s, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_filtered_tokens_are_never_drawn():
    logits = torch.randn(1, 100, generator=torch.Generator().manual_seed(3)).expand(5000, 100)
    s = SamplingSettings(1.0, 10, 0.8)
    allowed = torch.isfinite(stages(logits[:1], s)["top_p"][0]).nonzero().flatten()
    drawn = sample(logits, s, torch.Generator().manual_seed(0)).unique()
    assert set(drawn.tolist()) <= set(allowed.tolist())


@pytest.mark.parametrize("bad", [SamplingSettings(-1.0), SamplingSettings(1.0, -3), SamplingSettings(1.0, 0, 0.0),
                                 SamplingSettings(1.0, 0, 1.5), SamplingSettings(float("nan"))])
def test_bad_settings_are_explained(bad):
    with pytest.raises(ValueError, match="must be"):
        stages(torch.randn(1, 10), bad)
