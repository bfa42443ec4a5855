"""The logit lens: read the residual stream after every layer as if it were the last one.

Each intermediate state goes through the model's own final norm and unembedding, so the
last row is exactly the model's prediction and earlier rows show how it forms layer by layer.
"""
from __future__ import annotations

import torch

from core.model import HookedTransformer


def stream_names(n_layers: int) -> list[str]:
    """The residual stream after the embeddings, then after each block."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]


def stream(cache: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """(L + 1, ...): the residual stream read from a cache that recorded stream_names(n_layers)."""
    return torch.stack([cache[name] for name in stream_names(n_layers)])


@torch.no_grad()
def logit_lens(model: HookedTransformer, ids: torch.Tensor, k: int = 1) -> dict[str, torch.Tensor]:
    """ids (T,) -> top-k token ids and probabilities (L+1, T, k) per layer and position, and the
    probability each layer gives the model's final top-1 token, final_prob (L+1, T)."""
    if model.unembed is None:
        raise ValueError("this model has no output head, so there is nothing to read the stream with")
    names = stream_names(model.cfg.n_layers)
    logits, cache = model.run_with_cache(ids.reshape(1, -1).to(model.device), names=names)
    final = logits[0].argmax(-1)                                            # (T,)
    top_ids, top_probs, final_prob = [], [], []
    for name in names:  # one layer at a time: (T, V) probabilities, never (L+1, T, V)
        x = cache[name][0]
        probs = model.unembed(model.ln_final(x) if model.ln_final is not None else x, model.embed.weight).softmax(-1)
        top = probs.topk(k, dim=-1)
        top_ids.append(top.indices)
        top_probs.append(top.values)
        final_prob.append(probs.gather(-1, final[:, None])[:, 0])
    return {"top_ids": torch.stack(top_ids).cpu(), "top_probs": torch.stack(top_probs).cpu(),
            "final_prob": torch.stack(final_prob).cpu()}
