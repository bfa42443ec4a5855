"""Feed-forward sublayer: the same small network applied to every position separately.

    plain:  down(act(up(x)))               GPT-2, BERT (GELU)
    gated:  down(act(gate(x)) * up(x))     Llama's SwiGLU (act = SiLU), Gemma's GeGLU (act = GELU)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.model.config import ModelConfig
from core.model.hooks import HookPoint

ACTIVATIONS = {
    "gelu": F.gelu,                                            # exact, BERT
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),      # GPT-2's "gelu_new", Gemma's GeGLU
    "relu": F.relu,
    "silu": F.silu,                                            # x * sigmoid(x)
}


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, hooked: bool = True, width: int | None = None):
        super().__init__()
        C, F_ = cfg.d_model, width or cfg.d_ff
        bias = cfg.bias and not cfg.gated_ffn
        self.act = ACTIVATIONS[cfg.act]
        self.gate_proj = nn.Linear(C, F_, bias=bias) if cfg.gated_ffn else None
        self.up_proj = nn.Linear(C, F_, bias=bias)
        self.down_proj = nn.Linear(F_, C, bias=bias)
        # MoE experts are MLPs too; their hooks would fire on a varying subset of tokens
        self.hook_pre = HookPoint() if hooked else nn.Identity()
        self.hook_post = HookPoint() if hooked else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            pre = self.hook_pre(self.up_proj(x))               # (B, T, F)
            post = self.hook_post(self.act(pre))
        else:
            pre = self.hook_pre(self.gate_proj(x))             # (B, T, F)
            post = self.hook_post(self.act(pre) * self.up_proj(x))
        return self.down_proj(post)                            # (B, T, C)
