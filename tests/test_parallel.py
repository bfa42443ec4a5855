"""Data parallelism: two ranks on halves of each batch end where one process on the whole batch ends; the all-reduce
moves the gradient's bytes; Cancel and a dying rank end the run at once with no process left; ZeRO's memory per GPU
is the paper's."""
import copy
import json
import multiprocessing
import os
import signal
import time
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import psutil
import pytest
import torch

from core.device import torch_threads
from core.inputs import InputError
from core.learning import parallel as dp
from core.learning.training import RECIPES, make_batch, prepare, training_loss
from explainers.page.jobs import Job
from explainers.tabs import parallel as tab

DEFAULT_LOSS_BELOW = 3.2  # nats per character after the default run's 100 steps (ln V, guessing, is 4.2)


def tiny(steps: int = 3, batch: int = 4):
    base = RECIPES["tiny-gpt-char"]
    return replace(base, steps=steps, batch=batch, lr=5e-3, warmup=1,
                   config=replace(base.config, d_model=16, n_layers=1, d_ff=64, n_ctx=32))


def valid(fig: go.Figure) -> bool:
    return json.loads(go.Figure(fig.to_dict()).to_json()) == json.loads(fig.to_json())


def no_workers_left(report: dp.Report) -> bool:
    alive = [pid for pid in report.pids.values() if psutil.pid_exists(pid) and
             psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    return not multiprocessing.active_children() and not alive


# ZeRO's memory per GPU

def test_memory_per_gpu_is_the_paper_s_example():
    """Rajbhandari et al. 2020, figure 1: 7.5B parameters on 64 GPUs, mixed-precision Adam (K = 12)."""
    memory = dp.zero_memory(7.5e9, 64, dp.PRECISIONS["mixed"])
    totals = {stage: sum(parts) for stage, parts in memory.items()}
    assert totals == pytest.approx({"DP": 120e9, "ZeRO-1": 31.40625e9, "ZeRO-2": 16.640625e9, "ZeRO-3": 1.875e9})
    assert memory["ZeRO-2"] == pytest.approx((15e9, 2 * 7.5e9 / 64, 12 * 7.5e9 / 64))
    table, fig = tab.memory(7.5, 64, "mixed", 80)
    rows = {line.split("**")[1]: line for line in table.splitlines() if line.startswith("| **")}
    for stage, shown, fits in [("DP", "120.0 GB", "no"), ("ZeRO-1", "31.4 GB", "yes"), ("ZeRO-2", "16.6 GB", "yes"),
                               ("ZeRO-3", "1.9 GB", "yes")]:
        assert f"**{shown}** | {fits} |" in rows[stage], rows[stage]
    assert "Activations are left out" in table and valid(fig)
    assert [t.name for t in fig.data[:3]] == ["parameters", "gradients", "optimizer state"]
    assert fig.layout.shapes[0].y0 == 80  # the GPU's memory, within reach of the bars


def test_memory_per_gpu_in_fp32_and_for_smollm2():
    fp32 = dp.zero_memory(7.5e9, 64, dp.PRECISIONS["fp32"])  # 4 + 4 + 8: no master copy
    assert sum(fp32["DP"]) == pytest.approx(120e9) and sum(fp32["ZeRO-1"]) == pytest.approx(60e9 + 8 * 7.5e9 / 64)
    smol = 134_515_008  # SmolLM2-135M's parameters, tied embeddings counted once
    one, eight = (dp.zero_memory(smol, n, dp.PRECISIONS["mixed"]) for n in (1, 8))
    assert all(sum(parts) == pytest.approx(16 * smol) for parts in one.values())  # one GPU: nothing to shard
    assert sum(eight["ZeRO-3"]) == pytest.approx(2 * smol)
    table, fig = tab.memory(0.1345, 1, "mixed", 80)
    assert table.count("**2.2 GB** | yes |") == 4 and not fig.layout.shapes  # far below one GPU: no line


@pytest.mark.parametrize("args, message", [((0, 64, "mixed", 80), "parameters (billions) must be from"),
                                           ((7.5, 0, "mixed", 80), "number of GPUs must be from"),
                                           ((7.5, 2.5, "mixed", 80), "whole number"),
                                           ((7.5, 64, "fp8", 80), "Choose a precision"),
                                           (("many", 64, "mixed", 80), "parameters (billions) must be"),
                                           ((7.5, 64, "mixed", -1), "GPU memory (GB) must be from")])
def test_bad_memory_settings_get_a_plain_message(args, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tab.memory(*args)


def test_a_ring_all_reduce_sends_twice_the_share_of_the_others():
    assert dp.ring_bytes(1000, 2) == 1000 and dp.ring_bytes(1000, 4) == 1500 and dp.ring_bytes(1000, 1) == 0


# The principle, in one process

@pytest.fixture
def one_thread():
    """One torch thread for the test, as each rank has, and the suite's own count back afterwards (the later tests
    ran on one thread when this was left behind)."""
    with torch_threads(1):
        yield


def test_the_halves_gradients_averaged_are_the_joint_batch_s(one_thread):
    """Two copies of one model, the same optimiser: one steps on the joint batch, the other on the mean of the two
    halves' gradients. In double precision they agree to rounding; in single precision the gradients do."""
    recipe = tiny(steps=5, batch=8)
    for dtype, gradients, weights in [(torch.float64, 1e-12, 1e-10), (torch.float32, 1e-6, 1e-3)]:
        run = prepare(recipe)
        one = run.model.to(dtype).train()
        two = copy.deepcopy(one)
        opts, g = [dp.optimiser(m, recipe) for m in (one, two)], torch.Generator().manual_seed(0)
        for step in range(recipe.steps):
            x, y = make_batch(recipe, one.tokenizer, run.data, recipe.batch, 32, g)
            for opt in opts:
                opt.zero_grad()
            training_loss(one, x, y).backward()
            for rank in range(2):
                training_loss(two, *dp.share((x, y), rank, 2)).backward()  # the sum of the halves' gradients
            for p in two.parameters():
                p.grad /= 2
            diff = max((p.grad - q.grad).abs().max().item() for p, q in zip(one.parameters(), two.parameters()))
            assert diff < gradients, (dtype, step, diff)
            dp.update(one, opts[0], recipe, step)
            dp.update(two, opts[1], recipe, step)
        diff = max((p - q).abs().max().item() for p, q in zip(one.parameters(), two.parameters()))
        assert diff < weights, (dtype, diff)


# Two processes

def test_two_ranks_end_where_one_process_on_the_joint_batch_ends():
    recipe = tiny(steps=3, batch=4)
    reports = list(dp.train_parallel(recipe, 2))
    report = reports[-1]
    assert len(reports) == 1 + 3 and len(report.steps) == 3 and sorted(report.pids) == [0, 1]
    model = prepare(recipe).model
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.payload == sum(p.numel() * p.element_size() for p in model.parameters())  # the gradients' bytes
    assert np.array_equal(report.weights[0], report.weights[1])  # one all-reduced gradient: one set of weights
    start, single = dp.replay(recipe, 3)
    assert np.abs(report.weights[0] - single).max() < 1e-4  # float error (AdamW's first steps amplify it)
    assert np.abs(single - start).max() > 1e-3  # and the run did move the weights
    _, on_a_half = dp.replay(replace(recipe, batch=2), 3)  # one process on a half's worth of windows instead
    assert np.abs(report.weights[0] - on_a_half).max() > 1e-3
    g = torch.Generator().manual_seed(0)  # the first joint batch, as every rank draws it: rank r took rows 2r, 2r+1
    x, _ = make_batch(recipe, model.tokenizer, prepare(recipe).data, 4, 32, g)
    first = [model.tokenizer.decode(row[:dp.WINDOW_CHARS].tolist()) for row in x]
    assert report.steps[0][0].windows == first[:2] and report.steps[0][1].windows == first[2:]
    losses = [training_loss(model, *dp.share((x, _), r, 2)).item() for r in range(2)]
    assert [s.loss for s in report.steps[0]] == pytest.approx(losses, abs=1e-5)
    assert all(s.compute > 0 and s.comm > 0 and s.update > 0 for step in report.steps for s in step)
    assert no_workers_left(report)


def test_cancel_stops_every_rank_within_one_step_and_leaves_no_process():
    seen = []
    stop_when = lambda: len(seen) >= 3
    started = time.monotonic()
    for report in dp.train_parallel(tiny(steps=500), 2, should_stop=stop_when):
        if report.steps:
            seen.append(report.steps[-1][0].step)
    assert report.stop_at is not None and 3 <= len(report.steps) < 500
    # each step began after its rank asked whether to stop, and every ask came before the stop: no step was begun
    # once the stop was passed on, so each rank ran at most the step it was in
    assert all(s.checked < report.stop_at for step in report.steps for s in step)
    assert time.monotonic() - report.stop_at < dp.EXIT_SECONDS and sorted(report.weights) == [0, 1]
    assert no_workers_left(report), time.monotonic() - started


@pytest.mark.slow  # a third run of two processes
def test_a_rank_that_dies_ends_the_run_with_a_plain_message_and_no_process_left():
    report, started = None, None
    with pytest.raises(dp.WorkerError, match=r"Rank 1's process was killed \(SIGKILL\) after step [23]") as e:
        for report in dp.train_parallel(tiny(steps=500), 2):
            if len(report.steps) == 2:
                os.kill(report.pids[1], signal.SIGKILL)
                started = time.monotonic()
    assert time.monotonic() - started < 10 and "press the button to train again" in str(e.value).lower()
    assert no_workers_left(report)


def test_a_rank_that_fails_names_itself_and_the_error():
    with pytest.raises(dp.WorkerError, match=r"Rank [01] failed before the first step: ValueError: Invalid learning"):
        list(dp.train_parallel(replace(tiny(), lr=-1.0), 2))
    assert not multiprocessing.active_children()


# The tab

def test_bad_run_settings_get_a_plain_message_and_nothing_starts():
    for args, message in [((40, 5, 64, 2, 5e-3), "split evenly over the 2 ranks"),
                          ((4000, 32, 64, 2, 5e-3), "number of steps must be from 10 to 500"),
                          ((40, 32, 17, 2, 5e-3), "width must be a multiple of 16"),
                          ((40, 32, 64, 2, 5.0), "learning rate must be from"),
                          ((40, None, 64, 2, 5e-3), "batch must be a whole number")]:
        with pytest.raises(InputError, match=message):
            next(tab.train_live(*args, Job()))
    cancelled = Job()
    cancelled.stop.set()
    assert [a[0] for a in tab.train_live(40, 32, 64, 2, 5e-3, cancelled)] == ["Cancelled before the run started."]
    assert not multiprocessing.active_children()


@pytest.mark.slow  # the default run
def test_the_default_run_learns_and_ends_where_one_process_ends():
    d = tab.DEFAULTS
    job = Job(150)
    answers = list(tab.train_live(d["steps"], d["batch"], d["width"], d["layers"], d["learning rate"], job))
    status, fig, batch = answers[-1]
    assert f"**Finished** {d['steps']} steps" in status and "**The check**" in status, status
    loss = float(status.split("loss (mean of the ranks) **")[1].split("**")[0])
    diff = float(status.split("max |w_ranks − w_one process| = **")[1].split("**")[0])
    assert loss < DEFAULT_LOSS_BELOW and diff < 1e-3, (loss, diff)
    assert "each rank sends 2(N − 1)/N × that" in status and "rank 1: windows 16 to 31" in batch
    assert valid(fig) and len(fig.data[0].x) == d["steps"]
    assert [t.name for t in fig.data] == ["rank 0: its half", "rank 1: its half", "mean: the joint batch",
                                          "forward + backward", "all-reduce", "clip + AdamW"]
    assert not multiprocessing.active_children()
