"""Reading vectors out of a model: static token embeddings, contextual hidden states, RoPE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.inputs import InputError
from core.model.cache import act_name, resid_names
from core.model.positional import apply_rope, rope_cos_sin, rope_inv_freq
from core.model.transformer import HookedTransformer


def word_vectors(model: HookedTransformer, words: list[str]) -> tuple[torch.Tensor, list[int]]:
    """(N, C) input embeddings of words; a word split into several tokens gets their mean.

    Also returns how many tokens each word took, so the picture can say which were split.
    """
    vectors, counts = [], []
    # byte-level BPE spells a word inside a sentence with its leading space: "␣queen" is one token
    prefix = " " if getattr(model.tokenizer, "byte_level", False) else ""
    for word in words:
        ids = [t.id for t in model.tokenizer.tokens(prefix + word) if not t.special]
        if not ids:
            raise InputError(f"{word!r} has no tokens in this model's vocabulary")
        vectors.append(model.embed.weight[ids].mean(0))
        counts.append(len(ids))
    return torch.stack(vectors), counts


def nearest_tokens(model: HookedTransformer, vector: torch.Tensor, k: int = 10, exclude=()) -> list[tuple[int, float]]:
    """The k vocabulary entries whose embeddings have the largest cosine similarity with vector."""
    sims = F.cosine_similarity(model.embed.weight, vector[None], dim=-1)   # (V,)
    if exclude:
        sims[list(exclude)] = -2.0
    top = sims.topk(min(k, len(sims)))
    return list(zip(top.indices.tolist(), top.values.tolist()))


@torch.no_grad()
def hidden_states(model: HookedTransformer, ids: torch.Tensor) -> torch.Tensor:
    """(L + 1, T, C): the residual stream entering each block, then after the last one.

    Row 0 is the embedding layer (token + position); row i the output of block i.
    """
    _, cache = model.run_with_cache(ids.reshape(1, -1), names=resid_names(model.cfg.n_layers), logits=False)
    return cache.remove_batch_dim().accumulated_resid()


def cosine_by_layer(states: torch.Tensor, i: int, j: int) -> list[float]:
    """Cosine similarity of positions i and j at every layer of hidden_states()."""
    return F.cosine_similarity(states[:, i], states[:, j], dim=-1).tolist()


def rope_scores(D: int, theta: float, positions: int, seed: int = 0) -> torch.Tensor:
    """(P, P) dot products of one fixed query rotated to position m and one key rotated to n.

    Every diagonal is constant: RoPE makes q.k depend only on the offset m - n.
    """
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 1, D, generator=g), torch.randn(1, 1, 1, D, generator=g)
    cos, sin = rope_cos_sin(torch.arange(positions), rope_inv_freq(D, theta))           # (P, D)
    q_rot = apply_rope(q.expand(1, positions, 1, D), cos, sin)[0, :, 0]                 # (P, D)
    k_rot = apply_rope(k.expand(1, positions, 1, D), cos, sin)[0, :, 0]
    return q_rot @ k_rot.T


@torch.no_grad()
def prefix_change(model: HookedTransformer, ids_a: list[int], ids_b: list[int]) -> tuple[int, float]:
    """(length of the shared prefix, max |difference| of the final hidden states over it).

    In a causal model a position sees only itself and the past, so editing later tokens
    cannot change the earlier outputs: the difference is exactly 0. Bidirectional models
    let every position see the edit.
    """
    shared = next((i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if a != b), min(len(ids_a), len(ids_b)))
    if shared == 0:
        raise InputError("The two texts differ from their first token; edit the end instead.")
    # Both texts go through one batched forward, padded to one length after the edit (where a
    # causal model cannot see it): the shared rows then meet the same kernels with the same
    # shapes, so floating-point rounding cannot differ (MoE experts batch tokens by routing).
    T = max(len(ids_a), len(ids_b))
    ids = torch.tensor([list(x) + [x[-1]] * (T - len(x)) for x in (ids_a, ids_b)], device=model.device)
    last = act_name("resid_post", model.cfg.n_layers - 1)
    out = model.run_with_cache(ids, names=[last], logits=False)[1][last][:, :shared]
    return shared, (out[0] - out[1]).abs().max().item()
