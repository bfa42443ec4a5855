"""The logit lens: read the residual stream after every layer as if it were the last one.

Each intermediate state goes through the model's own final norm and unembedding, so the
last row is exactly the model's prediction and earlier rows show how it forms layer by layer.
"""
from __future__ import annotations

import torch

from core.inputs import InputError
from core.model.transformer import HookedTransformer


@torch.no_grad()
def logit_lens(model: HookedTransformer, stream: torch.Tensor, k: int = 1) -> dict[str, torch.Tensor]:
    """The residual stream of one sequence, (L+1, T, C) as ActivationCache.accumulated_resid() gives it
    -> top-k token ids and probabilities (L+1, T, k) per layer and position, and the probability each layer
    gives the model's final top-1 token, final_prob (L+1, T)."""
    if model.unembed is None:
        raise InputError("This model has no output head, so there is nothing to read the stream with.")
    stream = stream.to(model.device)
    read = lambda x: model.head(model.ln_final(x) if model.ln_final is not None else x)
    final = read(stream[-1]).argmax(-1)                                     # (T,)
    top_ids, top_probs, final_prob = [], [], []
    for x in stream:  # one layer at a time: (T, V) probabilities, never (L+1, T, V)
        probs = read(x).softmax(-1)
        top = probs.topk(k, dim=-1)
        top_ids.append(top.indices)
        top_probs.append(top.values)
        final_prob.append(probs.gather(-1, final[:, None])[:, 0])
    return {"top_ids": torch.stack(top_ids).cpu(), "top_probs": torch.stack(top_probs).cpu(),
            "final_prob": torch.stack(final_prob).cpu()}
