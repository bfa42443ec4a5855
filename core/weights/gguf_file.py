"""The 4-bit blocks SmolLM2 ships in: GGUF's Q4_1, read with the gguf package.

A Q4_1 block holds g = 32 weights as d and m (fp16), then 32 codes packed two to a byte: 20 bytes for 32
weights, 5 bits each, and w = d * code + m.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from core.inputs import InputError

Q4_1_BLOCK = 32                          # weights per GGUF Q4_1 block
GGUF_TO_OURS = {"attn_q": "attn.q_proj", "attn_k": "attn.k_proj", "attn_v": "attn.v_proj",
                "attn_output": "attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}


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
