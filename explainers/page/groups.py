"""The queue groups a shared server runs its work in, each declared once: how many of its events run at once,
how long one may run, and what a ZeroGPU call books. Imports nothing heavy: app.py reads THREADS before torch.

Model events (a tab drawing) run as many at a time as there are cores (at most 4), each with its share of the
cores as torch threads, so threads x events never exceed the cores: two forwards of two threads each on two
cores thrash (OpenMP teams waiting on each other's cores), and a class sends many at once. Long jobs run one
at a time in groups of their own, so they never hold up the tabs."""
from __future__ import annotations

import os
from dataclasses import dataclass


def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Group:
    limit: int                   # events of the group running at once, over all sessions
    cap: float | None = None     # seconds one job may run (None: a model event, quick by design)
    gpu_seconds: int = 30        # what a call books on a ZeroGPU Space


GROUPS = {
    "model": Group(min(cores(), 4)),
    "generate": Group(1, cap=120, gpu_seconds=120),   # the KV-cache tab's two generations
    "sweep": Group(1, cap=120, gpu_seconds=150),      # activation patching
    "train": Group(1, cap=150, gpu_seconds=180),      # training and fine-tuning
    "quantize": Group(1, cap=120, gpu_seconds=150),   # quantize, run both models, time generation
}
THREADS = max(1, cores() // GROUPS["model"].limit)    # torch threads per model event
