"""KV cache: keys and values of past positions, kept so each new token costs one position.

Without a cache, generating token t recomputes K and V for all t earlier positions;
with it, each step computes q, k, v for the new position only and attends to the
stored keys. Memory: 2 (K and V) x layers x G x D x positions x bytes per value.
"""
from __future__ import annotations

import torch


class KVCache:
    """Per-layer K and V, each (B, S, G, D), growing by T positions per forward."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def __len__(self) -> int:
        """Number of positions stored (S)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[1]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, T, G, D) keys and values; return all of them, (B, S, G, D)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=1)
            v = torch.cat([self.values[layer], v], dim=1)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


def cache_bytes(n_layers: int, n_kv_heads: int, d_head: int, positions: int, bytes_per_value: int = 4) -> int:
    """Bytes a full KV cache takes: 2 x layers x G x D x positions x bytes per value."""
    return 2 * n_layers * n_kv_heads * d_head * positions * bytes_per_value
