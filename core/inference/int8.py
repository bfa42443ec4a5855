"""Int8 weights for generation: each linear layer stores int8 codes and one scale per row, and multiplies
with PyTorch's weight-only int8 kernel (README: Benchmarks, quantized)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.analysis.quantization import block_linears, quantize_int8, replace, shallow_copy
from core.model.transformer import HookedTransformer


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (N, K) and one fp32 scale per output row, for generation.

    On the CPU it runs torch._weight_int8pack_mm, PyTorch's weight-only int8 product: it reads 1 byte per weight
    instead of 4. The kernel takes bf16 activations (its fp32 and fp16 paths are a plain loop on CPUs
    without AVX-512), and bf16 keeps 8 bits of mantissa; so x is split as x = hi + lo, both bf16, and the two
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
