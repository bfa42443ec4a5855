"""One recorded forward per (model, token ids, intervention), shared by every tab that reads it.

The attention, causal-mask, LM-head, embeddings and MoE tabs all draw from `run(...)`: the same text
opened in another tab, or a slider that only changes the drawing, does not run the model again.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from core.model.cache import ActivationCache, kinds, resid_names
from explainers.page.inputs import get_model
from explainers.page.serving import shared

ATTENTION_TOKENS = 64  # Q, K, V, masks, patterns and each sublayer's output are kept for sequences up to this long
_DETAIL = kinds("q", "k", "v", "rot_q", "rot_k", "mask", "pattern", "z", "embed", "pos_embed", "resid_mid",
                   "attn_out", "mlp_out")
_ROUTING = kinds("router_logits", "expert_weights", "expert_indices")


class Run:
    """A forward of one sequence: its hook values (batch dimension removed, on the CPU), its final hidden
    states, and the logits of a position, unembedded when first asked for: a tab that reads only hook values
    never pays for them, and one that reads a position pays for that one (SmolLM2's head is 49,152 rows)."""

    def __init__(self, model, cache: ActivationCache, hidden: torch.Tensor):
        self.model, self.cache, self.hidden = model, cache, hidden                # hidden (T, C)
        self._logits: dict[int, torch.Tensor] = {}

    def logits(self, position: int) -> torch.Tensor:
        """(V,) at this position (negative counts from the end), on the CPU."""
        if self.hidden is None:
            raise ValueError("a forward that stopped before the last block has no logits")
        position %= len(self.hidden)
        if position not in self._logits:
            with torch.no_grad():
                self._logits[position] = self.model.head(self.hidden[None, position:position + 1])[0, 0].float().cpu()
        return self._logits[position]


@shared(8, key=lambda args: (*args, None, None)[:4])  # run(m, ids) and run(m, ids, None) are the same forward
def run(model_name: str, ids: tuple[int, ...], change=None, layers: int | None = None) -> Run:
    """The recorded forward of these token ids, with an intervention (core.model.attention.ZeroHeads, MaskOverride,
    core.model.moe.Routing: anything with .apply(model)) or none. Records the residual stream and expert routing, and,
    when the sequence is short enough to draw them, attention's Q, K, V, mask, pattern and z, the embeddings and
    what each sublayer adds to the stream (attn_out, resid_mid, mlp_out). layers=n runs blocks 0..n-1 only:
    see `run_upto`."""
    model = get_model(model_name)
    stream = set(resid_names(model.cfg.n_layers))
    wanted = lambda n: n in stream or _ROUTING(n) or (len(ids) <= ATTENTION_TOKENS and _DETAIL(n))
    with change.apply(model) if change is not None else nullcontext():
        hidden, cache = model.run_with_cache(torch.tensor([ids], device=model.device), names=wanted, logits=False,
                                             stop=layers)
    return Run(model, cache.remove_batch_dim().to("cpu"), hidden[0] if layers is None else None)


def run_upto(model_name: str, ids: tuple[int, ...], change, layer: int) -> Run:
    """A recorded forward that reaches block `layer`: the whole one if it is at hand, else blocks 0..layer alone.
    A tab that draws one layer (the causal mask) skips the blocks above it: on average half the model's work
    for a new text, which a class of learners each typing their own feels."""
    model = get_model(model_name)
    for depth in (None, *range(layer + 1, model.cfg.n_layers + 1)):  # the whole forward, or one that went deeper
        recorded = run.peek(model_name, ids, change, depth)
        if recorded is not None:
            return recorded
    return run(model_name, ids, change, layer + 1)


def forget_runs() -> None:
    """Drop every recorded forward (benchmarks time a new text)."""
    run.cache_clear()


def prediction_position(model, ids) -> int:
    """Where a tab reads the model's prediction: the first [MASK] for a masked LM, else the last token."""
    mask_id = getattr(model.tokenizer, "mask_id", None)
    if model.cfg.head == "mlm" and mask_id in ids:
        return list(ids).index(mask_id)
    return len(ids) - 1
