"""Masked multi-head self-attention: MHA, GQA and MQA in one module.

    scores  = q k^T / sqrt(D) + mask        (B, H, T, S)   Gemma 2 first squashes q k^T / sqrt(D) by cap * tanh(. / cap)
    pattern = softmax(scores)                each row sums to 1, masked keys get 0
    z       = pattern v                      (B, T, H, D), one output per head
    out     = concat_heads(z) W_O            (B, T, C)

With G < H key/value heads, each K/V head serves H/G query heads (grouped-query
attention); G = 1 is multi-query attention. When no hook needs the scores or the
pattern, the same maths runs in PyTorch's fused scaled_dot_product_attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.inputs import InputError
from core.model.cache import act_name
from core.model.config import ModelConfig
from core.model.hooks import HookPoint
from core.model.norm import Norm
from core.model.positional import alibi_bias, apply_rope


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """(T, S) additive mask: 0 where query t may see key s, -inf where not.

    The T queries are the last T of the S positions (earlier ones sit in the KV cache).
    """
    q_pos = torch.arange(S - T, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    return torch.zeros(T, S, device=device).masked_fill(k_pos > q_pos, float("-inf"))


def sliding_window_mask(T: int, S: int, window: int, device=None) -> torch.Tensor:
    """(T, S) causal mask that also hides keys more than `window - 1` positions back."""
    q_pos = torch.arange(S - T, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    return causal_mask(T, S, device).masked_fill(q_pos - k_pos >= window, float("-inf"))


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask (B, S) of 1 = token, 0 = padding -> (B, 1, 1, S) additive mask."""
    blocked = attention_mask[:, None, None, :] == 0
    return torch.zeros(blocked.shape, device=attention_mask.device).masked_fill(blocked, float("-inf"))


def build_mask(cfg: ModelConfig, T: int, S: int, attention_mask=None, device=None,
               window: int | None = None) -> torch.Tensor:
    """(1|B, 1|H, T, S) additive mask combining causality, a sliding window (a layer's cfg.window), padding, ALiBi."""
    if window:
        mask = sliding_window_mask(T, S, window, device)
    elif cfg.causal:
        mask = causal_mask(T, S, device)
    else:
        mask = torch.zeros(T, S, device=device)
    mask = mask[None, None]                                    # (1, 1, T, S)
    if cfg.positions == "alibi":
        mask = mask + alibi_bias(cfg.n_heads, T, S, S - T).to(device)
    if attention_mask is not None:
        mask = mask + padding_mask(attention_mask)
    # A query that may see nothing (a left-padding position) would give 0/0; let it see
    # everything instead. Its output is padding and never read.
    dead = torch.isinf(mask).all(dim=-1, keepdim=True)
    return mask.masked_fill(dead, 0.0) if dead.any() else mask


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, G, S, D) -> (B, G * n_rep, S, D): each K/V head copied for the query heads it serves."""
    if n_rep == 1:
        return x
    B, G, S, D = x.shape
    return x[:, :, None].expand(B, G, n_rep, S, D).reshape(B, G * n_rep, S, D)


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(x / cap): about x while |x| is small, never beyond +-cap (Gemma 2's scores and logits)."""
    return x if cap is None else torch.tanh(x / cap) * cap


def attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float | None = None,
                     cap: float | None = None) -> torch.Tensor:
    """q (B, T, H, D), k (B, S, G, D) -> (B, H, T, S) scaled dot products, before the mask.

    scale None divides by sqrt(D); Granite (trained with muP) multiplies by its own scale, 1/D; Gemma by
    1/sqrt(query_pre_attn_scalar). cap: Gemma 2's soft cap."""
    H, G, D = q.shape[2], k.shape[2], q.shape[3]
    q = q.transpose(1, 2)                                      # (B, H, T, D)
    k = repeat_kv(k.transpose(1, 2), H // G)                   # (B, H, S, D)
    qk = q @ k.transpose(-2, -1)                               # (B, H, T, S)
    return softcap(qk / math.sqrt(D) if scale is None else qk * scale, cap)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        H, G, D, C = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model
        qkv_bias = cfg.bias if cfg.qkv_bias is None else cfg.qkv_bias
        self.q_proj = nn.Linear(C, H * D, bias=qkv_bias)
        self.k_proj = nn.Linear(C, G * D, bias=qkv_bias)
        self.v_proj = nn.Linear(C, G * D, bias=qkv_bias)
        self.o_proj = nn.Linear(H * D, C, bias=cfg.bias)
        if cfg.qk_norm:  # queries and keys rescaled before RoPE: "head" per head (D), "full" across heads (H D, G D)
            self.q_norm = Norm(cfg, D if cfg.qk_norm == "head" else H * D)
            self.k_norm = Norm(cfg, D if cfg.qk_norm == "head" else G * D)
        rot = ["rot_q", "rot_k"] if cfg.positions == "rope" else []
        for name in ["q", "k", "v", *rot, "mask", "attn_scores", "pattern", "z"]:
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x, mask, rope=None, kv_cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        H, G, D = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.d_head
        q, k = self.q_proj(x), self.k_proj(x)                  # (B, T, H D), (B, T, G D)
        if self.cfg.qk_norm == "full":                         # OLMo 2: over all heads at once
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.view(B, T, H, D), k.view(B, T, G, D)
        if self.cfg.qk_norm == "head":                         # Qwen3, Gemma 3: each head on its own
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.hook_q(q), self.hook_k(k)                  # (B, T, H, D), (B, T, G, D)
        v = self.hook_v(self.v_proj(x).view(B, T, G, D))       # (B, T, G, D)
        if rope is not None:
            q, k = self.hook_rot_q(apply_rope(q, *rope)), self.hook_rot_k(apply_rope(k, *rope))
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer, k, v)           # (B, S, G, D)
        mask = self.hook_mask(mask)                            # (1|B, 1|H, T, S)
        if self.hook_attn_scores.active() or self.hook_pattern.active() or self.cfg.attn_softcap:
            scores = self.hook_attn_scores(attention_scores(q, k, self.cfg.attn_scale, self.cfg.attn_softcap) + mask)
            pattern = self.hook_pattern(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
            z = pattern @ repeat_kv(v.transpose(1, 2), H // G)  # (B, H, T, D)
        else:
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                attn_mask=mask.to(q.dtype), scale=self.cfg.attn_scale, enable_gqa=G != H)  # (B, H, T, D)
        z = self.hook_z(z.transpose(1, 2))                     # (B, T, H, D)
        return self.o_proj(z.reshape(B, T, H * D))


def mask_of_kind(kind: str, T: int, H: int, window: int = 3) -> torch.Tensor:
    """(1, 1|H, T, T) additive mask of a named kind, for trying other masks on a model via hook_mask."""
    if kind == "causal":
        mask = causal_mask(T, T)
    elif kind == "bidirectional":
        mask = torch.zeros(T, T)
    elif kind == "sliding window":
        mask = sliding_window_mask(T, T, window)
    elif kind == "ALiBi":
        return causal_mask(T, T)[None, None] + alibi_bias(H, T, T)
    else:
        raise InputError(f"unknown mask {kind!r}")
    return mask[None, None]


def head_steps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, head: int,
               scale: float | None = None, cap: float | None = None) -> dict:
    """The stages of one head's attention, recomputed from cached q (T, H, D), k, v (S, G, D), mask (1|H, T, S).

    Returns (T, S) matrices qk, scaled (by 1/sqrt(D), or the model's own scale, then soft-capped where the model
    does), scores (mask added) and pattern, and z (T, D).
    """
    H, G, D = q.shape[1], k.shape[1], q.shape[2]
    kv = head // (H // G)                                      # the K/V head this query head reads
    qk = q[:, head] @ k[:, kv].T                               # (T, S)
    scaled = softcap(qk / math.sqrt(D) if scale is None else qk * scale, cap)
    head_mask = mask[head if mask.shape[0] > 1 else 0]         # (T, S)
    scores = scaled + head_mask
    pattern = torch.softmax(scores, dim=-1)
    return {"qk": qk, "scaled": scaled, "mask": head_mask, "scores": scores, "pattern": pattern,
            "v": v[:, kv], "z": pattern @ v[:, kv]}


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch token lists as decoders do, padding on the left: (ids, attention_mask), each (B, S)."""
    S = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (S - len(s)) + list(s) for s in sequences])
    attention_mask = torch.tensor([[0] * (S - len(s)) + [1] * len(s) for s in sequences])
    return ids, attention_mask


def kv_head_of(n_heads: int, n_kv_heads: int) -> list[int]:
    """The K/V head each query head reads: grouped-query attention gives H/G neighbours one K/V head."""
    return [h // (n_heads // n_kv_heads) for h in range(n_heads)]


def pattern_summary(pattern: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head statistics of patterns (..., T, S), averaged over query positions:
    entropy in nats (0 = looks at one token), weight on the previous token, weight on the first token."""
    p = pattern.float()
    T, S = p.shape[-2:]
    return {"entropy": -(p * p.clamp_min(1e-12).log()).sum(-1).mean(-1),
            "previous": p.diagonal(offset=S - T - 1, dim1=-2, dim2=-1).mean(-1),  # query t -> key t-1
            "first": p[..., 0].mean(-1)}


def zero_heads(heads) -> dict:
    """Hooks that zero the outputs z of the chosen (layer, head) pairs, so they add nothing to the residual."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def zero(chosen):
        def fn(z, hook):                                       # (B, T, H, D)
            z = z.clone()
            z[:, :, chosen] = 0
            return z
        return fn
    return {act_name("z", layer): zero(chosen) for layer, chosen in by_layer.items()}


@dataclass(frozen=True)
class ZeroHeads:
    """An intervention: the chosen (layer, head) outputs zeroed, for one call: `with ZeroHeads(((3, 4),)).apply(model)`."""
    heads: tuple[tuple[int, int], ...]

    def apply(self, model):
        return model.hooks(zero_heads(self.heads))


@dataclass(frozen=True)
class MaskOverride:
    """An intervention: every layer's mask replaced by one of another kind (mask_of_kind), for one call."""
    kind: str
    window: int = 3

    def apply(self, model):
        H = model.cfg.n_heads

        def replace(mask, hook):                               # (1|B, 1|H, T, S) -> (1, 1|H, T, T)
            return mask_of_kind(self.kind, mask.shape[-2], H, self.window).to(mask.device)
        return model.hooks({act_name("mask", i): replace for i in range(model.cfg.n_layers)})
