"""Training: the loss goes down, MLM masking follows 80/10/10, shipped checkpoints keep their metrics."""
import json
from dataclasses import replace

import pytest
import torch

from core.learning.data import corpus_split, mlm_mask
from core.learning.evaluation import evaluate
from core.learning.training import RECIPES, SLICE_CHARS, train
from core.paths import ASSETS
from core.weights import zoo
from core.weights.tokenizers import WordTokenizer

TEXT = "To be, or not to be, that is the question.\n" * 40


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_few_optimisation_steps_lower_the_loss(name):
    recipe = replace(RECIPES[name], steps=30, warmup=5, batch=8,
                     config=replace(RECIPES[name].config, n_layers=1, n_ctx=32))
    torch.manual_seed(0)
    before = train(name, replace(recipe, steps=0), text=TEXT, progress=False)
    after = train(name, recipe, text=TEXT, progress=False)
    _, heldout = corpus_split(TEXT)
    ce = lambda model: evaluate(model, heldout, sample_tokens=0)["cross_entropy"]
    assert ce(after) < 0.9 * ce(before)


@pytest.mark.parametrize("name", list(RECIPES))
def test_training_is_seeded_bit_for_bit(name):
    # the embedding gradient sums repeated tokens; with two threads that order varies unless train() asks
    # torch for deterministic kernels
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    recipe = replace(RECIPES[name], steps=12, warmup=1, batch=32,
                     config=replace(RECIPES[name].config, n_layers=1, n_ctx=32))
    a = train(name, recipe, text=TEXT, progress=False)
    b = train(name, recipe, text=TEXT, progress=False)
    torch.set_num_threads(threads)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_mlm_masking_follows_80_10_10():
    tok = WordTokenizer.build(" ".join(f"w{i}" for i in range(500)), 505)
    ids = torch.randint(len(tok.SPECIALS), tok.vocab_size, (400, 250), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = tok.cls_id
    inputs, labels = mlm_mask(ids, tok, torch.Generator().manual_seed(1))
    chosen = labels != -100
    n = chosen.sum().item()
    assert abs(n / ids.numel() - 0.15) < 0.005                      # ~15,000 of 100,000 chosen
    assert not chosen[:, 0].any(), "special tokens are never chosen"
    masked = (inputs[chosen] == tok.mask_id).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    replaced = 1 - masked - kept
    # binomial standard error at n=15,000 is ~0.003; allow 4 sigma (a random id can equal the original: +0.0002)
    assert abs(masked - 0.8) < 0.013 and abs(kept - 0.1) < 0.01 and abs(replaced - 0.1) < 0.01
    assert torch.equal(inputs[~chosen], ids[~chosen])


@pytest.mark.parametrize("name", list(RECIPES))
def test_shipped_checkpoint_loads_and_matches_its_metrics(name):
    if zoo.available()[name]:
        pytest.fail(f"{name}: {zoo.available()[name]}")
    model = zoo.load(name, "cpu")
    recorded = json.loads((ASSETS / name / "metrics.json").read_text())["heldout_slice"]
    _, heldout = corpus_split()
    got = evaluate(model, heldout[:SLICE_CHARS], sample_tokens=0)  # the sample's 400 steps are not compared
    for key in ["cross_entropy", "accuracy"]:
        assert got[key] == pytest.approx(recorded[key], rel=0.02), key
