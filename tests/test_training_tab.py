"""The Training tab: the default run learns, Cancel stops within one step, bad settings get a plain message,
kept models join the zoo (a bounded few), and the figures are valid Plotly."""
import json
import re
import threading

import gradio as gr
import plotly.graph_objects as go
import pytest
import torch

from core.device import torch_threads
from core.inputs import InputError
from core.learning.training import prepare, train_steps
from core.weights import zoo
from explainers.page.inputs import model_choices
from explainers.page.jobs import Job
from explainers.tabs import lm_head, training

DEFAULT_HELDOUT_BELOW = 2.25  # nats per character; ln V (guessing) is 4.2, the seeded default run ends near 2.1


def small(name: str = "tiny-gpt-char", steps: int = 20):
    return training.app_recipe(name, 16, 1, steps, 5e-3, 4)


def valid(fig: go.Figure) -> bool:
    return json.loads(go.Figure(fig.to_dict()).to_json()) == json.loads(fig.to_json())


@pytest.mark.slow  # a real training run
def test_the_default_run_lowers_the_heldout_loss_within_its_steps():
    d = training.DEFAULTS
    recipe = training.app_recipe("tiny-gpt-char", d["width"], d["layers"], d["steps"], d["learning rate"], d["batch"])
    run = prepare(recipe)  # seeded, as the tab's run
    steps = list(train_steps(run, eval_every=recipe.steps, threads=training.TRAIN_THREADS))
    assert len(steps) == recipe.steps and steps[0].heldout > 4.0
    assert steps[-1].heldout < DEFAULT_HELDOUT_BELOW, steps[-1].heldout


def test_cancel_stops_within_one_step():
    stop = threading.Event()
    seen = []
    for step in train_steps(prepare(small()), stop=stop):
        seen.append(step.step)
        if step.step == 3:
            stop.set()  # as the Cancel button does, from another thread, while step 3 is reported
    assert seen == [1, 2, 3]


def test_the_tab_reports_a_cancel_and_a_run_cancelled_while_waiting_never_starts():
    job = Job()
    answers = training.train_live("tiny-gpt-char", 16, 1, 50, 5e-3, 4, job)
    next(answers)  # the untrained model is drawn; no step has run
    job.stop.set()
    *_, last = answers
    assert "**Cancelled** after 0 steps" in last[0] and job.ended
    waiting = Job()
    waiting.stop.set()
    assert [a[0] for a in training.train_live("tiny-gpt-char", 16, 1, 50, 5e-3, 4, waiting)] == \
        ["Cancelled before the run started."]


@pytest.mark.parametrize("name", ["tiny-gpt-char", "tiny-bert-word", "tiny-moe"])
def test_each_recipe_streams_valid_figures_and_keeps_its_model(name, monkeypatch):
    monkeypatch.setattr(zoo, "SPECS", dict(zoo.SPECS))
    monkeypatch.setattr(zoo, "_kept", [])
    job = Job()
    answers = list(training.train_live(name, 16, 1, 10, 5e-3, 4, job))
    status, curves, text, attention, embeddings = answers[-1]
    assert "**Finished**" in status and all(valid(f) for f in (curves, attention, embeddings))
    assert ("Masked LM at step 10" if name == "tiny-bert-word" else "step 10") in text
    assert len(attention.data) == (2 if name == "tiny-moe" else 1)  # MoE: the expert load beside the pattern
    message, picker = training.keep(job)
    kept = zoo.load(job.result.kept_as)
    assert job.result.kept_as in message and job.result.kept_as in [value for _, value in picker.choices]
    assert kept is not job.result.model and torch.equal(kept.embed.weight, job.result.model.embed.weight)


def test_out_of_range_settings_get_a_plain_message():
    for args, words in [((16, 1, 20, 5e-3, 4), None),
                        ((1024, 1, 20, 5e-3, 4), "width must be from 16 to 256"),
                        ((40, 1, 20, 5e-3, 4), "multiple of 16"),
                        ((16, 9, 20, 5e-3, 4), "layers must be from 1 to 6"),
                        ((16, 1, 0, 5e-3, 4), "steps must be from 10 to 3000"),
                        ((16, 1, 20, 5.0, 4), "learning rate must be from 0.0001 to 0.03"),
                        ((16, 1, 20, "fast", 4), "learning rate must be a number"),
                        ((16, 1, 20, float("nan"), 4), "learning rate must be from"),
                        ((16, 1.5, 20, 5e-3, 4), "layers must be a whole number"),
                        ((16, 1, 20, 5e-3, None), "batch must be a whole number")]:
        if words is None:
            training.app_recipe("tiny-gpt-char", *args)
            continue
        with pytest.raises(InputError, match=words):
            training.app_recipe("tiny-gpt-char", *args)
    with pytest.raises(InputError, match="Choose a recipe"):
        training.app_recipe("gpt-5", 16, 1, 20, 5e-3, 4)
    with pytest.raises(InputError, match="Train a model first"):
        training.keep(None)
    with pytest.raises(InputError, match="still going"):
        training.keep(Job(result=training.Trained(prepare(small()).model, "tiny-gpt-char")))


def test_the_server_keeps_a_bounded_number_of_trained_models_under_new_names(monkeypatch):
    monkeypatch.setattr(zoo, "SPECS", dict(zoo.SPECS))
    monkeypatch.setattr(zoo, "_kept", [])
    model = prepare(small()).model
    names = [zoo.keep(model, "my-test", "a test model") for _ in range(zoo.KEPT_MAX + 1)]
    assert len(set(names)) == len(names)
    offered = [value for _, value in model_choices()]
    assert names[0] not in offered and all(n in offered for n in names[1:])
    with pytest.raises(InputError, match="dropped"):
        zoo.load(names[0])
    assert zoo.load(names[-1]).tokenizer is model.tokenizer


def test_training_threads_are_set_for_the_work_and_restored():
    before, seen = torch.get_num_threads(), {}
    look, looked = threading.Event(), threading.Event()

    def other_request():  # a server thread already running, as Gradio's workers are
        torch.get_num_threads()
        look.wait()
        seen["other"] = torch.get_num_threads()
        looked.set()
    threading.Thread(target=other_request).start()
    with torch_threads(1):
        seen["inside"] = torch.get_num_threads()
        look.set()
        looked.wait()
    assert seen == {"inside": 1, "other": before} and torch.get_num_threads() == before


def test_masking_counts_read_80_10_10_from_a_batch():
    y = torch.tensor([[5, -100, 7, 8, -100, 9, 6, 6, 6, 6, 6, 6]])
    x = torch.tensor([[4, 10, 4, 8, 11, 12, 4, 4, 4, 4, 4, 4]])  # 4 is [MASK]; 8 kept; 12 a random word
    counts = training.masking_counts(x, y, guesses=y.clamp(min=0), mask_id=4)
    assert counts["chosen"] == 10 and counts["[MASK]"] == 0.8 and counts["kept"] == 0.1 and counts["random"] == 0.1
    assert counts["right"] == 1.0


def test_the_samples_shown_are_step_0_and_the_latest_each_once():
    """The second snapshot used to show step 0's sample twice (the first and the latest six overlapped)."""
    assert training.kept_samples([], "s0") == ["s0"]
    assert training.kept_samples(["s0"], "s1") == ["s0", "s1"]
    shown = []
    for step in range(12):
        shown = training.kept_samples(shown, f"s{step}")
    assert shown == ["s0", "s5", "s6", "s7", "s8", "s9", "s10", "s11"]


def test_a_run_lists_each_sampled_step_once(monkeypatch):
    """Mid-run the samples table listed 'step 0' four times: each snapshot re-kept step 0 (#31 item 11). Here every
    step is a snapshot, and each answer's table names step 0 first and every other step at most once."""
    monkeypatch.setattr(training, "SNAPSHOT_SECONDS", 0.0)
    monkeypatch.setattr(training, "SNAPSHOT_SHARE", 1e9)
    tables = [text for _, _, text, *_ in training.train_live("tiny-gpt-char", 16, 1, 12, 5e-3, 4, Job())
              if isinstance(text, str)]
    assert len(tables) == 13  # step 0, each of the 12 steps
    for text in tables:
        steps = [int(s) for s in re.findall(r">step (\d+)<", text)]
        assert steps[0] == 0 and steps == sorted(set(steps)) and len(steps) <= 8
    assert steps[-1] == 12 and steps[1:] == list(range(13 - len(steps[1:]), 13))  # the latest, in order


def test_before_a_run_the_panels_say_what_the_run_will_draw(demo):
    """No blank boxes before a run (#31 item 11): Training's plots and samples, the KV cache's timings and the LM
    head's branch tree each say what will appear there; clearing the branches says it again."""
    waiting = [json.loads(b.value["plot"])["layout"] for b in demo.blocks.values()
               if isinstance(b, gr.Plot) and b.value and not json.loads(b.value["plot"])["data"]]
    said = [layout["annotations"][0]["text"] for layout in waiting]
    assert sum("Train from scratch</b>" in t or "redrawn as the model learns" in t for t in said) == 3  # the Training tab's
    assert any("Generate both ways" in t for t in said) and said.count(lm_head.NO_BRANCH) == 1
    assert all(layout["xaxis"]["visible"] is False and layout["yaxis"]["visible"] is False for layout in waiting)
    assert any(isinstance(b, gr.HTML) and b.value == training.BEFORE_A_RUN for b in demo.blocks.values())
    tree = lm_head.clear_branches()[0]
    assert not tree.data and tree.layout.annotations[0].text == lm_head.NO_BRANCH
