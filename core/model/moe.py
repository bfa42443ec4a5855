"""Mixture of experts: a router sends each token to K of E expert FFNs.

    router_logits = x W_r                               (B, T, E)
    probs         = softmax(router_logits)
    top-K experts by probability, weights renormalised to sum to 1
                    (equal to Granite's softmax over the K largest logits alone;
                    Qwen2-MoE keeps the K probabilities as they are)
    out           = sum_k weight_k * expert_k(x)
                    + sigmoid(x w_s) * shared(x)        Qwen2-MoE: one shared expert every token runs

Only K of the E experts run for a token, so the model holds E FFNs' parameters but
spends about K FFNs' compute per token. Noisy top-k adds Gaussian noise to the router
logits while training so that every expert gets tried; the load-balancing loss
pushes the router to spread tokens evenly.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.inputs import InputError
from core.model.config import ModelConfig
from core.model.hooks import HookPoint
from core.model.mlp import MLP


def route(router_logits: torch.Tensor, k: int, forced: int | None = None,
          renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., E) logits -> top-k (weights renormalised to sum to 1, or the probabilities themselves when not
    renormalize, expert indices), each (..., K).

    `forced` puts that expert in every token's choice: it takes the last slot where the
    top-k missed it, weighted by its own router probability."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, indices = probs.topk(k, dim=-1)
    if forced is not None:
        missing = (indices != forced).all(-1)                              # (...,)
        indices[missing, -1] = forced
        weights = probs.gather(-1, indices)
    return (weights / weights.sum(dim=-1, keepdim=True) if renormalize else weights), indices


@dataclass(frozen=True)
class Routing:
    """A change to how every MoE layer routes, for one call: `with routing(Routing(top_k=1)): model(ids)`."""
    top_k: int | None = None                # experts per token instead of the config's
    noise: float = 0.0                      # std of seeded Gaussian noise on the router logits (noisy top-k)
    seed: int = 0
    disabled: frozenset[int] = frozenset()  # experts no token may use
    forced: int | None = None               # an expert every token must use

    def check(self, n_experts: int) -> Routing:
        k = self.top_k or 0
        usable = n_experts - len(self.disabled)
        if not 0 <= k <= n_experts:
            raise InputError(f"top-k must be between 1 and {n_experts} experts")
        if any(not 0 <= e < n_experts for e in self.disabled) or not (self.forced is None or 0 <= self.forced < n_experts):
            raise InputError(f"experts are numbered 0 to {n_experts - 1}")
        if self.forced is not None and self.forced in self.disabled:
            raise InputError(f"expert {self.forced} cannot be both forced and disabled")
        if usable < max(k, 1):
            raise InputError(f"only {usable} expert(s) left enabled, fewer than the {max(k, 1)} each token needs")
        if not self.noise >= 0:
            raise InputError("the router noise must be 0 or more")
        return self

    def apply(self, model):
        """As an intervention on a model: the `with` block routes this way."""
        return routing(self)


_ROUTING: contextvars.ContextVar[Routing | None] = contextvars.ContextVar("routing", default=None)


@contextlib.contextmanager
def routing(change: Routing):
    """Route differently inside the `with` block only (per call and per thread, as hooks are)."""
    token = _ROUTING.set(change)
    try:
        yield
    finally:
        _ROUTING.reset(token)


def load_balancing_loss(router_logits: torch.Tensor, indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch Transformer's auxiliary loss, E * sum_e f_e * P_e (as transformers' Mixtral).

    f_e: share of tokens whose top-k includes expert e (the shares sum to K);
    P_e: mean router probability of e. Equals K when routing is perfectly even.
    """
    probs = torch.softmax(router_logits.reshape(-1, n_experts).float(), dim=-1)   # (N, E)
    chosen = F.one_hot(indices.reshape(probs.shape[0], -1), n_experts).sum(1)     # (N, E)
    return n_experts * (chosen.float().mean(0) * probs.mean(0)).sum()


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(cfg, hooked=False, width=cfg.d_expert) for _ in range(cfg.n_experts))
        if cfg.d_shared:
            self.shared_expert = MLP(cfg, hooked=False, width=cfg.d_shared)
            self.shared_expert_gate = nn.Linear(cfg.d_model, 1, bias=False)
            self.hook_shared_out = HookPoint()                 # (B, T, C) the gated shared expert's output [new]
        self.hook_router_logits = HookPoint()
        self.hook_expert_weights = HookPoint()
        self.hook_expert_indices = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        logits = self.router(x)                                # (B, T, E)
        if self.training and self.cfg.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.cfg.router_noise
        change = _ROUTING.get()
        if change is not None:
            logits = self._change(logits, change)
        logits = self.hook_router_logits(logits)
        weights, indices = route(logits, (change and change.top_k) or self.cfg.top_k,
                                 change.forced if change else None, self.cfg.renormalize)  # (B, T, K) each
        weights = self.hook_expert_weights(weights).to(x.dtype)
        indices = self.hook_expert_indices(indices)
        flat, out = x.reshape(-1, C), torch.zeros(B * T, C, dtype=x.dtype, device=x.device)
        flat_idx, flat_w = indices.reshape(B * T, -1), weights.reshape(B * T, -1)
        for e in indices.unique().tolist():                    # run each chosen expert once
            token, slot = torch.where(flat_idx == e)
            out.index_add_(0, token, self.experts[e](flat[token]) * flat_w[token, slot, None])
        out = out.view(B, T, C)
        if hasattr(self, "shared_expert"):
            out = out + self.hook_shared_out(torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x))
        return out

    def _change(self, logits: torch.Tensor, change: Routing) -> torch.Tensor:
        if change.noise > 0:  # seeded per layer, so a run can be repeated exactly
            g = torch.Generator(device=logits.device).manual_seed(change.seed * 1009 + self.layer)
            logits = logits + torch.randn(logits.shape, generator=g, device=logits.device) * change.noise
        if change.disabled:
            logits = logits.clone()
            logits[..., list(change.disabled)] = float("-inf")
        return logits
