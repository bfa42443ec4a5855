"""Quantization error: int8 / int4 round trips of a model's weights, what they cost and what they change.

A quantized matrix stores small integers q and a few floats per row or per group of g weights:

    int8 per channel (absmax)   w ~ s q,        q in -127..127,  s = max|w| / 127 per row
    int4 symmetric (Q4_0-like)  w ~ d q,        q in -8..7,      d = the group's largest-magnitude weight / -8
    int4 asymmetric (Q4_1-like) w ~ d q + m,    q in 0..15,      d = (max - min) / 15, m = min per group

GGUF's Q4_1 (core.weights.gguf_file) is the last one with g = 32. The round trips here are simulated: weights
are quantized and dequantized back to fp32, so the model computes as before with the rounded weights.
core.inference.int8 is the real thing: int8 weights in memory and PyTorch's int8 matrix product.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.inputs import InputError
from core.model.transformer import HookedTransformer

SCHEMES = {  # name -> (bits per code, bytes of scale (and minimum) per group or row)
    "int8 per channel": (8, 4),
    "int4 per group, symmetric (Q4_0-like)": (4, 2),
    "int4 per group, asymmetric (Q4_1-like)": (4, 4),
}


# Round trips: quantize, then dequantize back to fp32.

def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) weights -> q (N, K) int8 and one scale per row (N,): w ~ scale * q, |error| <= scale / 2."""
    scale = w.abs().amax(dim=1).clamp_min(torch.finfo(w.dtype).tiny) / 127
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def round_trip(w: torch.Tensor, scheme: str, group: int = 32) -> torch.Tensor:
    """w (N, K) quantized with the scheme and dequantized back: what the model computes with after quantizing."""
    if scheme == "int8 per channel":
        q, scale = quantize_int8(w)
        return q.float() * scale[:, None]
    N, K = w.shape
    check_group(group, K)
    g = w.reshape(N, K // group, group)                                      # (N, groups, g)
    if scheme.startswith("int4 per group, symmetric"):
        biggest = g.gather(-1, g.abs().argmax(-1, keepdim=True))             # signed, (N, groups, 1)
        d = (biggest / -8).half().float()                                    # so that it maps to -8
        q = torch.where(d == 0, 0, g / d).round().clamp(-8, 7)
        return (q * d).reshape(N, K)
    if scheme.startswith("int4 per group, asymmetric"):
        low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        d, m = ((high - low) / 15).half().float(), low.half().float()       # stored as fp16, as GGUF does
        q = torch.where(d == 0, 0, (g - m) / d).round().clamp(0, 15)
        return (q * d + m).reshape(N, K)
    raise InputError(f"Unknown scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}.")


def check_group(group: int, K: int) -> None:
    if group < 2 or K % group:
        fits = [g for g in (8, 16, 32, 64, 128, 256) if K % g == 0]
        raise InputError(f"A group of {group} weights does not divide rows of {K}; try one of {', '.join(map(str, fits))}.")


def bytes_per_weight(scheme: str, group: int, K: int) -> float:
    """Storage per weight: the code plus its share of the scale (and minimum) of its row or group."""
    bits, scale_bytes = SCHEMES[scheme]
    return bits / 8 + scale_bytes / (K if scheme == "int8 per channel" else group)


def relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||w_hat - w|| / ||w|| over the matrix."""
    return float((w_hat - w).norm() / w.norm().clamp_min(1e-30))


def granularity_errors(w: torch.Tensor, group: int) -> dict[str, float]:
    """Relative error of w (N, K) with one scale for the whole matrix, one per row, one per group: a single
    outlier stretches the scale of everything that shares it, so the finer the scales, the smaller the error."""
    flat, sym = w.reshape(1, -1), "int4 per group, symmetric (Q4_0-like)"
    return {"int8, one scale for the matrix": relative_error(flat, round_trip(flat, "int8 per channel")),
            "int8, one per row (channel)": relative_error(w, round_trip(w, "int8 per channel")),
            "int4, one scale for the matrix": relative_error(flat, round_trip(flat, sym, flat.shape[1])),
            "int4, one per row": relative_error(w, round_trip(w, sym, w.shape[1])),
            f"int4, one per group of {group}": relative_error(w, round_trip(w, sym, group))}


# Quantizing a model.

def block_linears(model: HookedTransformer, layers=None) -> dict[str, nn.Linear]:
    """{name: module} of every linear layer inside the chosen blocks (all by default): attention, FFN, experts."""
    chosen = range(model.cfg.n_layers) if layers is None else layers
    return {f"blocks.{i}.{name}": module for i in chosen for name, module in model.blocks[i].named_modules()
            if isinstance(module, nn.Linear)}


@torch.no_grad()
def linear_errors(model: HookedTransformer, scheme: str, group: int) -> dict[str, float]:
    """{name: relative error} of every block linear after the scheme's round trip."""
    return {name: relative_error(m.weight, round_trip(m.weight, scheme, group)) for name, m in block_linears(model).items()}


def shallow_copy(model: HookedTransformer) -> HookedTransformer:
    """A copy of the model's modules that shares every weight, buffer and the tokenizer: replacing a layer in the
    copy leaves the original, which other users share, as it was."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    memo[id(model.tokenizer)] = model.tokenizer
    return copy.deepcopy(model, memo)


def replace(model: HookedTransformer, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, module)


def quantized_copy(model: HookedTransformer, scheme: str, group: int = 32, layers=None) -> HookedTransformer:
    """The model with the chosen blocks' linear weights rounded by the scheme (simulated: stored back in fp32)."""
    out = shallow_copy(model)
    for name, linear in block_linears(model, layers).items():
        new = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                        device=linear.weight.device, dtype=linear.weight.dtype)
        new.weight = nn.Parameter(round_trip(linear.weight.detach(), scheme, group), requires_grad=False)
        new.bias = linear.bias
        replace(out, name, new)
    return out


def model_bytes(model: HookedTransformer, scheme: str | None = None, group: int = 32, layers=None) -> int:
    """Bytes of the parameters, with the chosen blocks' linear weights stored by the scheme (None: all fp32)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if scheme is None:
        return total
    for linear in block_linears(model, layers).values():
        w = linear.weight
        total -= w.numel() * w.element_size()
        total += math.ceil(w.numel() * bytes_per_weight(scheme, group, w.shape[1]))
    return total


# What quantizing changed.

def next_token_kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(p_reference || p_other) at every position, in nats: logits (..., V) -> (...)."""
    log_p, log_q = reference.float().log_softmax(-1), other.float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0)


def top1_agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Share of positions where both logits (..., V) pick the same most likely token."""
    return float((reference.argmax(-1) == other.argmax(-1)).float().mean())


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """e^(mean cross-entropy) of predicting each next token: logits (1, T, V), ids (1, T)."""
    return math.exp(float(F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])))
