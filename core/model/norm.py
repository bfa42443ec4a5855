"""Normalisation: rescale each vector to a standard length before a sublayer reads it.

    LayerNorm  y = (x - mean(x)) / sqrt(var(x) + eps) * gain + bias      GPT-2, BERT
    RMSNorm    y = x / sqrt(mean(x^2) + eps) * gain                      Llama, Qwen, Gemma, OLMo
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.model.config import ModelConfig
from core.model.hooks import HookPoint


class Norm(nn.Module):
    """LayerNorm (centre, scale, shift) or RMSNorm (scale only), with TransformerLens' two hooks:

        hook_scale       the divisor, sqrt(mean(x^2) + eps) of the (centred) vector    (B, T, 1)
        hook_normalized  the vector divided by it, before the gain and bias           (B, T, C)

    When no one hooks them, the fused kernels run (F.layer_norm, or Llama's fp32 RMSNorm)."""

    def __init__(self, cfg: ModelConfig, width: int | None = None):
        super().__init__()
        width = width or cfg.d_model                    # QK-norm normalises a head (D) or all heads (H D)
        self.rms, self.eps = cfg.norm == "rmsnorm", cfg.norm_eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = None if self.rms else nn.Parameter(torch.zeros(width))
        self.hook_scale, self.hook_normalized = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hook_scale.active() or self.hook_normalized.active():
            return self.steps(x)
        if self.rms:  # x / sqrt(mean(x^2) + eps), computed in fp32 as Llama does
            x32 = x.float()
            return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        """The same norm written out step by step, through the hooks."""
        x32 = x.float()
        if not self.rms:
            x32 = x32 - x32.mean(-1, keepdim=True)                               # LayerNorm centres first
        scale = self.hook_scale((x32.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        y = self.hook_normalized(x32 / scale).to(x.dtype)
        return y * self.weight if self.rms else y * self.weight + self.bias
