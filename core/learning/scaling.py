"""Scaling laws, live and on paper.

A ladder of tiny char-level GPTs, one recipe and one token budget, only the width changing: each size's held-out
loss is measured along the way, so the ladder gives loss against parameters N (the final points), against tokens D
and against compute C = 6ND (each size's curve). A power law L(N) = E + A N^-alpha is fitted to the final points,
and the lower envelope of the compute curves says which size is best at a compute budget.

N counts non-embedding parameters, as Kaplan et al. (2020) do: a tiny model's token and position tables are a large
share of it and scale with the vocabulary and the context, not with what the blocks can learn.

For real models, Hoffmann et al. (2022, "Chinchilla") fitted L(N, D) = E + A/N^alpha + B/D^beta; with C = 6ND its
minimum at a fixed C has a closed form, the compute-optimal split.
"""
from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.optimize import OptimizeWarning, curve_fit

from core.device import torch_threads
from core.learning.training import RECIPES, Recipe, Run, Step, evaluating, prepare, train_steps, training_loss
from core.model.transformer import HookedTransformer, parameter_groups

WIDTHS = (8, 16, 24, 32, 48, 64, 96, 128)  # the rungs a ladder may use: model width C
LADDER = (8, 16, 32, 48, 64)               # the default ladder's widths: 1,760 to 100,096 parameters (57x)
LAYERS = 2                                 # every rung: 2 blocks of 4 heads, FFN 4C, context 64
CONTEXT = 64
BATCH = 32                                 # windows per step: a step reads 32 x 64 = 2,048 tokens
STEPS = 300                                # the default token budget per size: 300 steps = 614,400 tokens
LR = 5e-3
HELDOUT_WINDOWS = 64                       # the held-out batch: 64 windows of 64 characters, the same for every size
MEASUREMENTS = 14                          # held-out measurements per size, spaced evenly in log(steps)


def rung_recipe(width: int, steps: int = STEPS, lr: float = LR) -> Recipe:
    """TinyGPT's recipe at this width: the same depth, heads, batch, schedule and data for every size."""
    base = RECIPES["tiny-gpt-char"]
    return replace(base, steps=steps, batch=BATCH, lr=lr, warmup=max(1, steps // 10),
                   config=replace(base.config, d_model=width, n_layers=LAYERS, d_head=None, d_ff=4 * width,
                                  n_ctx=CONTEXT))


def non_embedding_parameters(model: HookedTransformer) -> int:
    """N as Kaplan et al. count it: every parameter but the token and position embeddings (the head is tied)."""
    return sum(p.numel() for p in model.parameters()) - parameter_groups(model)["embeddings"]


def measured_at(steps: int, count: int = MEASUREMENTS) -> set[int]:
    """The steps after which the held-out loss is measured: evenly spaced on a log axis, the last step included."""
    return {int(s) for s in np.unique(np.geomspace(1, steps, count).round())} | {steps}


@dataclass
class Curve:
    """One size of the ladder: its parameters and its held-out loss after each measured number of tokens."""
    width: int
    params: int                    # N, non-embedding
    total: int                     # with the embeddings
    steps: int                     # planned
    tokens: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    done: bool = False             # trained for all its steps (a cancelled or capped size is not)

    @property
    def compute(self) -> list[float]:
        """C = 6ND at each measurement: about 6 FLOPs per parameter per token, forward and backward."""
        return [6.0 * self.params * d for d in self.tokens]


def heldout_loss(run) -> float:
    with evaluating(run.model):
        return training_loss(run.model, *run.heldout).item()


def same_data(run: Run, recipe: Recipe, seed: int = 0) -> Run:
    """A fresh model for another recipe, seeded as `prepare` seeds it, on the run's tokenizer, training ids and
    held-out batch: every size reads the same batches and is measured on the same windows (and the corpus is read
    and encoded once)."""
    torch.manual_seed(seed)
    model = HookedTransformer(replace(recipe.config, vocab_size=run.model.tokenizer.vocab_size))
    model.tokenizer = run.model.tokenizer
    return Run(model, recipe, run.data, run.heldout)


def train_ladder(widths, steps: int = STEPS, lr: float = LR, stop: threading.Event | None = None,
                 threads: int | None = None) -> Iterator[tuple[list[Curve], Step]]:
    """Train each width in turn, smallest first, yielding (the curves so far, the step) after every step.
    A stop (Cancel) ends the current size within one step and skips the rest; what was measured stays."""
    curves: list[Curve] = []
    first = None
    for width in widths:
        with torch_threads(threads):
            run = first = prepare(rung_recipe(width, steps, lr), heldout_windows=HELDOUT_WINDOWS) if first is None \
                else same_data(first, rung_recipe(width, steps, lr))
        curve = Curve(width, non_embedding_parameters(run.model), sum(p.numel() for p in run.model.parameters()), steps)
        curves.append(curve)
        at = measured_at(steps)
        for s in train_steps(run, stop=stop, threads=threads):
            if s.step in at:
                with torch_threads(threads):
                    curve.tokens.append(s.tokens)
                    curve.losses.append(heldout_loss(run))
            curve.seconds, curve.done = s.seconds, s.step == steps
            yield curves, s
        if stop is not None and stop.is_set():
            return


@dataclass
class PowerLaw:
    """L(N) = E + A N^-alpha, and how far the points lie from it: RMS of ln(measured) - ln(fitted)."""
    E: float
    A: float
    alpha: float
    rms: float

    def __call__(self, N):
        return self.E + self.A * np.power(N, -self.alpha)


def fit_power_law(N, L) -> PowerLaw:
    """Fit L = E + A N^-alpha to a few points, in log loss.

    For each E on a grid from 0 to just below the lowest loss, ln(L - E) = ln A - alpha ln N is a straight line
    (least squares); the E whose line fits best starts a bounded least-squares fit of all three. Five points pin
    alpha and A well, E loosely: the grid keeps the search away from E >= min L, where the log is undefined."""
    N, L = np.asarray(N, float), np.asarray(L, float)
    if len(N) < 3 or np.any(N <= 0) or np.any(L <= 0):
        raise ValueError("a power law with an offset needs at least 3 points with N > 0 and L > 0")
    x, best = np.log(N), None
    for E in np.linspace(0, 0.999 * L.min(), 400):
        slope, intercept = np.polyfit(x, np.log(L - E), 1)
        law = PowerLaw(E, math.exp(intercept), -slope, 0.0)
        rms = _rms(law, N, L)
        if -slope > 0 and (best is None or rms < best.rms):
            best = replace(law, rms=rms)
    if best is None:
        raise ValueError("the losses do not fall with N: no power law with a positive exponent fits them")
    try:
        with warnings.catch_warnings():  # 3 points for 3 numbers: an exact fit, with no covariance to estimate
            warnings.simplefilter("ignore", OptimizeWarning)
            (E, lnA, alpha), _ = curve_fit(lambda n, E, lnA, a: np.log(E + np.exp(lnA - a * np.log(n))), N, np.log(L),
                                           p0=(best.E, math.log(best.A), best.alpha),
                                           bounds=([0, -50, 1e-4], [0.999 * L.min(), 50, 5]))
        refined = PowerLaw(E, math.exp(lnA), alpha, 0.0)
        refined.rms = _rms(refined, N, L)
        return refined if refined.rms <= best.rms else best
    except (RuntimeError, ValueError):  # no convergence: the grid's answer stands
        return best


def _rms(law: PowerLaw, N: np.ndarray, L: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.log(L) - np.log(law(N))) ** 2)))


def loss_at_compute(curve: Curve, C: float) -> float | None:
    """The lowest held-out loss the size reached spending at most C FLOPs: read off its curve (straight lines between
    measurements on log-log axes), or its last loss where its run ended below C; None where its first measurement
    already cost more than C."""
    compute = curve.compute
    if not compute or compute[0] > C:
        return None
    if compute[-1] <= C:
        return curve.losses[-1]
    return float(np.exp(np.interp(np.log(C), np.log(compute), np.log(curve.losses))))


def compute_optimal(curves: list[Curve], C: float) -> tuple[int, float] | None:
    """(index of the size that reaches the lowest loss for at most C FLOPs, that loss): the lower envelope of the
    compute curves at C. None when C is below every size's first measurement."""
    found = [(loss, i) for i, c in enumerate(curves) if (loss := loss_at_compute(c, C)) is not None]
    if not found:
        return None
    loss, i = min(found)
    return i, loss


def frontier(curves: list[Curve], points: int = 80) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The compute-efficient frontier: (C, lowest loss for at most C, which size) on a log grid over the curves'
    range, falling as C grows."""
    spans = [c.compute for c in curves if c.compute]
    if not spans:
        return np.array([]), np.array([]), []
    grid = np.geomspace(min(s[0] for s in spans), max(s[-1] for s in spans), points)
    best = [compute_optimal(curves, C) for C in grid]
    keep = [i for i, b in enumerate(best) if b is not None]
    return grid[keep], np.array([best[i][1] for i in keep]), [best[i][0] for i in keep]


# Real models on paper: Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", arXiv:2203.15556,
# their Approach 3 (a parametric fit of L(N, D) to 400+ training runs), equation (10). N counts every parameter.

@dataclass(frozen=True)
class Chinchilla:
    E: float = 1.69       # nats per token that no model size or data removes (on their data and tokenizer)
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34   # how fast the loss falls with parameters N
    beta: float = 0.28    # how fast it falls with training tokens D

    def loss(self, N: float, D: float) -> float:
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    def optimal(self, C: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising the loss at compute C = 6ND:
        N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6) / N_opt, G = (alpha A / (beta B))^(1/(alpha+beta))."""
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        N = G * (C / 6) ** (self.beta / (self.alpha + self.beta))
        return N, C / 6 / N


CHINCHILLA = Chinchilla()
TOKENS_PER_PARAMETER = 20  # the rule of thumb read from Hoffmann et al.'s Approaches 1 and 2 (their Table 3)


def compute(N: float, D: float) -> float:
    """Training FLOPs: about 2 per parameter per token forward, 4 backward (Kaplan et al. 2020)."""
    return 6.0 * N * D


@dataclass(frozen=True)
class RealModel:
    name: str
    params: float
    tokens: float
    estimate: bool        # the token count is not published
    source: str


REAL_MODELS = (
    RealModel("GPT-2 124M", 124e6, 9e9, True,
              "Radford et al. 2019 give WebText's size (40 GB of text, 8M documents) but not the tokens trained on; "
              "9B is our estimate of one pass over a text that size (OpenWebText, its open replica, is about 9B "
              "GPT-2 tokens)"),
    RealModel("SmolLM2-135M", 135e6, 2e12, False,
              "Allal et al. 2025, SmolLM2 (arXiv:2502.02737) and its model card: 2 trillion tokens"),
    RealModel("Llama 3 8B", 8e9, 15e12, False,
              "Meta 2024, The Llama 3 Herd of Models (arXiv:2407.21783) and its model card: over 15T tokens"),
    RealModel("Chinchilla 70B", 70e9, 1.4e12, False,
              "Hoffmann et al. 2022 (arXiv:2203.15556): 70B parameters, 1.4T tokens"),
)
