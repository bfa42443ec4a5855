"""Activation patching: patching everything restores the clean run, nothing leaves the corrupted one, and each
cell of a batched sweep equals one patched forward."""
import functools

import pytest
import torch

from core.analysis.patching import logit_diff, run_patched, sweep
from core.inputs import InputError
from core.model.cache import kinds
from core.weights import zoo
from explainers.page.jobs import Job
from explainers.tabs import patching

PAIRS = {"smollm2-135m": ("The capital of France is", "The capital of Italy is", " Paris", " Rome"),
         "tiny-gpt-char": ("the king and quee", "the lord and ladi", "n", "e")}


@functools.cache
def prepared(name: str):
    model = zoo.load(name, "cpu")
    clean, corrupt, answer, wrong = PAIRS[name]
    clean_ids, corrupt_ids = (torch.tensor(model.tokenizer.encode(t)) for t in (clean, corrupt))
    answer, wrong = model.tokenizer.encode(answer)[0], model.tokenizer.encode(wrong)[0]
    _, cache = model.run_with_cache(clean_ids[None], names=kinds("resid_pre", "attn_out", "mlp_out", "z"))
    return model, clean_ids, corrupt_ids, answer, wrong, cache.remove_batch_dim()


@functools.cache
def swept(name: str, kind: str) -> dict:
    model, clean_ids, corrupt_ids, answer, wrong, _ = prepared(name)
    return sweep(model, clean_ids, corrupt_ids, answer, wrong, kind)


@pytest.fixture(params=list(PAIRS))
def setup(request):
    return prepared(request.param)


def test_the_presets_clean_answer_is_the_clean_runs_top_token(setup):
    model, clean_ids, corrupt_ids, answer, wrong, _ = setup
    with torch.no_grad():
        assert int(model(clean_ids[None])[0, -1].argmax()) == answer
        assert int(model(corrupt_ids[None])[0, -1].argmax()) != answer


def test_patching_every_position_at_layer_0_gives_the_clean_logits_and_nothing_the_corrupted(setup):
    model, clean_ids, corrupt_ids, _, _, cache = setup
    with torch.no_grad():
        clean, corrupt = model(clean_ids[None])[0], model(corrupt_ids[None])[0]
    assert torch.equal(run_patched(model, corrupt_ids, cache, "resid_pre", 0), clean)
    assert torch.equal(run_patched(model, corrupt_ids, cache, "resid_pre", 3, positions=[]), corrupt)


@pytest.mark.parametrize("name, kind", [("tiny-gpt-char", k) for k in ("resid_pre", "attn_out", "mlp_out", "z")]
                         + [("smollm2-135m", k) for k in ("resid_pre", "z")])
def test_each_cell_of_the_batched_sweep_equals_one_patched_forward(name, kind):
    model, clean_ids, corrupt_ids, answer, wrong, cache = prepared(name)
    out = swept(name, kind)
    assert out["restored"].shape == (model.cfg.n_layers, model.cfg.n_heads if kind == "z" else len(clean_ids))
    for layer, place in [(0, 1), (2, 3), (model.cfg.n_layers - 1, 0)]:
        patched = run_patched(model, corrupt_ids, cache, kind, layer, **({"head": place} if kind == "z" else
                                                                          {"positions": [place]}))
        ld = float(logit_diff(patched[-1], answer, wrong))
        expected = (ld - out["corrupt"]) / (out["clean"] - out["corrupt"])
        assert float(out["restored"][layer, place]) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("name", list(PAIRS))
def test_patching_the_one_differing_token_at_the_input_restores_everything(name):
    _, clean_ids, corrupt_ids, *_ = prepared(name)
    restored = swept(name, "resid_pre")["restored"]
    differ = (clean_ids != corrupt_ids).nonzero()[:, 0].tolist()
    if len(differ) == 1:  # "France" / "Italy": the clean run, exactly
        assert float(restored[0, differ[0]]) == pytest.approx(1.0, abs=1e-4)
    same = [p for p in range(len(clean_ids)) if p not in differ]
    assert restored[0, same].abs().max() < 1e-4  # an identical token patched in changes nothing


def test_the_tab_draws_each_sweep_as_it_finishes_and_refuses_plainly():
    steps = list(patching.update("tiny-gpt-char", *PAIRS["tiny-gpt-char"], ["residual stream", "heads"], Job()))
    assert len(steps) == 2 and "2 of 2 sweeps" in steps[-1][0] and len(steps[-1][1].data) == 2
    with pytest.raises(InputError, match="same length"):
        list(patching.update("tiny-gpt-char", "to be", "not to be", "a", "b", ["heads"], Job()))
    with pytest.raises(InputError, match="does not predict a next token"):
        list(patching.update("minilm-l6", *PAIRS["smollm2-135m"], ["heads"], Job()))
    with pytest.raises(InputError, match="Tick at least one"):
        list(patching.update("tiny-gpt-char", *PAIRS["tiny-gpt-char"], [], Job()))
    steps = list(patching.update("smollm2-135m", "The capital of France is", "The capital of Italy is", " Paris city",
                                 " Rome", ["residual stream"], Job()))
    assert "Warning: the answer ' Paris city' is 2 tokens" in steps[-1][0]
