"""The Scaling laws tab: the ladder's sizes, the power-law fit, the best size at a compute budget, Chinchilla's
calculator against numbers worked by hand, Cancel within one step, plain messages for bad settings; the default
ladder's losses fall with size (slow)."""
import json
import math
import re
import threading
import time
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from core.inputs import InputError
from core.learning import scaling as sc
from core.model.transformer import HookedTransformer
from explainers.page.jobs import Job
from explainers.tabs import scaling


def valid(fig: go.Figure) -> bool:
    return json.loads(go.Figure(fig.to_dict()).to_json()) == json.loads(fig.to_json())


def started() -> Job:
    """A session's job as the queue starts it: the train group's cap, counted from now."""
    job = Job(cap=150)
    job.started = time.monotonic()
    return job


def test_the_default_ladder_has_at_least_5_sizes_spanning_30x_in_non_embedding_parameters():
    counts = [sc.non_embedding_parameters(HookedTransformer(replace(sc.rung_recipe(w).config, vocab_size=66)))
              for w in sc.LADDER]
    assert len(counts) >= 5 and counts == sorted(counts) and counts[-1] / counts[0] >= 30, counts
    # 2 blocks of about 12 C^2 each (attention 4 C^2, FFN 8 C^2) plus biases and norms; no embedding table counted
    assert counts[0] == 2 * (12 * 8 * 8 + 13 * 8) + 2 * 8 and counts[-1] == 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64


def test_the_fit_recovers_a_known_power_law_from_5_points():
    N = np.geomspace(2e3, 3e5, 5)
    law = sc.fit_power_law(N, 1.5 + 20.0 * N ** -0.3)
    assert pytest.approx(1.5, abs=1e-3) == law.E and pytest.approx(20.0, rel=1e-2) == law.A
    assert law.alpha == pytest.approx(0.3, abs=1e-3) and law.rms < 1e-5
    noisy = sc.fit_power_law(N, (1.5 + 20.0 * N ** -0.3) * np.array([1.002, 0.998, 1.001, 0.999, 1.0]))
    assert noisy.alpha == pytest.approx(0.3, abs=0.1) and 0.0005 < noisy.rms < 0.003  # the residual is reported
    with pytest.raises(ValueError, match="do not fall"):
        sc.fit_power_law(N, [2.0, 2.1, 2.2, 2.3, 2.4])


def toy(width: int, params: int, tokens: list[int], losses: list[float]) -> sc.Curve:
    return sc.Curve(width, params, params, 1, tokens, losses, done=True)


def test_the_compute_optimal_size_is_the_lowest_curve_at_the_budget():
    small = toy(8, 1_000, [1e3, 1e4, 1e5], [3.0, 2.5, 2.3])      # C = 6ND from 6e6 to 6e8
    large = toy(16, 10_000, [1e3, 1e4, 1e5], [3.2, 2.2, 2.0])    # C from 6e7 to 6e9
    curves = [small, large]
    assert sc.compute_optimal(curves, 6e7) == (0, pytest.approx(2.5))  # small, trained 10x longer: 2.5 against 3.2
    assert sc.compute_optimal(curves, 6e8) == (1, pytest.approx(2.2))  # large: 2.2 against small's 2.3
    assert sc.compute_optimal(curves, 6e9) == (1, pytest.approx(2.0))  # small's whole run (2.3) cost less
    assert sc.compute_optimal(curves, 1e11) == (1, pytest.approx(2.0))  # both finished below the budget
    assert sc.compute_optimal(curves, 1e6) is None  # below every first measurement
    between = math.sqrt(6e7 * 6e8)  # halfway on a log axis: straight lines in log-log between measurements
    assert sc.loss_at_compute(large, between) == pytest.approx(math.sqrt(3.2 * 2.2))
    C, L, which = sc.frontier(curves, points=50)
    assert which[0] == 0 and which[-1] == 1 and len(C) == 50 and np.all(np.diff(L) <= 0)  # falls as C grows
    lowest = [min(x for x in (sc.loss_at_compute(small, c), sc.loss_at_compute(large, c)) if x is not None) for c in C]
    assert np.allclose(L, lowest)


def test_the_calculator_matches_numbers_worked_by_hand_for_chinchilla():
    N, D = 70e9, 1.4e12
    # by hand: C = 6 x 7e10 x 1.4e12 = 5.88e23
    # A / N^alpha = 406.4 / exp(0.34 ln 7e10) = 406.4 / exp(8.4904) = 406.4 / 4867.8 = 0.08349
    # B / D^beta = 410.7 / exp(0.28 ln 1.4e12) = 410.7 / exp(7.8309) = 410.7 / 2517.2 = 0.16316
    # L = 1.69 + 0.08349 + 0.16316 = 1.93665
    # G = (0.34 x 406.4 / (0.28 x 410.7))^(1/0.62) = 1.20157^1.6129 = 1.3447
    # N_opt = G (C/6)^(0.28/0.62) = 1.3447 x (9.8e22)^0.45161 = 1.3447 x 2.4162e10 = 3.2491e10
    # D_opt = (C/6) / N_opt = 9.8e22 / 3.2491e10 = 3.0162e12
    assert sc.compute(N, D) == pytest.approx(5.88e23)
    assert sc.CHINCHILLA.loss(N, D) == pytest.approx(1.93665, abs=2e-4)
    N_opt, D_opt = sc.CHINCHILLA.optimal(sc.compute(N, D))
    assert N_opt == pytest.approx(3.2491e10, rel=1e-3) and D_opt == pytest.approx(3.0162e12, rel=1e-3)
    text, fig = scaling.calculate("70B", "1.4T")
    assert "5.88 × 10<sup>23</sup>" in text and "L = 1.937" in text and "3.25 × 10<sup>10</sup>" in text
    assert "3.02 × 10<sup>12</sup>" in text and "20 tokens per parameter" in text and valid(fig)
    assert all(m.name in text for m in sc.REAL_MODELS) and "estimate" in text and "arXiv:2203.15556" in text


@pytest.mark.parametrize("params, tokens, words", [
    ("0", "1.4T", "parameter count N must be from 1,000"), ("-70B", "1.4T", "parameter count N must be from"),
    ("70B", "0", "token count D must be from 1,000"), ("banana", "1.4T", "must be a number such as 70e9 or 70B"),
    ("70B", None, "token count D must be a number"), ("nan", "1.4T", "must be a number"),
    ("70B", "1e30", r"must be from 1,000 to 10\^18"), ("1e20", "1.4T", r"must be from 1,000 to 10\^15"),
    ("70Q", "1.4T", "must be a number")])
def test_bad_calculator_input_gets_a_plain_message(params, tokens, words):
    with pytest.raises(InputError, match=words):
        scaling.calculate(params, tokens)


def test_bad_ladder_settings_get_a_plain_message():
    good = (["8", "16", "32"], 20, 5e-3)
    assert scaling.ladder_settings(*good) == ([8, 16, 32], 20, 5e-3)
    for sizes, steps, lr, words in [(["8", "16"], 20, 5e-3, "at least 3 sizes"),
                                    (["8", "16", "7"], 20, 5e-3, "among the widths"), (None, 20, 5e-3, "among"),
                                    (good[0], 0, 5e-3, "steps per size must be from 20 to 2000"),
                                    (good[0], 20.5, 5e-3, "whole number"),
                                    (good[0], 20, "fast", "learning rate must be a number"),
                                    (good[0], 20, 1.0, "learning rate must be from 0.0001 to 0.03")]:
        with pytest.raises(InputError, match=words):
            scaling.ladder_settings(sizes, steps, lr)
    with pytest.raises(InputError, match="compute budget"):
        scaling.budget_flops(float("nan"))
    assert scaling.choose_budget(10, None)[1].startswith("Train the ladder first")


def test_cancel_stops_the_current_size_within_one_step_and_skips_the_rest():
    stop, seen = threading.Event(), []
    for curves, step in sc.train_ladder([8, 16, 32], steps=20, stop=stop):
        seen.append((curves[-1].width, step.step))
        if step.step == 3:
            stop.set()  # as Cancel does, from another thread, while step 3 is reported
    assert seen == [(8, 1), (8, 2), (8, 3)] and not curves[-1].done and curves[-1].tokens == [2048, 4096, 6144]


def test_the_tab_streams_a_short_ladder_fits_it_and_reports_a_cancel():
    job = started()
    *_, last = scaling.train_ladder(["8", "16", "32"], 20, 5e-3, 9.0, job)
    status, table, by_n, by_tokens, by_compute, best = last
    assert "**Finished**" in status and all(valid(f) for f in (by_n, by_tokens, by_compute))
    assert "| 32 | 25,472 |" in table and "finished sizes: **L(N) =" in table and "α = " in by_n.layout.title.text
    assert len(by_tokens.data) == 3 and by_compute.data[-1].marker.symbol == "star" and "best size is" in best
    fig, note = scaling.choose_budget(14, job)  # beyond what the ladder spent: the best finished size
    assert "width 32" in note and "Its whole run cost" in note and valid(fig)
    assert "below every size's first measurement" in scaling.choose_budget(6, job)[1]
    job, at = started(), None
    for status, table, *_ in scaling.train_ladder(["8", "16", "32"], 2000, 5e-3, 9.0, job):  # noqa: B007
        if at is None and (found := re.search(r"step \*\*(\d+)\*\*", status)):
            at = found.group(1)
            job.stop.set()  # Cancel, pressed while that step is shown: no further step runs
    assert f"**Cancelled** at step {at} of width 8" in status and "(stopped)" in table and len(job.result.curves) == 1
    waiting = Job()
    waiting.stop.set()
    assert next(scaling.train_ladder(["8", "16", "32"], 20, 5e-3, 9.0, waiting))[0] == "Cancelled before the run started."


@pytest.mark.slow  # the default ladder, trained for real (about a minute on 2 cores)
def test_the_default_ladder_loss_falls_with_size_and_the_fit_reports_its_exponent_and_residual():
    job = started()
    job.cap = math.inf  # the science, not the server's cap: a loaded test machine may be slower than the server
    *_, (status, table, by_n, *_) = scaling.train_ladder([str(w) for w in sc.LADDER], sc.STEPS, sc.LR,
                                                         scaling.DEFAULT_BUDGET, job)
    curves = job.result.curves
    finals = [c.losses[-1] for c in curves]
    assert "**Finished**" in status and all(c.done for c in curves)
    assert finals == sorted(finals, reverse=True) and finals[0] - finals[-1] > 0.3, finals
    law = sc.fit_power_law([c.params for c in curves], finals)
    assert 0 < law.alpha < 1 and law.rms < 0.02
    assert f"RMS of **{law.rms:.4f}**" in table and f"α = {law.alpha:.3f}" in by_n.layout.title.text
    best = sc.compute_optimal(curves, 10 ** scaling.DEFAULT_BUDGET)
    assert best is not None and 0 < best[0] < len(curves) - 1  # a middle size is best at the default budget


def test_each_size_starts_as_prepare_would_start_it_on_the_same_data():
    """The ladder encodes the corpus once: a later size's model, data and held-out batch equal prepare's own."""
    from core.learning.training import prepare
    fresh = prepare(sc.rung_recipe(16), heldout_windows=sc.HELDOUT_WINDOWS)
    reused = sc.same_data(prepare(sc.rung_recipe(8), heldout_windows=sc.HELDOUT_WINDOWS), sc.rung_recipe(16))
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.parameters(), reused.model.parameters()))
    assert torch.equal(fresh.data, reused.data) and all(torch.equal(a, b) for a, b in zip(fresh.heldout, reused.heldout))
