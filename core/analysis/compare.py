"""Two models on one text: numbers that can be set side by side although the models differ in depth, width,
tokenizer and vocabulary.

Depth is normalised (block i of L sits at (i + 1) / L), attention is summarised by its entropy, and the two
next-token distributions are compared by the text of their tokens, because their ids number different
vocabularies.
"""
from __future__ import annotations

import torch

from core.model.attention import pattern_summary


def depths(n_layers: int) -> torch.Tensor:
    """(L + 1,) the depth of the stream after the embeddings (0) and after each block (i + 1) / L."""
    return torch.arange(n_layers + 1) / n_layers


def stream_length(stream: torch.Tensor, position: int = -1) -> torch.Tensor:
    """(L + 1, T, C) residual stream (ActivationCache.accumulated_resid) -> (L + 1,) its length at one position,
    after the embeddings and after each block."""
    return stream[:, position].norm(dim=-1)


def attention_entropy(patterns: torch.Tensor) -> torch.Tensor:
    """(L, H, T, S) attention patterns -> (L,) entropy in nats, averaged over heads and query positions.
    A masked entry is 0 and adds nothing (0 log 0 = 0); 0 means every query looks at one key only."""
    return pattern_summary(patterns)["entropy"].mean(-1)       # (L, H) per head, as the attention tab shows it


def uniform_entropy(mask: torch.Tensor) -> float:
    """(T, S) additive mask (0 or a bias where a query may look, -inf where not) -> the entropy in nats of
    attention spread evenly over the keys each query may see, averaged over queries: the most it can be. A causal
    query t sees t + 1 keys, so a model's entropy is bounded by how many tokens its tokenizer made of the text."""
    return float(torch.isfinite(mask).sum(-1).float().log().mean())


def top_k_texts(probs: torch.Tensor, tokenizer, k: int = 10) -> list[tuple[str, float]]:
    """(V,) next-token probabilities -> the k most likely tokens as (decoded text, probability), most likely first."""
    top = probs.topk(k)
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


def top_k_overlap(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> list[str]:
    """The token texts in both top-k lists, in a's order. Matched by text, not id: two tokenizers number their
    vocabularies differently, so id 262 is ' the' in one and something else in the other. Text is compared
    exactly: ' Paris' (with its space) and 'Paris' are different tokens."""
    theirs = {text for text, _ in b}
    return list(dict.fromkeys(text for text, _ in a if text in theirs))
