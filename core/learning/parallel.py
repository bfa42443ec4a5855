"""Data parallelism: N processes train one model together, and what ZeRO saves of the memory each GPU holds.

One rank's loop (`worker`), on the CPU with torch.distributed's gloo backend:
    every rank starts from rank 0's weights (broadcast)
    before each step the ranks agree whether to stop (a Cancel reaches all of them before the same step)
    x, y = this rank's share of the joint batch (every rank draws the same joint batch, seeded)
    loss on the share, backward                                     compute
    every gradient in one flat vector, all-reduced (summed) and / N  communication
    clip and AdamW, as the Training tab's loop                      the same update on every rank
The mean of N equal shares' mean-loss gradients is the joint batch's mean-loss gradient, so the weights follow one
process training on the joint batch (`replay`), up to float rounding. The all-reduce is written out (one
`dist.all_reduce` on the flattened gradients) where DistributedDataParallel would hide it in buckets overlapped with
the backward pass. Gloo runs it as a ring: a reduce-scatter, then an all-gather, each rank sending (N - 1) / N of the
vector in each, 2 (N - 1) / N of it in all (`ring_bytes`).

The memory of ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models", arXiv:1910.02054) is `zero_memory`.
"""
from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.inputs import InputError
from core.learning.training import Recipe, lr_at, make_batch, prepare, training_loss

WINDOW_CHARS = 24      # the start of each window a rank reports, to show which windows it got
START_SECONDS = 120    # a worker that has not answered by then (importing torch, rendezvous) is taken for lost
STEP_SECONDS = 60      # nor between two steps
EXIT_SECONDS = 5       # a worker told to stop is terminated if it has not exited by then


class WorkerError(RuntimeError):
    """A rank failed or died; the message says which and how, in a sentence."""


@dataclass
class RankStep:
    """What one rank reports after one step."""
    rank: int
    step: int              # steps done, 1..
    loss: float            # mean loss on this rank's share of the batch
    compute: float         # seconds: the batch, forward and backward
    comm: float            # seconds: the all-reduce of the gradients (waiting for the slower rank included)
    update: float          # seconds: clipping and the AdamW step
    checked: float         # time.monotonic() when this rank asked whether to stop, before the step
    windows: list[str]     # the first WINDOW_CHARS characters of each window of its share


@dataclass
class Report:
    """What the parent process knows of a run, as it goes."""
    world: int
    params: int = 0                                         # the model's parameters (= gradient entries)
    payload: int = 0                                        # bytes one all-reduce reduces: the flat gradient
    pids: dict[int, int] = field(default_factory=dict)      # rank -> its process id
    steps: list[list[RankStep]] = field(default_factory=list)  # per step, each rank's report
    weights: dict[int, np.ndarray] = field(default_factory=dict)  # each rank's final weights, one flat vector
    stop_at: float | None = None                            # time.monotonic() when the stop was passed on


def ring_bytes(payload: int, world: int) -> float:
    """Bytes each rank sends in a ring all-reduce of `payload` bytes: (N - 1) / N of it in the reduce-scatter,
    as much again in the all-gather."""
    return 2 * (world - 1) / world * payload


def share(batch: tuple[torch.Tensor, torch.Tensor], rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s rows of the joint batch (B, T): rows rank*B/N to (rank+1)*B/N."""
    b = batch[0].shape[0] // world
    return batch[0][rank * b:(rank + 1) * b], batch[1][rank * b:(rank + 1) * b]


def all_reduce_mean(params: list[torch.nn.Parameter], world: int) -> None:
    """Every rank's gradients replaced by their mean over the ranks: one flat vector, one all-reduce."""
    flat = torch.cat([p.grad.reshape(-1) for p in params])       # (P,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)                  # the sum over the ranks, on every rank
    flat /= world
    for p, mean in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(mean.view_as(p))


def optimiser(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The Training tab's optimiser (core.learning.training.train_steps)."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.1)


def update(model: torch.nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, step: int) -> None:
    """Clip the gradient and take one AdamW step at the schedule's rate."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, recipe)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def worker(rank: int, world: int, port: int, recipe: Recipe, seed: int, stop, out) -> None:
    """One rank of the run, in its own process: reports ("ready", ...), a RankStep per step, then its weights."""
    torch.set_num_threads(1)  # the ranks share the machine's cores with the server
    code = 0
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=STEP_SECONDS))
        run = prepare(recipe, seed=seed)
        model, tok = run.model.train(), run.model.tokenizer
        params = list(model.parameters())
        for p in params:
            dist.broadcast(p.data, src=0)                        # every rank starts from rank 0's weights
        opt, g = optimiser(model, recipe), torch.Generator().manual_seed(seed)
        T = min(model.cfg.n_ctx, len(run.data) - 2)
        out.put(("ready", rank, os.getpid(), sum(p.numel() for p in params),
                 sum(p.numel() * p.element_size() for p in params)))  # bytes of the gradient (its weights' dtype)
        for step in range(recipe.steps):
            checked, flag = time.monotonic(), torch.tensor([float(stop.is_set())])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)          # stop if any rank was asked to
            if flag.item():
                break
            start = time.perf_counter()
            x, y = share(make_batch(recipe, tok, run.data, recipe.batch, T, g), rank, world)
            loss = training_loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            computed = time.perf_counter()
            all_reduce_mean(params, world)
            reduced = time.perf_counter()
            update(model, opt, recipe, step)
            windows = [tok.decode(row[:WINDOW_CHARS].tolist()) for row in x]
            out.put(("step", RankStep(rank, step + 1, loss.item(), computed - start, reduced - computed,
                                      time.perf_counter() - reduced, checked, windows)))
        out.put(("weights", rank, torch.nn.utils.parameters_to_vector(params).detach().numpy().copy()))
    except Exception as e:  # noqa: BLE001 - said to the parent, which names the rank and ends the run
        out.put(("error", rank, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    out.close()
    out.join_thread()  # what this rank sent is in the pipe
    os._exit(code)     # without the interpreter's teardown, which takes seconds with torch loaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_spawning = threading.Lock()


@contextmanager
def no_main_script():
    """Spawned children run the parent's main script again before their target (so that its functions can be
    found); the app's is app.py, which imports Gradio and every tab, seconds per child. The workers' target lives
    here, so while they start the main module is shown without its file, and they import only this module."""
    main = sys.modules["__main__"]
    path = main.__dict__.get("__file__")
    with _spawning:
        if path is not None and getattr(main, "__spec__", None) is None:
            del main.__file__
        try:
            yield
        finally:
            if path is not None:
                main.__file__ = path


def train_parallel(recipe: Recipe, world: int = 2, seed: int = 0,
                   should_stop: Callable[[], bool] = lambda: False) -> Iterator[Report]:
    """Train with `world` worker processes on this machine, yielding the Report when they are ready and each time
    every rank has reported a step; it ends once each has sent its weights. A thread of this process asks
    `should_stop` every 20 ms and passes a stop on at once, even while the caller draws. The workers are gone
    when this ends, however it ends (told to stop, joined, terminated if need be). A rank that fails or dies
    raises WorkerError."""
    if world < 1 or recipe.batch % world:
        raise InputError(f"The batch ({recipe.batch} windows) must split evenly over the {world} ranks.")
    ctx = mp.get_context("spawn")
    out, stop, done = ctx.Queue(), ctx.Event(), threading.Event()
    report, port = Report(world), free_port()
    procs = [ctx.Process(target=worker, args=(rank, world, port, recipe, seed, stop, out), name=f"rank {rank}",
                         daemon=True) for rank in range(world)]
    try:
        with no_main_script():
            for p in procs:
                p.start()
        threading.Thread(target=pass_stop, args=(should_stop, stop, done, report), daemon=True).start()
        pending: dict[int, list] = {}
        heard = time.monotonic()
        while len(report.weights) < world:
            try:
                kind, *message = out.get(timeout=0.1)
            except queue.Empty:
                check(procs, report, heard)
                continue
            heard = time.monotonic()
            if kind == "error":
                raise WorkerError(failure(procs, report, *message))
            if kind == "ready":
                rank, pid, report.params, report.payload = message
                report.pids[rank] = pid
                if len(report.pids) == world:
                    yield report
            elif kind == "step":
                s = message[0]
                pending.setdefault(s.step, [None] * world)[s.rank] = s
                if None not in pending[s.step]:
                    report.steps.append(pending.pop(s.step))
                    yield report
            else:
                report.weights[message[0]] = message[1]
    finally:
        done.set()
        stop.set()
        shutdown(procs, out)


def pass_stop(should_stop: Callable[[], bool], stop, done: threading.Event, report: Report) -> None:
    while not done.wait(0.02):
        if should_stop():
            stop.set()
            report.stop_at = time.monotonic()  # after the set: a rank that asks later is told to stop
            return


def ended(p) -> str:
    code = p.exitcode
    return f"was killed ({signal.Signals(-code).name})" if code < 0 else f"exited with code {code}"


def check(procs: list, report: Report, heard: float) -> None:
    """Raise WorkerError if a rank's process has ended without its weights, or the ranks have been silent too long."""
    done = f"after step {len(report.steps)}" if report.steps else "before the first step"
    for rank, p in enumerate(procs):
        if p.exitcode is not None and (p.exitcode != 0 or rank not in report.weights):
            raise WorkerError(f"Rank {rank}'s process {ended(p)} {done}; the run was stopped. Press the button to "
                              "train again.")
    limit = STEP_SECONDS if len(report.pids) == report.world else START_SECONDS
    if time.monotonic() - heard > limit:
        raise WorkerError(f"The ranks sent nothing for {limit} s {done}; the run was stopped.")


def failure(procs: list, report: Report, rank: int, error: str) -> str:
    """The sentence for a rank's error: if another rank's process died first (its peer then loses the connection),
    that is named as the cause."""
    done = f"after step {len(report.steps)}" if report.steps else "before the first step"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not any(p.exitcode for p in procs if p.pid is not None):
        time.sleep(0.05)
    dead = [(r, p) for r, p in enumerate(procs) if r != rank and p.exitcode is not None and p.exitcode < 0]
    cause = f"Rank {dead[0][0]}'s process {ended(dead[0][1])} {done}, so rank {rank} lost its partner ({error})" \
        if dead else f"Rank {rank} failed {done}: {error}"
    return f"{cause}. The run was stopped; press the button to train again."


def shutdown(procs: list, out) -> None:
    """Let the workers exit (reading what they still send: a process exits only once its messages are in the pipe),
    then terminate any left after EXIT_SECONDS, and wait for each."""
    deadline = time.monotonic() + EXIT_SECONDS
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        with suppress(queue.Empty):
            out.get(timeout=0.05)
    for p in procs:
        if p.is_alive():
            p.terminate()
        if p.pid is not None:
            p.join(EXIT_SECONDS)
            if p.is_alive():
                p.kill()
                p.join()
    out.close()
    out.cancel_join_thread()


def replay(recipe: Recipe, steps: int, seed: int = 0, should_stop: Callable[[], bool] = lambda: False):
    """One process, `steps` steps on the whole joint batch with the same optimiser: (the flat weights at the start,
    the flat weights the ranks must end with), or None if stopped first."""
    run = prepare(recipe, seed=seed)
    model, tok = run.model.train(), run.model.tokenizer
    opt, g = optimiser(model, recipe), torch.Generator().manual_seed(seed)
    T = min(model.cfg.n_ctx, len(run.data) - 2)
    flat = lambda: torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy().copy()
    start = flat()
    for step in range(steps):
        if should_stop():
            return None
        loss = training_loss(model, *make_batch(recipe, tok, run.data, recipe.batch, T, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        update(model, opt, recipe, step)
    return start, flat()


# Memory per GPU (ZeRO, Rajbhandari et al. 2020, section 3): activations and buffers left out.

@dataclass(frozen=True)
class Precision:
    label: str
    params: int      # bytes per parameter: the weights the GPU computes with
    grads: int       # the gradients
    optimizer: int   # Adam's state: fp32 master weights, momentum and variance (mixed), or momentum and variance


PRECISIONS = {"mixed": Precision("mixed fp16/bf16 + Adam (2 + 2 + 12 bytes per parameter)", 2, 2, 12),
              "fp32": Precision("fp32 + Adam (4 + 4 + 8 bytes per parameter)", 4, 4, 8)}
STAGES = {"DP": (False, False, False),    # which of (parameters, gradients, optimizer state) are sharded over N
          "ZeRO-1": (False, False, True),
          "ZeRO-2": (False, True, True),
          "ZeRO-3": (True, True, True)}


def zero_memory(params: float, gpus: int, precision: Precision) -> dict[str, tuple[float, float, float]]:
    """Bytes per GPU of (parameters, gradients, optimizer state), for plain data parallelism (every GPU holds all
    three) and ZeRO stages 1 to 3 (each stage shards one more of them over the N GPUs: a GPU keeps 1/N)."""
    whole = (precision.params * params, precision.grads * params, precision.optimizer * params)
    return {stage: tuple(b / gpus if sharded else b for b, sharded in zip(whole, shards))
            for stage, shards in STAGES.items()}

