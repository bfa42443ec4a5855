"""Where the model runs, and timing that is honest about asynchronous GPUs."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

from core.inputs import InputError


def available_devices() -> list[str]:
    """The kinds of device torch can use here: always the CPU, then CUDA and Apple's MPS where present."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + ["cuda"] * torch.cuda.is_available() + ["mps"] * bool(mps is not None and mps.is_available())


def pick_device(name: str | None = None) -> torch.device:
    """The named device, else $EXPLAINER_DEVICE, else CUDA, then Apple MPS, then CPU."""
    name = name or os.environ.get("EXPLAINER_DEVICE") or None
    found = available_devices()
    if name is None:
        return torch.device("cuda" if "cuda" in found else found[-1])
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {name!r}; use cpu, cuda or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {name!r}; use cpu, cuda or mps")
    if device.type not in found:
        raise InputError(f"{device.type.upper()} was asked for but this machine has none; it has: {', '.join(found)}")
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
        try:
            return f"CUDA: {torch.cuda.get_device_name(device)}"
        except (RuntimeError, AssertionError):  # a ZeroGPU Space's main process: its GPU comes with each request
            return "CUDA (ZeroGPU)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    n = torch.get_num_threads()
    return f"CPU, {n} thread{'s' if n > 1 else ''}"


@contextmanager
def torch_threads(n: int | None):
    """Run the block with n torch threads (None: unchanged). Threads already running keep their own count, so
    this caps one piece of work (a training step) without slowing the requests other threads serve meanwhile;
    a thread that starts during the block starts with n (torch hands new threads the latest count)."""
    was = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(was)
