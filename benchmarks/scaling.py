"""The Scaling laws tab's cost, measured against its own loop: `python benchmarks/scaling.py [--rounds N]`.

The default ladder (five widths, 300 steps each, the held-out loss measured 14 times per size) through the tab's
handler (explainers.tabs.scaling.train_ladder: the same loop plus the status, the table, the power-law fit, the
frontier and every figure serialised, as Gradio sends them) against the same trainings as a plain script
(core.learning.scaling.train_ladder iterated, nothing drawn), same seed and threads, taken in pairs so that a pair
meets the same load on a shared machine; prints the median of the pairs' ratios. Target: the tab costs at most 10%
more. The whole ladder takes about a minute on 2 cores, so a pair takes two: --rounds 2 is a quick check.
"""
import argparse
import statistics
import time

import torch
from common import smollm2_pair, through_the_tab  # noqa: F401  (sets the environment and sys.path)

from core.learning import scaling as sc
from explainers.page.jobs import Job
from explainers.tabs import scaling
from explainers.tabs.training import TRAIN_THREADS


def plain_loop() -> tuple[float, list[sc.Curve]]:
    """Seconds for the default ladder as a script runs it, and its curves."""
    start = time.perf_counter()
    curves = [curves for curves, _ in sc.train_ladder(sc.LADDER, sc.STEPS, sc.LR, threads=TRAIN_THREADS)][-1]
    return time.perf_counter() - start, curves


def app_loop() -> tuple[float, Job]:
    """Seconds for the default ladder through the tab's handler, every figure it yields turned into JSON."""
    job = Job(cap=float("inf"))  # measured whole: the server's cap would cut a slow machine's run short
    job.started = time.monotonic()
    run = scaling.train_ladder([str(w) for w in sc.LADDER], sc.STEPS, sc.LR, scaling.DEFAULT_BUDGET, job)
    return through_the_tab(run)[0], job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)  # as app.py on 2 cores
    print(f"default ladder: widths {', '.join(map(str, sc.LADDER))}, {sc.LAYERS} layers, {sc.STEPS} steps of "
          f"{sc.BATCH} x {sc.CONTEXT} tokens per size; training threads {TRAIN_THREADS}")
    plain, app = [], []
    for _ in range(args.rounds):
        seconds, curves = plain_loop()
        plain.append(seconds)
        seconds, job = app_loop()
        app.append(seconds)
        print(f"  plain {plain[-1]:.1f} s, tab {app[-1]:.1f} s, ratio {app[-1] / plain[-1]:.3f}", flush=True)
    law = sc.fit_power_law([c.params for c in curves], [c.losses[-1] for c in curves])
    for c in curves:
        print(f"  width {c.width:3d}: N = {c.params:7,} non-embedding ({c.total:7,} in all), final held-out loss "
              f"{c.losses[-1]:.3f}, {c.seconds:.1f} s")
    print(f"  fit L(N) = {law.E:.3f} + {law.A:.3g} N^-{law.alpha:.4f}, RMS of ln L residuals {law.rms:.4f}")
    ratio = statistics.median(a / p for a, p in zip(app, plain))
    print(f"plain ladder {statistics.median(plain):.1f} s  |  tab {statistics.median(app):.1f} s  |  tab / plain, "
          f"median of pairs {ratio:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
