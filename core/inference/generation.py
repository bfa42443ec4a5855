"""Autoregressive generation, with or without a KV cache, timing every step.

Without a cache every step runs the whole sequence again (cost grows with length);
with one, the prompt runs once ("prefill") and each later step feeds only the newest
token, attending to the stored keys and values. `branch` forces one token first and goes on
greedily: what the model would have written had it picked that token.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from core.device import timed
from core.inference.sampling import SamplingSettings, sample
from core.inputs import InputError
from core.model.kv_cache import KVCache
from core.model.transformer import HookedTransformer


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)         # the model's probability of each new token (before any filter)
    step_seconds: list[float] = field(default_factory=list)  # step 0 includes the prompt (prefill)
    cache_bytes: int = 0                                      # size of the KV cache at the end
    alternatives: list[list[tuple[int, float]]] = field(default_factory=list)  # each step's top (id, probability)


@torch.no_grad()
def generate_steps(model: HookedTransformer, ids, max_new_tokens: int, use_cache: bool = True,
                   settings: SamplingSettings = SamplingSettings(temperature=0), seed: int | None = None,
                   stop_ids: set[int] | None = None, window: bool = False, forced: Sequence[int] = (),
                   alternatives: int = 0):
    """Yield the growing Generation after every step, so a user interface can draw it live and stop it.

    Each step unembeds only the last position, the one it samples from. window=True (without a cache) lets the
    text grow past the context, the model reading its last n_ctx tokens, as the tutorials' sampling loop does.
    The first steps take the `forced` tokens instead of sampling (a branch: what if the model had picked this?).
    alternatives=k keeps each step's k likeliest tokens and their probabilities (the model's, before any filter)."""
    ids = torch.as_tensor(ids, device=model.device).reshape(1, -1)        # (1, T)
    if ids.shape[1] + max_new_tokens > model.cfg.n_ctx and not (window and not use_cache):
        raise InputError(f"{ids.shape[1]} + {max_new_tokens} tokens exceed the context of {model.cfg.n_ctx}")
    generator = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
    out = Generation(prompt_ids=ids[0].tolist())
    cache = KVCache(model.cfg.n_layers) if use_cache else None
    step_input = ids[:, -model.cfg.n_ctx:]
    for step in range(max_new_tokens):
        logits, seconds = timed(partial(model, step_input, kv_cache=cache, last_only=True), model.device)  # (1, 1, V)
        if step < len(forced):
            token = torch.tensor([forced[step]], device=model.device)   # (1,)
        else:
            token = sample(logits[:, -1], settings, generator)           # (1,)
        probs = logits[0, -1].softmax(-1)                                  # (V,)
        out.new_ids.append(int(token))
        out.probs.append(probs[int(token)].item())
        if alternatives:
            top = probs.topk(alternatives)
            out.alternatives.append(list(zip(top.indices.tolist(), top.values.tolist())))
        out.step_seconds.append(seconds)
        out.cache_bytes = cache.nbytes() if cache is not None else 0
        ids = torch.cat([ids, token[:, None]], dim=1)
        step_input = token[:, None] if use_cache else ids[:, -model.cfg.n_ctx:]  # one token vs everything
        yield out
        if stop_ids and int(token) in stop_ids:
            return


def generate(model: HookedTransformer, ids, max_new_tokens: int, use_cache: bool = True,
             settings: SamplingSettings = SamplingSettings(temperature=0), seed: int | None = None,
             stop_ids: set[int] | None = None, should_stop=None, window: bool = False,
             forced: Sequence[int] = ()) -> Generation:
    """Append up to max_new_tokens tokens to ids (a list or (T,) tensor); greedy by default.

    `should_stop()` is polled after every step so a caller can cancel the run.
    """
    out = Generation(prompt_ids=torch.as_tensor(ids).reshape(-1).tolist())
    for out in generate_steps(model, ids, max_new_tokens, use_cache, settings, seed, stop_ids, window,  # noqa: B007
                              forced):
        if should_stop is not None and should_stop():
            break
    return out  # the last step's Generation


def branch(model: HookedTransformer, ids, forced_token: int, n: int) -> Generation:
    """What the model would have written had it picked forced_token next: that token, then n greedy ones.

    new_ids[0] is forced_token and probs[0] the probability the model gave it; every later token is its step's
    argmax and probs[i] that token's probability. One run of the generation loop, with the KV cache."""
    if not model.cfg.causal or model.unembed is None:
        raise InputError("Branching continues a text token by token, so it needs a decoder; this model is an encoder.")
    if not 0 <= forced_token < model.cfg.vocab_size:
        raise InputError(f"Token {forced_token} is not in this model's vocabulary of {model.cfg.vocab_size:,}.")
    return generate(model, ids, 1 + n, forced=[forced_token])


def median_slope(positions: list[int], seconds: list[float], bins: int = 4) -> float:
    """Seconds added per extra position, robust to noisy steps: split the run into `bins` equal
    stretches, take each stretch's median position and median time, fit a line through those."""
    n = len(seconds) // bins
    if n < 1:
        raise ValueError(f"need at least {bins} steps to estimate a trend")
    xs = torch.tensor([float(torch.tensor(positions[i * n:(i + 1) * n], dtype=torch.float64).median()) for i in range(bins)])
    ys = torch.tensor([float(torch.tensor(seconds[i * n:(i + 1) * n], dtype=torch.float64).median()) for i in range(bins)])
    xs = xs - xs.mean()
    return float((xs * (ys - ys.mean())).sum() / (xs * xs).sum())
