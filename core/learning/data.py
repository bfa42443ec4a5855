"""The corpus and the batches the tiny models learn from.

Causal LM: a window of tokens, and the same window shifted by one as the targets.
Masked LM: BERT's rule, 15% of ordinary tokens chosen; of those 80% become [MASK],
10% a random token and 10% stay, and only the chosen positions count in the loss.
"""
from __future__ import annotations

import torch

from core.paths import CORPUS
from core.weights.tokenizers import WordTokenizer


def corpus_split(text: str | None = None) -> tuple[str, str]:
    text = text if text is not None else CORPUS.read_text()
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def clm_batch(data: torch.Tensor, B: int, T: int, g: torch.Generator):
    """B random windows: x is T tokens, y the same shifted by one (the next token at each position)."""
    start = torch.randint(0, len(data) - T - 1, (B,), generator=g)
    x = torch.stack([data[s:s + T] for s in start])
    y = torch.stack([data[s + 1:s + T + 1] for s in start])
    return x, y


def mlm_mask(ids: torch.Tensor, tok: WordTokenizer, g: torch.Generator, rate: float = 0.15):
    """BERT's rule: choose `rate` of the ordinary tokens; of those 80% -> [MASK], 10% -> random, 10% kept.

    Returns (inputs, labels) with labels -100 where the loss ignores the position.
    """
    special = torch.tensor(sorted(tok.special_ids))
    chosen = (torch.rand(ids.shape, generator=g) < rate) & ~torch.isin(ids, special)
    labels = ids.masked_fill(~chosen, -100)
    roll = torch.rand(ids.shape, generator=g)
    inputs = ids.masked_fill(chosen & (roll < 0.8), tok.mask_id)
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(len(tok.SPECIALS), tok.vocab_size, ids.shape, generator=g)
    return torch.where(randomise, random_ids, inputs), labels


def mlm_windows(data: torch.Tensor, tok: WordTokenizer, starts: torch.Tensor, T: int) -> torch.Tensor:
    """[CLS] w ... w [SEP] windows of T tokens."""
    body = torch.stack([data[s:s + T - 2] for s in starts])
    B = body.shape[0]
    return torch.cat([torch.full((B, 1), tok.cls_id), body, torch.full((B, 1), tok.sep_id)], dim=1)
