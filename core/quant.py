"""Quantization: the 4-bit blocks SmolLM2 ships in, int8 / int4 round trips, what they cost, and an int8 path.

A quantized matrix stores small integers q and a few floats per row or per group of g weights:

    int8 per channel (absmax)   w ~ s q,        q in -127..127,  s = max|w| / 127 per row
    int4 symmetric (Q4_0-like)  w ~ d q,        q in -8..7,      d = the group's largest-magnitude weight / -8
    int4 asymmetric (Q4_1-like) w ~ d q + m,    q in 0..15,      d = (max - min) / 15, m = min per group

GGUF's Q4_1 block is the last one with g = 32: d and m as fp16, then 32 codes packed two to a byte (20 bytes
for 32 weights, 5 bits each). The round trips here are simulated: weights are quantized and dequantized back
to fp32, so the model computes as before with the rounded weights. `Int8Linear` is the real thing: int8
weights in memory and PyTorch's int8 matrix product (README: Benchmarks, quantized).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.inputs import InputError
from core.model import HookedTransformer

SCHEMES = {  # name -> (bits per code, bytes of scale (and minimum) per group or row)
    "int8 per channel": (8, 4),
    "int4 per group, symmetric (Q4_0-like)": (4, 2),
    "int4 per group, asymmetric (Q4_1-like)": (4, 4),
}
Q4_1_BLOCK = 32                          # weights per GGUF Q4_1 block
GGUF_TO_OURS = {"attn_q": "attn.q_proj", "attn_k": "attn.k_proj", "attn_v": "attn.v_proj",
                "attn_output": "attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}


# --- GGUF: the stored blocks, read with the gguf package --------------------------------------------------------

@functools.cache
def gguf_reader(path: str) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)


def gguf_tensor(path: str | Path, name: str):
    """One tensor of a GGUF file (gguf's ReaderTensor: its raw bytes, type and shape)."""
    for tensor in gguf_reader(str(path)).tensors:
        if tensor.name == name:
            return tensor
    raise InputError(f"The GGUF file has no tensor {name!r}.")


def unpack_q4_1(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1 bytes (..., n_blocks * 20) -> codes (..., n_blocks, 32) in 0..15, d and m (..., n_blocks) as fp32.

    A block is d (fp16), m (fp16), then 16 bytes: byte j holds weight j in its low 4 bits, weight j + 16 in its high."""
    blocks = raw.reshape(*raw.shape[:-1], -1, 20)                            # (..., n_blocks, 20)
    d = blocks[..., 0:2].contiguous().view(torch.float16)[..., 0].float()
    m = blocks[..., 2:4].contiguous().view(torch.float16)[..., 0].float()
    packed = blocks[..., 4:]                                                 # (..., n_blocks, 16)
    codes = torch.cat([packed & 0x0F, packed >> 4], dim=-1)                  # (..., n_blocks, 32)
    return codes, d, m


def dequantize_q4_1(raw: torch.Tensor) -> torch.Tensor:
    """Q4_1 bytes (rows, n_blocks * 20) -> weights (rows, n_blocks * 32): w = d * code + m, in fp32 as ggml."""
    codes, d, m = unpack_q4_1(raw)
    return (d[..., None] * codes.float() + m[..., None]).flatten(-2)


@dataclass
class Q4Block:
    tensor: str                          # the GGUF tensor's name, e.g. blk.0.ffn_down.weight
    row: int
    block: int                           # which block of 32 in the row
    codes: list[int]                     # the 32 stored 4-bit codes
    d: float                             # scale
    m: float                             # minimum
    values: list[float]                  # d * code + m


def read_block(path: str | Path, tensor: str, index: int) -> Q4Block:
    """The index-th Q4_1 block of a GGUF tensor (row by row), as stored and dequantized."""
    t = gguf_tensor(path, tensor)
    if t.tensor_type != gguf.GGMLQuantizationType.Q4_1:
        raise InputError(f"{tensor} is stored as {t.tensor_type.name}, not Q4_1.")
    raw = torch.from_numpy(np.asarray(t.data))                               # (rows, n_blocks * 20) bytes
    per_row = raw.shape[1] // 20
    n = raw.shape[0] * per_row
    if not 0 <= index < n:
        raise InputError(f"{tensor} has {n:,} blocks; pick one from 0 to {n - 1:,}.")
    row, block = divmod(index, per_row)
    codes, d, m = unpack_q4_1(raw[row, block * 20:(block + 1) * 20])
    values = d[0] * codes[0].float() + m[0]
    return Q4Block(tensor, row, block, codes[0].tolist(), float(d[0]), float(m[0]), values.tolist())


# --- round trips: quantize, then dequantize back to fp32 ---------------------------------------------------------

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


# --- quantizing a model ------------------------------------------------------------------------------------------

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


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (N, K) and one fp32 scale per output row, for generation.

    On the CPU it runs torch._weight_int8pack_mm, PyTorch's weight-only int8 product: it reads 1 byte per weight
    instead of 4. The kernel takes bf16 activations (on CPUs without AVX-512 its fp32 and fp16 paths are a plain
    loop, ~10x slower), and bf16 keeps 8 bits of mantissa; so x is split as x = hi + lo, both bf16, and the two
    rows go through in one call: together they carry ~16 bits. Other devices dequantize the weights per call."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        q, scale = quantize_int8(weight.detach().float())
        self.register_buffer("q", q)                                         # (N, K) int8
        self.register_buffer("scale", scale)                                 # (N,) fp32
        self.register_buffer("ones", torch.ones_like(scale, dtype=torch.bfloat16))
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])                                    # (M, K)
        if flat.device.type == "cpu":
            hi = flat.bfloat16()
            lo = (flat - hi.float()).bfloat16()
            y = torch._weight_int8pack_mm(torch.cat([hi, lo]), self.q, self.ones).float()   # (2M, N): x q^T
            y = (y[:len(flat)] + y[len(flat):]) * self.scale
        else:
            y = F.linear(flat, self.q.to(flat.dtype)) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)


class Int8Head(nn.Module):
    """The unembedding with an int8 copy of its matrix (for tied models, of the embedding, which stays fp32)."""

    def __init__(self, unembed: nn.Module, weight: torch.Tensor):
        super().__init__()
        self.transform, self.hook_out = unembed.transform, unembed.hook_out
        self.proj = Int8Linear(weight, unembed.bias)

    def forward(self, x: torch.Tensor, tied_weight: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        return self.hook_out(self.proj(x))                                   # (B, T, V)


def int8_model(model: HookedTransformer) -> HookedTransformer:
    """The model with every block linear and the head as Int8Linear; embeddings and norms stay fp32 (shared)."""
    out = shallow_copy(model)
    for name, linear in block_linears(model).items():
        replace(out, name, Int8Linear(linear.weight, linear.bias))
    if model.unembed is not None:
        W = model.embed.weight if model.unembed.weight is None else model.unembed.weight
        out.unembed = Int8Head(model.unembed, W)
    return out.eval()


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


# --- what quantizing changed ------------------------------------------------------------------------------------

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
