"""Activation patching: where in the model does the answer live?

Run a clean prompt ("The Eiffel Tower is in the city of" -> " Paris") and a corrupted one of the same
length ("The Colosseum is in the city of" -> " Rome"). Then run the corrupted prompt again, copying one
activation in from the clean run, and measure how much of the clean answer comes back:

    logit difference  ld = logit(answer) - logit(wrong)                  at the last position
    restored          (ld_patched - ld_corrupted) / (ld_clean - ld_corrupted)   0 = nothing, 1 = all of it

A sweep patches every layer and position (or head): one batched forward per layer, each sequence of the
batch patched at a different place.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from core.inputs import InputError
from core.model.cache import ActivationCache, act_name, kinds
from core.model.transformer import HookedTransformer

KINDS = {"resid_pre": "the residual stream", "attn_out": "attention's output", "mlp_out": "the FFN's output",
         "z": "one head's output"}


def logit_diff(logits: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    """(..., V) -> (...,): how much more the model favours the answer than the wrong token."""
    return logits[..., answer] - logits[..., wrong]


@torch.no_grad()
def run_patched(model: HookedTransformer, corrupt: torch.Tensor, clean: ActivationCache, kind: str, layer: int,
                positions=None, head: int | None = None) -> torch.Tensor:
    """The corrupted ids (T,) run with the clean value of one hook (kind, layer) at these positions (all when
    None), for one head only when kind is "z". Returns the logits (T, V). One forward, no batching: the
    reference the sweep is tested against."""
    name, source = act_name(kind, layer), clean[kind, layer]                    # source (T, C) or (T, H, D)
    where = slice(None) if positions is None else list(positions)

    def patch(x, hook):
        x = x.clone()
        if head is None:
            x[0, where] = source[where].to(x)
        else:
            x[0, where, head] = source[where, head].to(x)
        return x

    with model.hooks({name: patch}):
        return model(corrupt[None])[0]


@torch.no_grad()
def sweep(model: HookedTransformer, clean_ids: torch.Tensor, corrupt_ids: torch.Tensor, answer: int, wrong: int,
          kind: str = "resid_pre", progress: Callable[[int], None] | None = None) -> dict:
    """Patch (kind, layer) from the clean run into the corrupted one at every layer and position (kind "z": at
    every head, all positions). Returns restored (L, T) or (L, H), the clean and corrupted logit differences and
    the token each run predicts."""
    if kind not in KINDS:
        raise InputError(f"Patch one of: {', '.join(KINDS)}.")
    if clean_ids.shape != corrupt_ids.shape:
        raise InputError(f"The prompts must have the same number of tokens (clean {clean_ids.numel()}, corrupted "
                         f"{corrupt_ids.numel()}): patching copies position by position.")
    clean_logits, clean = model.run_with_cache(clean_ids[None], names=kinds(kind))
    corrupt_logits, corrupt = model.run_with_cache(corrupt_ids[None], names=kinds("resid_pre"))
    clean, corrupt = clean.remove_batch_dim(), corrupt.remove_batch_dim()
    ld_clean = float(logit_diff(clean_logits[0, -1], answer, wrong))
    ld_corrupt = float(logit_diff(corrupt_logits[0, -1], answer, wrong))
    if abs(ld_clean - ld_corrupt) < 1e-6:
        raise InputError("The clean and corrupted prompts give the same logit difference, so nothing can be "
                         "restored: pick prompts where the answers differ.")
    T, n = corrupt_ids.numel(), (model.cfg.n_heads if kind == "z" else corrupt_ids.numel())
    batch, b = corrupt_ids[None].expand(n, T), torch.arange(n)                     # sequence b patches place b
    restored = torch.zeros(model.cfg.n_layers, n)
    for layer in range(model.cfg.n_layers):
        source = clean[kind, layer].to(model.device)
        # every sequence of the batch is the corrupted run up to this layer: start there, not at the embeddings
        start = corrupt["resid_pre", layer].to(model.device).expand(n, T, -1).clone()  # (n, T, C)

        def patch(x, hook, source=source):
            x = x.clone()
            if kind == "z":
                x[b, :, b] = source.transpose(0, 1)                             # sequence h gets head h's z
            else:
                x[b, b] = source                                                # sequence p gets position p
            return x

        if kind == "resid_pre":
            start, hooks = patch(start, None), {}
        else:
            hooks = {act_name(kind, layer): patch}
        with model.hooks(hooks):
            ld = logit_diff(model(batch, last_only=True, resume=(layer, start))[:, -1], answer, wrong)  # (n,)
        restored[layer] = ((ld - ld_corrupt) / (ld_clean - ld_corrupt)).float().cpu()
        if progress is not None:
            progress(layer)
    return dict(restored=restored, clean=ld_clean, corrupt=ld_corrupt, clean_top=int(clean_logits[0, -1].argmax()),
                corrupt_top=int(corrupt_logits[0, -1].argmax()))
