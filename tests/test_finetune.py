"""Fine-tuning: LoRA trains r (d_in + d_out) numbers per matrix, merging changes no logit, full fine-tuning of
tiny-gpt-char learns a new corpus in the default budget, and a stop request ends the training within one step."""
import functools
from dataclasses import replace

import pytest
import torch

from core.inputs import InputError
from core.learning import finetune as ft
from core.weights import zoo
from explainers.page.jobs import Job
from explainers.tabs import finetune as tab

CONSTITUTION = "The Constitution of the United States"
SMALL = ft.RunSettings(steps=4, batch=2, seq_len=32, eval_every=2)


@functools.cache
def base():
    return zoo.load("tiny-gpt-char", "cpu")


def prompt_ids(text="The Congress shall"):
    return base().tokenizer.encode(text)


def run(text=None, settings=SMALL, lora=ft.LoraSettings(rank=2), methods=("full", "LoRA"), should_stop=lambda: False):
    *_, last = ft.compare(base(), text or ft.read_corpus(CONSTITUTION), prompt_ids(), settings, lora, methods,
                          should_stop, sample_tokens=8)
    return last


@functools.cache
def small_run():
    return run()


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")])
def test_lora_trains_r_times_d_in_plus_d_out_per_adapted_matrix(targets):
    cfg, r = base().cfg, 4
    shapes = {"q_proj": (cfg.d_model, cfg.n_heads * cfg.d_head), "k_proj": (cfg.d_model, cfg.n_kv_heads * cfg.d_head),
              "v_proj": (cfg.d_model, cfg.n_kv_heads * cfg.d_head), "o_proj": (cfg.n_heads * cfg.d_head, cfg.d_model),
              "up_proj": (cfg.d_model, cfg.d_ff), "down_proj": (cfg.d_ff, cfg.d_model)}   # (d_in, d_out)
    want = cfg.n_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
    adapted = ft.add_lora(base(), ft.LoraSettings(rank=r, targets=targets))
    trainable, _ = adapted.get_nb_trainable_parameters()
    assert trainable == want == r * ft.lora_parameters(base(), targets)


def test_a_new_adapter_leaves_the_logits_as_they_were_and_the_hooks_still_fire():
    """B starts at zero, so dW = 0; the hook points sit between peft's wrapped Linears and still fire."""
    ids = torch.tensor([prompt_ids()])
    inner = ft.add_lora(base(), ft.LoraSettings()).get_base_model()
    with torch.no_grad():
        torch.testing.assert_close(inner.eval()(ids), base()(ids), rtol=0, atol=0)
    _, cache = inner.run_with_cache(ids, names=lambda n: n.endswith("hook_q"))
    _, ours = base().run_with_cache(ids, names=lambda n: n.endswith("hook_q"))
    torch.testing.assert_close(cache["blocks.3.attn.hook_q"], ours["blocks.3.attn.hook_q"])


def test_merged_and_unmerged_logits_agree_within_1e_4():
    c = small_run()
    assert c.merge_diff is not None and c.merge_diff <= 1e-4
    merged = c.sides["LoRA"].model
    assert not any("lora" in name for name, _ in merged.named_parameters())   # one Linear per matrix again
    _, cache = merged.run_with_cache(torch.tensor([prompt_ids()]), names=lambda n: n.endswith("hook_pattern"))
    assert len(cache) == base().cfg.n_layers


def test_lora_dw_has_rank_r_and_full_fine_tuning_changes_more():
    c = small_run()
    assert c.lora_delta.shape == c.full_delta.shape and c.lora_delta.abs().max() > 0
    assert torch.linalg.matrix_rank(c.lora_delta).item() == 2                 # r = 2
    assert torch.linalg.matrix_rank(c.full_delta).item() > 2


def test_the_shared_model_is_never_trained():
    before = {k: v.clone() for k, v in base().state_dict().items()}
    small_run()
    assert all(torch.equal(before[k], v) for k, v in base().state_dict().items())
    assert not any(p.requires_grad for p in base().parameters())


def test_each_side_reports_its_cost_and_scores():
    c = small_run()
    full, lora = c.sides["full"], c.sides["LoRA"]
    assert full.trainable == c.total and lora.trainable == 2 * ft.lora_parameters(base(), ft.LoraSettings().targets)
    assert full.state_bytes == 2 * 4 * c.total          # AdamW: a mean and a variance per weight, fp32
    assert lora.state_bytes == 2 * 4 * lora.trainable
    assert len(full.losses) == len(lora.losses) == len(full.step_seconds) == SMALL.steps
    for side in c.sides.values():
        assert set(side.scores) == {"cross-entropy", "perplexity", "bleu", "1-gram", "2-gram", "3-gram", "4-gram",
                                    "rouge1", "rouge2", "rougeL", "rougeLsum", "time (s)"}
        assert all(0 <= side.scores[k] <= 1 for k in ("bleu", "1-gram", "rouge1", "rougeL"))
        assert side.probs.shape == (base().cfg.vocab_size,) and side.sample


@pytest.mark.slow  # a real fine-tuning run
def test_full_fine_tuning_lowers_held_out_loss_by_30_percent_in_the_default_budget():
    """Seeded: the default run on the Constitution, full fine-tuning only (LoRA is compared in the tab)."""
    c = run(settings=ft.RunSettings(), methods=("full",))
    before, after = c.sides["before"].scores["cross-entropy"], c.sides["full"].scores["cross-entropy"]
    assert after <= 0.7 * before, (before, after)


def test_a_stop_request_ends_the_training_within_one_step():
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 3            # asked before each step: steps 1 to 3 run, then it stops

    c = run(settings=replace(SMALL, steps=50), should_stop=should_stop)
    assert c.stopped and c.step == 3 and len(c.sides["full"].losses) == len(c.sides["LoRA"].losses) == 3
    assert c.phase == "done"              # what was trained is still measured


@pytest.mark.parametrize("text, message", [("", "empty"), ("abc", "at least"), ("x" * 5_000_000, "at most"),
                                           (None, "empty"), ("\x00\x01 \n", "empty")])
def test_bad_corpora_get_a_plain_sentence(text, message):
    with pytest.raises(InputError, match=message):
        ft.check_corpus(text)


@pytest.mark.parametrize("field, value", [("steps", 0), ("steps", 10**6), ("batch", -1), ("seq_len", 4096),
                                          ("lr_full", 5.0), ("lr_lora", float("nan")), ("rank", 0), ("rank", 1000),
                                          ("alpha", "ten"), ("dropout", 2.0), ("steps", None)])
def test_out_of_range_settings_get_a_plain_sentence(field, value):
    values = dict(steps=10, batch=4, seq_len=32, lr_full=1e-3, lr_lora=1e-2, rank=4, alpha=8, dropout=0.0,
                  targets=["q_proj"])
    values[field] = value
    with pytest.raises(InputError, match="must be"):
        tab.settings(base(), **values)


def test_the_tab_runs_and_draws_every_figure_and_table():
    out = list(tab.run("tiny-gpt-char", CONSTITUTION, "", "The Congress", 3, 2, 32, 1e-3, 5e-3, 2, 4, 0.0,
                       ["q_proj", "v_proj"], Job()))
    status, curves, cost, metrics, probs, samples, delta, merged = out[-1]
    assert "| full |" in metrics and "| LoRA |" in metrics and "| before |" in metrics
    assert "ROUGE-L" in metrics and "BLEU" in metrics and "optimiser state" in cost
    assert len(curves.data) == 7 and len(probs.data) == 3 and delta.data[0].type == "heatmap"
    assert "Merged" in merged and "The Congress" in samples
    again = list(tab.run("tiny-gpt-char", CONSTITUTION, "", "We the People", 3, 2, 32, 1e-3, 5e-3, 2, 4, 0.0,
                         ["q_proj", "v_proj"], Job()))
    assert len(again) == 1 and "kept" in again[0][0] and "We the People" in again[0][5]   # answered from the kept run


def test_cancel_in_the_tab_stops_at_once_and_says_so():
    job = Job()
    job.stop.set()  # the Cancel button
    out = list(tab.run("tiny-gpt-char", CONSTITUTION, "", "", 50, 2, 32, 1e-3, 5e-3, 2, 4, 0.0, ["q_proj"], job))
    assert len(out) == 1 and out[0][0].startswith("**Cancelled** at step 0")


def test_a_pasted_text_is_used_and_a_bad_one_is_refused():
    with pytest.raises(InputError, match="at least"):
        list(tab.run("tiny-gpt-char", tab.PASTE, "abc", "", 3, 2, 32, 1e-3, 5e-3, 2, 4, 0.0, ["q_proj"], Job()))
    with pytest.raises(InputError, match="Fine-tune one of"):
        list(tab.run("tiny-bert-word", CONSTITUTION, "", "", 3, 2, 32, 1e-3, 5e-3, 2, 4, 0.0, ["q_proj"], Job()))


@pytest.mark.parametrize("targets", [[], ["nope"], "q_proj", None])
def test_no_matrix_to_adapt_gets_a_plain_sentence(targets):
    with pytest.raises(InputError, match="Tick at least one matrix"):
        tab.settings(base(), 10, 4, 32, 1e-3, 1e-2, 4, 8, 0.0, targets)
    with pytest.raises(InputError, match="None of gate_proj is in this model"):
        ft.add_lora(base(), ft.LoraSettings(targets=("gate_proj",)))


def test_the_cost_tables_losses_are_the_curves_and_its_before_never_changes():
    """The table's curve column reads the curve's own numbers at every update (its 'before' is the dashed line's
    value, mid-run and at the end); the full evaluation's cross-entropy is a column of its own, named."""
    out = list(tab.run("tiny-gpt-char", CONSTITUTION, "", "The Congress", 4, 2, 32, 1e-3, 5e-3, 2, 4, 0.0,
                       ["q_proj", "v_proj"], Job()))   # 4 steps: not the run another test keeps
    befores, finals = set(), []
    for _, curves, cost, *_ in out:
        row = next(line for line in cost.split("\n") if line.startswith("| full |")).split("|")
        before = float(row[6].split("→")[0])
        dashed = next(t for t in curves.data if t.name == "before (held-out)")
        assert before == pytest.approx(dashed.y[0], abs=5e-4)
        befores.add(before)
        finals.append(row[7].strip())
    measured = [f for f in finals if "→" in f]
    assert len(befores) == 1 and finals[0] == "when the run ends" and measured and finals[-1] == measured[0]
    assert len(set(measured)) == 1                          # once measured, the full evaluation's numbers stay
