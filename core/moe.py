"""Mixture of experts: a router sends each token to K of E expert FFNs.

    router_logits = x W_r                               (B, T, E)
    probs         = softmax(router_logits)
    top-K experts by probability, weights renormalised to sum to 1
    out           = sum_k weight_k * expert_k(x)

Only K of the E experts run for a token, so the model holds E FFNs' parameters but
spends about K FFNs' compute per token. Noisy top-k adds Gaussian noise to the router
logits while training so that every expert gets tried; the load-balancing loss
pushes the router to spread tokens evenly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ModelConfig
from core.hooks import HookPoint
from core.mlp import MLP


def route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., E) logits -> top-k (weights renormalised to sum to 1, expert indices), each (..., K)."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, indices = probs.topk(k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), indices


def load_balancing_loss(router_logits: torch.Tensor, indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch Transformer's auxiliary loss, E * sum_e f_e * P_e (as transformers' Mixtral).

    f_e: share of tokens whose top-k includes expert e (the shares sum to K);
    P_e: mean router probability of e. Equals K when routing is perfectly even.
    """
    probs = torch.softmax(router_logits.reshape(-1, n_experts).float(), dim=-1)   # (N, E)
    chosen = F.one_hot(indices.reshape(probs.shape[0], -1), n_experts).sum(1)     # (N, E)
    return n_experts * (chosen.float().mean(0) * probs.mean(0)).sum()


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(cfg, hooked=False) for _ in range(cfg.n_experts))
        self.hook_router_logits = HookPoint()
        self.hook_expert_weights = HookPoint()
        self.hook_expert_indices = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        logits = self.router(x)                                # (B, T, E)
        if self.training and self.cfg.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.cfg.router_noise
        logits = self.hook_router_logits(logits)
        weights, indices = route(logits, self.cfg.top_k)       # (B, T, K) each
        weights = self.hook_expert_weights(weights).to(x.dtype)
        indices = self.hook_expert_indices(indices)
        flat, out = x.reshape(-1, C), torch.zeros(B * T, C, dtype=x.dtype, device=x.device)
        flat_idx, flat_w = indices.reshape(B * T, -1), weights.reshape(B * T, -1)
        for e in indices.unique().tolist():                    # run each chosen expert once
            token, slot = torch.where(flat_idx == e)
            out.index_add_(0, token, self.experts[e](flat[token]) * flat_w[token, slot, None])
        return out.view(B, T, C)
