"""Steering by activation addition (Turner et al. 2023, "ActAdd"): push a model's residual stream along a direction.

The direction is a difference of the residual stream entering one block between two contrast prompts ("I love you"
and "I hate you"), position by position and averaged over positions (and over several pairs, if given). During
generation coefficient x direction is added to the stream entering that block at every position. The hook lives for
one call only (core.model.hooks resets it even after an error), so the shared model is never left steered.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from core.inference.generation import Generation, generate
from core.inputs import InputError
from core.model.transformer import HookedTransformer

Pair = tuple[list[int], list[int]]  # the token ids of a contrast pair: (plus, minus)


def hook_name(layer: int) -> str:
    """Where the direction is read and added: the residual stream entering block `layer`."""
    return f"blocks.{layer}.hook_resid_pre"


@torch.no_grad()
def contrast_direction(model: HookedTransformer, pairs: list[Pair], layer: int) -> torch.Tensor:
    """(C,) the mean over pairs and positions of stream(plus) - stream(minus) entering block `layer`. The two
    prompts of a pair must have as many tokens, since they are compared position by position."""
    diffs = []
    for plus, minus in pairs:
        if len(plus) != len(minus):
            raise InputError(f"A contrast pair must have as many tokens on both sides to be compared position by "
                             f"position; this one has {len(plus)} and {len(minus)}.")
        _, cache = model.run_with_cache(torch.tensor([plus, minus], device=model.device), names=hook_name(layer),
                                        logits=False, stop=layer + 1)
        stream = cache[hook_name(layer)]                                      # (2, T, C)
        diffs.append((stream[0] - stream[1]).mean(0))                         # (C,)
    return torch.stack(diffs).mean(0).float().cpu()


def contrast_tokens(pairs: list[Pair]) -> tuple[int, int]:
    """The first token where the first pair's prompts differ, on each side: the words the direction is about,
    whose logit difference measures the effect."""
    plus, minus = pairs[0]
    i = next((i for i, (a, b) in enumerate(zip(plus, minus)) if a != b), None)
    if i is None:
        raise InputError("The two prompts of the first contrast pair are the same tokens: there is no difference "
                         "to steer by.")
    return plus[i], minus[i]


def steered(model: HookedTransformer, direction: torch.Tensor, layer: int, coefficient):
    """`with steered(model, v, layer, c): model(ids)`: the calls inside see c x v added at every position of the
    stream entering `layer`. c is a number, or a (B,) tensor of one coefficient per batch row; a coefficient of 0
    adds no hook at all."""
    if isinstance(coefficient, (int, float)) and coefficient == 0:
        return nullcontext()
    c = torch.as_tensor(coefficient, dtype=direction.dtype).reshape(-1, 1, 1)  # (1 or B, 1, 1)
    push = (c * direction).to(model.device)                                     # (1 or B, 1, C)
    return model.hooks({hook_name(layer): lambda x, hook: x + push.to(x.dtype)})


@torch.no_grad()
def steered_logits(model: HookedTransformer, ids: list[int], direction: torch.Tensor, layer: int,
                   coefficients: list[float]) -> torch.Tensor:
    """(B, V) the next-token logits after the prompt, one row per coefficient, in one batched forward."""
    batch = torch.tensor([ids] * len(coefficients), device=model.device)       # (B, T)
    with steered(model, direction, layer, torch.tensor(coefficients, dtype=torch.float32)):
        return model(batch, last_only=True)[:, -1].float().cpu()


def steered_generation(model: HookedTransformer, ids: list[int], direction: torch.Tensor, layer: int,
                       coefficient: float, n: int, stop_ids=None) -> Generation:
    """The greedy continuation of up to n tokens, steered at every step (the KV cache holds steered keys and
    values, since the push enters before block `layer` reads the stream)."""
    with steered(model, direction, layer, coefficient):
        return generate(model, ids, n, stop_ids=stop_ids)
