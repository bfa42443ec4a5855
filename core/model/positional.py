"""Four ways to tell a transformer where a token is.

learned     a trained (n_ctx, C) table added to the token embeddings (GPT-2, BERT)
sinusoidal  a fixed table of sines and cosines at geometric frequencies (the 2017 paper)
RoPE        rotate each (even, odd) pair of q and k dimensions by an angle that grows with
            position, so q.k depends only on the offset between the two positions (Llama)
ALiBi       no embedding at all: subtract a per-head slope times the distance from the scores
"""
from __future__ import annotations

import math

import torch


def sinusoidal_table(n_ctx: int, C: int) -> torch.Tensor:
    """(n_ctx, C): PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(n_ctx, dtype=torch.float32)[:, None]              # (n_ctx, 1)
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, C, 2) / C)   # (C/2,)
    table = torch.zeros(n_ctx, C)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: C // 2])
    return table


def rope_inv_freq(D: int, theta: float) -> torch.Tensor:
    """(D/2,) angular speed of each rotated pair: theta^(-2i/D)."""
    return 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (T,) -> cos, sin (T, D), each half repeated the way Llama lays out q and k."""
    angles = positions[:, None].float() * inv_freq[None, :]  # (T, D/2)
    angles = torch.cat((angles, angles), dim=-1)             # (T, D)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Pairs dimension i with i + D/2: (x1, x2) -> (-x2, x1), a 90 degree turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, heads, D) rotated by the angles of its positions; cos, sin (T, D)."""
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, D) broadcasts over heads
    return x * cos + rotate_half(x) * sin


def alibi_slopes(H: int) -> torch.Tensor:
    """(H,) geometric slopes 2^(-8/H), 2^(-16/H), ... (interleaved when H is not a power of 2)."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(H).is_integer():
        return torch.tensor(powers(H))
    closest = 2 ** math.floor(math.log2(H))
    return torch.tensor(powers(closest) + powers(2 * closest)[0::2][: H - closest])


def alibi_bias(H: int, T: int, S: int, offset: int = 0) -> torch.Tensor:
    """(1, H, T, S) additive bias -slope * (query position - key position)."""
    q_pos = torch.arange(offset, offset + T)[:, None]
    k_pos = torch.arange(S)[None, :]
    distance = (q_pos - k_pos).abs().float()  # (T, S); abs keeps encoders symmetric
    return -alibi_slopes(H)[None, :, None, None] * distance
