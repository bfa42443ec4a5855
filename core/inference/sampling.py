"""From logits to the next token: temperature, then top-k, then top-p, then a draw.

Each step is a pure function on a logits tensor (..., V) that returns filtered logits,
with -inf marking tokens that can no longer be drawn; `stages` keeps every one so
the LM-head tab can show what each step removed. The filters match transformers'
TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.inputs import InputError


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0   # 0 means greedy (always the most likely token)
    top_k: int = 0             # keep the k most likely tokens; 0 keeps all
    top_p: float = 1.0         # keep the smallest set whose probability reaches p; 1 keeps all

    def check(self) -> SamplingSettings:
        if not self.temperature >= 0:
            raise InputError(f"temperature must be 0 or more, got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"top-k must be 0 (off) or a positive count, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top-p must be in (0, 1], got {self.top_p}")
        return self


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T: T < 1 sharpens the distribution, T > 1 flattens it."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (ties with the k-th kept too), -inf elsewhere."""
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: drop the least likely tokens whose probabilities add up to at most 1 - p."""
    sorted_logits, order = logits.sort(dim=-1)                             # ascending
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - p
    drop_sorted[..., -1] = False                                           # always keep the best token
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def stages(logits: torch.Tensor, settings: SamplingSettings) -> dict[str, torch.Tensor]:
    """Every intermediate: logits, after temperature, after top-k, after top-p, probabilities."""
    s = settings.check()
    out = {"logits": logits}
    if s.temperature == 0:  # greedy: only the argmax survives
        greedy = torch.full_like(logits, float("-inf")).scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
        out.update(temperature=greedy, top_k=greedy, top_p=greedy)
    else:
        out["temperature"] = apply_temperature(logits, s.temperature)
        out["top_k"] = top_k_filter(out["temperature"], s.top_k) if s.top_k else out["temperature"]
        out["top_p"] = top_p_filter(out["top_k"], s.top_p) if s.top_p < 1 else out["top_k"]
    out["probs"] = out["top_p"].softmax(dim=-1)
    return out


def sample(logits: torch.Tensor, settings: SamplingSettings = SamplingSettings(),
           generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (..., V) -> token ids (...), drawn from the filtered distribution."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    probs = stages(logits, settings)["probs"]
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def draw(probs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Counts (V,) of n independent seeded draws from probs (V,): the sampling lab's histogram."""
    generator = torch.Generator(device=probs.device).manual_seed(seed)
    picks = torch.multinomial(probs, n, replacement=True, generator=generator)
    return picks.bincount(minlength=probs.numel())
