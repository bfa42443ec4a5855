"""The Instruction tuning tab's SFT run, measured against its own loop: `python benchmarks/instruct.py [--rounds N]`.

The tab's handler (explainers.tabs.instruct.sft_live: the loop plus the held-out loss before and along the way,
the held-out instructions answered before and after, the mask and the answers as HTML and every figure serialised,
as Gradio sends them) against the same loop in a plain script (core.learning.instruct.prepare_sft + sft_steps,
the held-out loss measured before and at the end), the default run each (tiny-gpt-char), same seed and threads,
taken in pairs; the median of the pairs' ratios. Target: the tab costs at most 10% more.
Ratios are measured in the same run; absolute seconds depend on the machine and what else it is doing.
"""
import argparse
import statistics
import time

import torch
from common import smollm2_pair, through_the_tab  # noqa: F401  (sets the environment and sys.path)

from core.device import torch_threads
from core.learning.instruct import prepare_sft, response_loss, sft_steps
from core.learning.instruction_data import load_pairs
from core.weights import zoo
from explainers.page.jobs import Job
from explainers.tabs import instruct

MODEL = "tiny-gpt-char"
D = instruct.DEFAULTS[MODEL]


def plain_loop() -> tuple[float, float, float]:
    """Seconds for the default run as a script runs it, and the held-out response loss before and after."""
    start = time.perf_counter()
    base = zoo.load(MODEL)
    with torch_threads(instruct.TRAIN_THREADS):
        run = prepare_sft(base, load_pairs(), D)
        before = response_loss(base, run.heldout)
        *_, last = sft_steps(run)
    return time.perf_counter() - start, before, last.heldout


def app_loop() -> tuple[float, str]:
    """Seconds for the default run through the tab's handler, every figure it yields turned into JSON, and the
    tab's last status line."""
    seconds, answer = through_the_tab(instruct.sft_live(MODEL, D.steps, D.lr, D.batch, Job()))
    return seconds, answer[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)  # as app.py on 2 cores
    print(f"default run: {MODEL}, {D.steps} steps of {D.batch} pairs, peak learning rate {D.lr:g}; training threads "
          f"{instruct.TRAIN_THREADS}")
    zoo.load(MODEL)
    plain, app = [], []
    for _ in range(args.rounds):  # in pairs, so that a pair meets the same load on a shared machine
        seconds, before, after = plain_loop()
        plain.append(seconds)
        seconds, status = app_loop()
        app.append(seconds)
        print(f"  plain {plain[-1]:.1f} s (held-out response loss {before:.2f} -> {after:.2f}), tab {app[-1]:.1f} s, "
              f"ratio {app[-1] / plain[-1]:.3f}", flush=True)
    ratio = statistics.median(x / y for x, y in zip(app, plain))
    print(f"plain loop {statistics.median(plain):.1f} s  |  tab {statistics.median(app):.1f} s  |  tab / plain, "
          f"median of pairs {ratio:.3f}  (target <= 1.10)")
    print("tab's last status:", status.splitlines()[-1])


if __name__ == "__main__":
    main()
