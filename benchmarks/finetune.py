"""The README's fine-tuning tables: `python benchmarks/finetune.py [tiny-gpt-char|smollm2-135m] [--threads N]`.

Runs the Fine-tuning tab's own handler with its defaults for that model (the Constitution, the tab's prompt),
printing its progress lines, then the cost table, the tutorials' metrics table, the samples and the merge check.
"""
import argparse
import time

import torch
from common import smollm2_pair  # noqa: F401  (sets the environment and sys.path)

from core.learning import finetune as ft
from explainers.page.jobs import Job
from explainers.tabs import finetune as tab

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("model", nargs="?", default="tiny-gpt-char", choices=tab.MODELS)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
steps, batch, window = tab.DEFAULTS.get(args.model, tab.DEFAULTS["small"])
corpus = next(iter(ft.CORPORA))
lora = ft.LoraSettings()
start = time.perf_counter()
for out in tab.run(args.model, corpus, "", ft.CORPORA[corpus][1], steps, batch, window, ft.RunSettings.lr_full,
                   ft.RunSettings.lr_lora, lora.rank, lora.alpha, lora.dropout, list(lora.targets), Job()):
    print(f"{time.perf_counter() - start:6.1f} s  {out[0][:90]}", flush=True)
status, curves, cost, metrics, probs, samples, delta, merged = out
print("\n\n".join([cost, metrics, samples, merged]))
