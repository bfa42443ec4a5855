"""Preference tuning (DPO): the loss is the paper's, computed independently; a response's log-probability counts its
own tokens only; the reference never changes; the default run learns the preference; Cancel and bad settings."""
import functools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from core.device import torch_threads
from core.inputs import InputError
from core.learning import preference as pf
from core.learning.preference_pairs import CORPUS, load_pairs, make_pairs, mood
from core.weights import zoo
from explainers.page.jobs import Job
from explainers.tabs import preference as tab

SMALL = pf.DpoSettings(steps=3, batch=4, eval_every=2)


@functools.cache
def base():
    return zoo.load("tiny-gpt-char", "cpu")


def run(settings=SMALL, should_stop=lambda: False, pairs=None):
    data = load_pairs()
    *_, last = pf.dpo(base(), pairs or data["train"][:16], data["heldout"][:8], data["sample_prompts"][:2], settings,
                      should_stop, n_samples=2, max_new=8)
    return last


def logprob_by_hand(model, prompt: str, response: str) -> float:
    """log p(response | prompt) one sequence at a time, from the full logits: a plain log_softmax, then each
    response character's entry read off, no batching, masks or padding."""
    tok = model.tokenizer
    x, y = tok.encode(prompt), tok.encode(response)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([x + y]))[0], dim=-1)      # (T, V)
    return sum(logp[len(x) - 1 + i, token].item() for i, token in enumerate(y))


def test_the_dpo_loss_is_the_papers_formula_on_independently_computed_log_probabilities():
    pairs = load_pairs()["train"][:6]
    policy, reference = pf.copies(base())
    with torch.no_grad():                                   # move the policy away from the reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    batch = pf.encode_pairs(base().tokenizer, pairs)
    beta = 0.3
    with torch.no_grad():
        loss, m = pf.measure(policy(batch.ids[:, :-1]), reference(batch.ids[:, :-1]), batch, beta)
    losses, wins = [], 0
    for p in pairs:                                        # Rafailov et al. 2023, eq. 7, pair by pair
        h = {(who, side): logprob_by_hand(model, p["prompt"], p[side])
             for who, model in [("pi", policy), ("ref", reference)] for side in ("chosen", "rejected")}
        chosen = beta * (h["pi", "chosen"] - h["ref", "chosen"])
        rejected = beta * (h["pi", "rejected"] - h["ref", "rejected"])
        losses.append(-torch.log(torch.sigmoid(torch.tensor(chosen - rejected, dtype=torch.float64))).item())
        wins += chosen > rejected
    assert abs(loss.item() - sum(losses) / len(losses)) < 1e-6
    assert m.accuracy == wins / len(pairs) and 0 < m.accuracy < 1     # the check can tell right from wrong
    assert abs(loss.item() - pf.CHANCE_LOSS) > 1e-3                   # the policy really differs from the reference


def test_the_loss_is_log_2_and_every_reward_0_when_the_policy_is_the_reference():
    policy, reference = pf.copies(base())
    m = pf.evaluate(policy, reference, pf.encode_pairs(base().tokenizer, load_pairs()["heldout"][:8]), beta=0.5)
    assert abs(m.loss - pf.CHANCE_LOSS) < 1e-6 and m.chosen_reward == m.rejected_reward == 0 and m.kl < 1e-6


def test_a_responses_log_probability_counts_its_own_tokens_only():
    pairs = [{"prompt": "ROMEO.\nBut soft, what light through yonder window breaks?\nAnd", "chosen": " sweet love\n",
              "rejected": " bloody death\n"}, {"prompt": "O", "chosen": " x\n", "rejected": " y\n"}]   # padded rows
    batch = pf.encode_pairs(base().tokenizer, pairs)
    assert batch.response.sum(1).tolist() == [12, 3, 14, 3]                      # chosen rows, then rejected rows
    with torch.no_grad():
        got = pf.response_logprob(base()(batch.ids[:, :-1]), batch.ids, batch.response)
    want = [logprob_by_hand(base(), p["prompt"], p[side]) for side in ("chosen", "rejected") for p in pairs]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=0)
    with torch.no_grad():                                                        # the prompt's tokens would add
        everything = pf.response_logprob(base()(batch.ids[:, :-1]), batch.ids, batch.ids != -1)
    assert everything[0] < got[0] - 10


def test_the_reference_and_the_shared_model_never_change_while_the_policy_learns():
    shared = {k: v.clone() for k, v in base().state_dict().items()}
    data = load_pairs()
    it = pf.dpo(base(), data["train"][:16], data["heldout"][:8], data["sample_prompts"][:1], SMALL, n_samples=1,
                max_new=4)
    r = next(it)
    reference = {k: v.clone() for k, v in r.reference.state_dict().items()}
    *_, r = it
    assert all(torch.equal(reference[k], v) for k, v in r.reference.state_dict().items())
    assert all(torch.equal(shared[k], v) for k, v in base().state_dict().items())
    assert not any(p.requires_grad for p in r.reference.parameters())
    assert any(not torch.equal(p, base().state_dict()[k]) for k, p in r.policy.state_dict().items())


def test_a_stop_request_ends_the_training_within_one_step_and_still_measures():
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2                      # asked before each step: steps 1 and 2 run, then it stops

    r = run(replace(SMALL, steps=50), should_stop)
    assert r.stopped and r.step == 2 and len(r.train_log) == 2 and r.phase == "done"
    assert r.heldout_log[-1][0] == 2 and r.train_final is not None and r.after


def test_the_shipped_pairs_are_what_the_script_makes_and_each_pair_is_one_gentle_and_one_grim_line():
    data = load_pairs()
    alphabet = set(base().tokenizer.chars)
    assert make_pairs(CORPUS.read_text(), alphabet) == data
    assert len(data["train"]) >= 500 and len(data["heldout"]) >= 50 and len(data["sample_prompts"]) >= 4
    for p in data["train"] + data["heldout"]:
        assert mood(p["prompt"] + p["chosen"]) == "gentle" and mood(p["prompt"] + p["rejected"]) == "grim"
        assert set(p["prompt"] + p["chosen"] + p["rejected"]) <= alphabet
    lines = lambda part: {p["prompt"] + p[side] for p in data[part] for side in ("chosen", "rejected")}
    assert not lines("train") & lines("heldout")


@pytest.mark.parametrize("field, value", [("beta", 0), ("beta", 100), ("beta", "warm"), ("lr", 1.0),
                                          ("lr", float("nan")), ("steps", 0), ("steps", 10**6), ("steps", 2.5),
                                          ("batch", 0), ("batch", None)])
def test_bad_settings_get_a_plain_sentence(field, value):
    values = dict(beta=0.5, lr=1e-4, steps=10, batch=8)
    values[field] = value
    with pytest.raises(InputError, match="must be"):
        tab.settings(**values)
    with pytest.raises(InputError, match="must be"):
        list(tab.run(*values.values(), Job()))


@pytest.fixture
def few_pairs(monkeypatch):
    """The tab on a few of the pairs (its default reads them all)."""
    data = load_pairs()
    few = {**data, "train": data["train"][:16], "heldout": data["heldout"][:8], "sample_prompts": data["sample_prompts"][:2]}
    monkeypatch.setattr(tab, "load_pairs", lambda: few)
    return few


def test_the_tab_runs_and_draws_its_curves_numbers_and_samples(few_pairs):
    out = list(tab.run(0.5, 1e-4, 2, 4, Job()))
    status, curves, numbers, samples = out[-1]
    assert status.startswith("**Finished**: 2 steps")
    assert len(curves.data) == 15 and "reward accuracy" in numbers and "training pairs at the end" in numbers
    assert "before (the reference)" in samples and samples.count("<tr>") == 1 + len(few_pairs["sample_prompts"])


def test_cancel_in_the_tab_stops_at_once_and_says_so():
    job = Job()
    job.stop.set()
    out = list(tab.run(0.5, 1e-4, 50, 4, job))
    assert len(out) == 1 and out[0][0].startswith("**Cancelled** at step 0")


def test_the_stages_and_the_pairs_are_drawn():
    stages = tab.stages_html()
    assert all(s in stages for s in ("Supervised fine-tuning", "Reward model", "PPO", "DPO"))
    assert "<span style='background:#dbeafe" in tab.pairs_html(load_pairs())


@pytest.mark.slow  # the default run, about a minute on two busy cores
def test_the_default_run_learns_the_preference():
    data = load_pairs()
    with torch_threads(tab.TRAIN_THREADS):                           # as the tab runs it
        *_, r = pf.dpo(base(), data["train"], data["heldout"], data["sample_prompts"])
    start, end = r.heldout_log[0][1], r.heldout_log[-1][1]
    assert r.train_final.accuracy > 0.8 and end.accuracy > 0.8 and end.margin > 1.0
    assert end.pi_rejected < start.pi_rejected - 5                 # the rejected responses lose most
    assert 0 < end.kl < 0.5                                          # it moved, and not far
    before, after = (pf.word_counts([line for lines in side.values() for line in lines]) for side in (r.before, r.after))
    assert after["gentle"] >= before["gentle"] + 10 and after["grim"] <= before["grim"]
