"""The Preference tuning tab's cost, measured against its own loop: `python benchmarks/preference.py [--rounds N]`.

The tab's handler (explainers.tabs.preference.run: DPO on the shipped pairs with the tab's defaults, its curves
redrawn every second and every figure serialised as Gradio sends it, then the numbers and the samples) against
the same run in a plain script (core.learning.preference.dpo iterated to its end: the same steps, held-out
measurements, samples before and after and the final pass over the training pairs), same seed and threads,
taken in pairs; the median of the pairs' ratios. Target: the tab costs at most 10% more. Then the default run's
numbers. Ratios are measured in the same run; absolute seconds depend on the machine and what else it does.
"""
import argparse
import statistics
import time

import torch
from common import smollm2_pair, through_the_tab  # noqa: F401  (sets the environment and sys.path)

from core.device import torch_threads
from core.learning import preference as pf
from core.learning.preference_pairs import load_pairs
from core.weights import zoo
from explainers.page.jobs import Job
from explainers.tabs import preference as tab

D = pf.DpoSettings()


def plain_loop() -> tuple[float, pf.DpoRun]:
    """Seconds for the default run as a script runs it, and the run."""
    data, base = load_pairs(), zoo.load(tab.MODEL)
    start = time.perf_counter()
    with torch_threads(tab.TRAIN_THREADS):
        *_, r = pf.dpo(base, data["train"], data["heldout"], data["sample_prompts"], D)
    return time.perf_counter() - start, r


def app_loop() -> float:
    """Seconds for the default run through the tab's handler, every figure it yields turned into JSON."""
    return through_the_tab(tab.run(D.beta, D.lr, D.steps, D.batch, Job()))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)  # as app.py on 2 cores
    print(f"default run: {D.steps} steps of {D.batch} pairs, beta {D.beta}, lr {D.lr}; training threads "
          f"{tab.TRAIN_THREADS}")
    plain, app = [], []
    for _ in range(args.rounds):  # in pairs, so that a pair meets the same load on a shared machine
        seconds, r = plain_loop()
        plain.append(seconds)
        app.append(app_loop())
        print(f"  plain {plain[-1]:.1f} s, tab {app[-1]:.1f} s, ratio {app[-1] / plain[-1]:.3f}", flush=True)
    ratio = statistics.median(a / p for a, p in zip(app, plain))
    print(f"plain {statistics.median(plain):.1f} s  |  tab {statistics.median(app):.1f} s  |  tab / plain, median of "
          f"pairs {ratio:.3f}  (target <= 1.10)")
    start, end = r.heldout_log[0][1], r.heldout_log[-1][1]
    count = lambda side: pf.word_counts([line for lines in side.values() for line in lines])
    print(f"held-out pairs, start -> end: accuracy {start.accuracy:.1%} -> {end.accuracy:.1%}, margin "
          f"{start.margin:+.3f} -> {end.margin:+.3f}, log pi(chosen) {start.pi_chosen:.2f} -> {end.pi_chosen:.2f}, "
          f"log pi(rejected) {start.pi_rejected:.2f} -> {end.pi_rejected:.2f}, KL {end.kl:.4f} nats per token")
    print(f"all training pairs at the end: accuracy {r.train_final.accuracy:.1%}, margin {r.train_final.margin:+.3f}; "
          f"training {r.seconds:.1f} s")
    print(f"samples with a gentle / grim word: before {count(r.before)}, after {count(r.after)}")


if __name__ == "__main__":
    main()
