"""The Training tab's cost, measured against its own loop: `python benchmarks/training.py [--rounds N]`.

1. Overhead: the tab's handler (explainers.tabs.training.train_live: the loop plus the held-out checks, samples,
   attention patterns, embedding maps and every figure serialised, as Gradio sends them) against the same loop
   in a plain script (core.learning.training.prepare + train_steps, as `python -m core.learning.training` runs
   it), the default run each, same seed and threads, taken in pairs; the median of the pairs' ratios.
   Target: the tab costs at most 10% more.
2. Sharing: the attention tab's handler on SmolLM2 (a new text, so the model runs) on a server thread, timed
   with nothing else running and while a default training run goes on in another thread. Reports both medians
   and their ratio, and the training run's own speed beside it.
Ratios are measured in the same run; absolute seconds depend on the machine and what else it is doing.
"""
import argparse
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from common import smollm2_pair, through_the_tab  # noqa: F401  (sets the environment and sys.path)

from core.learning.training import prepare, train_steps
from explainers.activations import forget_runs
from explainers.page.jobs import Job
from explainers.page.serving import forget_answers
from explainers.tabs import attention, training

PROMPT = ("The bank is near the river bank, and every morning the old fisherman walks there "
          "to watch the boats come in before the sun rises over the quiet grey harbour.")
D = training.DEFAULTS


def default_recipe():
    return training.app_recipe("tiny-gpt-char", D["width"], D["layers"], D["steps"], D["learning rate"], D["batch"])


def plain_loop() -> float:
    """Seconds for the default run as a script runs it: prepare, then every step of the loop."""
    start = time.perf_counter()
    for _ in train_steps(prepare(default_recipe()), threads=training.TRAIN_THREADS):
        pass
    return time.perf_counter() - start


def app_loop(job: Job | None = None) -> tuple[float, str]:
    """Seconds for the default run through the tab's handler, every figure it yields turned into JSON, and the
    tab's last status line."""
    run = training.train_live("tiny-gpt-char", D["width"], D["layers"], D["steps"], D["learning rate"], D["batch"],
                              job or Job())
    seconds, answer = through_the_tab(run)
    return seconds, answer[0]


def tokens_per_second(status: str) -> str:
    return re.search(r"\*\*([\d,]+) tokens/s", status).group(1)


def attention_latency(server: ThreadPoolExecutor, n: int = 7) -> list[float]:
    """Seconds per attention-tab update on a server thread, n times (a new text each time: the model runs)."""
    def once() -> float:
        forget_runs()
        forget_answers()
        start = time.perf_counter()
        attention.update_all("smollm2-135m", PROMPT, 3, 2, [])
        return time.perf_counter() - start
    return [server.submit(once).result() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)  # as app.py on 2 cores
    print(f"default run: {D['steps']} steps of {D['batch']} x {training.CONTEXT} tokens, width {D['width']}, "
          f"{D['layers']} layers; training threads {training.TRAIN_THREADS}")
    plain, app = [], []
    for _ in range(args.rounds):  # in pairs, so that a pair meets the same load on a shared machine
        plain.append(plain_loop())
        seconds, status = app_loop()
        app.append(seconds)
        print(f"  plain {plain[-1]:.1f} s, tab {app[-1]:.1f} s, ratio {app[-1] / plain[-1]:.3f}", flush=True)
    p, a = statistics.median(plain), statistics.median(app)
    ratio = statistics.median(x / y for x, y in zip(app, plain))
    print(f"plain loop {p:.1f} s ({D['steps'] / p:.1f} steps/s)  |  tab {a:.1f} s ({D['steps'] / a:.1f} steps/s, "
          f"{tokens_per_second(status)} tokens/s shown)  |  tab / plain, median of pairs {ratio:.3f}  (target <= 1.10)")

    server = ThreadPoolExecutor(1)  # a request thread that exists before training starts, as Gradio's do
    attention_latency(server, n=2)  # load SmolLM2, warm up
    idle = attention_latency(server)
    job, shared = Job(), {}
    trainer = threading.Thread(target=lambda: shared.update(status=app_loop(job)[1]))
    trainer.start()
    time.sleep(5)  # past preparation, into the steps
    busy = attention_latency(server)
    job.stop.set()
    trainer.join()
    i, b = statistics.median(idle), statistics.median(busy)
    print(f"attention tab (SmolLM2, new text): idle {i:.2f} s  |  during training {b:.2f} s  |  ratio {b / i:.2f} "
          f"(median of {len(busy)}); training meanwhile {tokens_per_second(shared['status'])} tokens/s")


if __name__ == "__main__":
    main()
