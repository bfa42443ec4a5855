"""Where the model runs, and timing that is honest about asynchronous GPUs."""
from __future__ import annotations

import os
import time

import torch


def pick_device(name: str | None = None) -> torch.device:
    """The named device, else $EXPLAINER_DEVICE, else CUDA, then Apple MPS, then CPU."""
    name = name or os.environ.get("EXPLAINER_DEVICE") or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no CUDA GPU is available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("MPS was asked for but this machine has no Apple GPU")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or mps")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn, device: torch.device):
    """(result of fn(), seconds it took), synchronised on GPUs."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU, {torch.get_num_threads()} threads"
