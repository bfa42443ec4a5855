"""The data-parallelism tab's cost, measured against its own loop: `python benchmarks/parallel.py [--rounds N]`.

The tab's handler (explainers.tabs.parallel.train_live: two worker processes, each rank's batch, loss and timings
streamed and drawn, every figure serialised as Gradio sends it, then the one-process check) against the same work as
a plain script (core.learning.parallel.train_parallel consumed without drawing, then replay), the default run each,
in pairs, so that a pair meets the same load; the median of the pairs' ratios. Target: the tab costs at most 10%
more. Ratios are measured in the same run; absolute seconds depend on the machine and what else it is doing.
"""
import argparse
import statistics
import time

import torch
from common import smollm2_pair, through_the_tab  # noqa: F401  (sets the environment and sys.path)

from core.learning import parallel as dp
from explainers.page.jobs import Job
from explainers.tabs import parallel, training

D = parallel.DEFAULTS


def default_recipe():
    return parallel.settings(D["steps"], D["batch"], D["width"], D["layers"], D["learning rate"])


def plain_loop() -> tuple[float, dp.Report]:
    """Seconds for the default run as a script runs it: the two ranks' loop, then one process's replay."""
    start = time.perf_counter()
    recipe = default_recipe()
    *_, report = dp.train_parallel(recipe, parallel.WORLD)
    dp.replay(recipe, len(report.steps))
    return time.perf_counter() - start, report


def app_loop() -> tuple[float, str]:
    """Seconds for the default run through the tab's handler, every figure it yields turned into JSON, and the
    tab's last status line."""
    run = parallel.train_live(D["steps"], D["batch"], D["width"], D["layers"], D["learning rate"], Job())
    seconds, answer = through_the_tab(run)
    return seconds, answer[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(training.TRAIN_THREADS)  # the replay's threads, as the tab's
    print(f"default run: {D['steps']} steps of {D['batch']} windows ({D['batch'] // parallel.WORLD} per rank) x "
          f"{training.CONTEXT} tokens, width {D['width']}, {D['layers']} layers, {parallel.WORLD} ranks of 1 thread")
    plain, app = [], []
    for _ in range(args.rounds):
        seconds, report = plain_loop()
        plain.append(seconds)
        seconds, status = app_loop()
        app.append(seconds)
        split = {part: statistics.median(1000 * getattr(s[0], part) for s in report.steps)
                 for part in ("compute", "comm", "update")}
        print(f"  plain {plain[-1]:.1f} s, tab {app[-1]:.1f} s, ratio {app[-1] / plain[-1]:.3f}  (rank 0's median "
              f"step: compute {split['compute']:.1f} ms, all-reduce {split['comm']:.1f} ms, update "
              f"{split['update']:.1f} ms; {report.payload:,} bytes per all-reduce)", flush=True)
    ratio = statistics.median(a / p for a, p in zip(app, plain))
    print(f"plain {statistics.median(plain):.1f} s  |  tab {statistics.median(app):.1f} s  |  tab / plain, median of "
          f"pairs {ratio:.3f}  (target <= 1.10)")
    print("tab's last status:", status.split("**The check**")[-1].split(". The difference")[0])


if __name__ == "__main__":
    main()
