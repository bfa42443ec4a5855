"""ActivationCache: the hook values of one forward pass, read by kind and layer.

In the spirit of TransformerLens' ActivationCache: `cache["pattern", 3]` is
`blocks.3.attn.hook_pattern`, `cache.stack("z")` stacks one kind over the layers and
`cache.accumulated_resid()` is the residual stream after the embeddings and after every
block. Full hook names work too: `cache["blocks.3.attn.hook_pattern"]`.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

# kind -> where it lives inside blocks.{i}
BLOCK_KINDS = {
    "resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
    "ln1": "ln1.hook_normalized", "ln2": "ln2.hook_normalized", "ln1_scale": "ln1.hook_scale", "ln2_scale": "ln2.hook_scale",
    "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v", "rot_q": "attn.hook_rot_q", "rot_k": "attn.hook_rot_k",
    "mask": "attn.hook_mask", "attn_scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern",
    "z": "attn.hook_z", "pre": "mlp.hook_pre", "post": "mlp.hook_post",
    "router_logits": "moe.hook_router_logits", "expert_weights": "moe.hook_expert_weights",
    "expert_indices": "moe.hook_expert_indices",
}
# kind -> full name, outside the blocks
MODEL_KINDS = {"tokens": "hook_tokens", "embed": "hook_embed", "pos_embed": "hook_pos_embed",
               "ln_final": "ln_final.hook_normalized", "ln_final_scale": "ln_final.hook_scale", "logits": "unembed.hook_out"}


def act_name(kind: str, layer: int | None = None) -> str:
    """The hook name of a kind: act_name("pattern", 3) == "blocks.3.attn.hook_pattern"."""
    if layer is None:
        if kind not in MODEL_KINDS:
            raise KeyError(f"{kind!r} lives in every block: give a layer, e.g. ({kind!r}, 0)")
        return MODEL_KINDS[kind]
    if kind not in BLOCK_KINDS:
        raise KeyError(f"no hook kind {kind!r} in a block; kinds: {', '.join(BLOCK_KINDS)}")
    return f"blocks.{layer}.{BLOCK_KINDS[kind]}"


def resid_names(n_layers: int) -> list[str]:
    """The residual stream after the embeddings (what block 0 reads), then after each block."""
    return [act_name("resid_pre", 0)] + [act_name("resid_post", i) for i in range(n_layers)]


def kinds(*wanted: str):
    """A `names=` predicate for run_with_cache: these kinds in every layer (and top-level kinds by name)."""
    ends = tuple("." + BLOCK_KINDS[k] for k in wanted if k in BLOCK_KINDS)
    top = {MODEL_KINDS[k] for k in wanted if k in MODEL_KINDS}
    unknown = [k for k in wanted if k not in BLOCK_KINDS and k not in MODEL_KINDS]
    if unknown:
        raise KeyError(f"no hook kind {unknown[0]!r}")
    return lambda name: name in top or name.endswith(ends)


class ActivationCache(Mapping):
    """{hook name: tensor}, readable as cache[name], cache[kind, layer] or cache[kind] for top-level hooks."""

    def __init__(self, values: dict[str, torch.Tensor], n_layers: int):
        self._values, self.n_layers = values, n_layers

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):
            kind, layer = key
            return self._values[act_name(kind, layer % self.n_layers)]
        return self._values[key] if key in self._values else self._values[act_name(key)]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def stack(self, kind: str) -> torch.Tensor:
        """(L, ...): one kind from every layer, e.g. stack("pattern") is (L, B, H, T, S)."""
        return torch.stack([self[kind, i] for i in range(self.n_layers)])

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        """{kind: value} of the hooks recorded in block i."""
        return {kind: self._values[act_name(kind, i)] for kind in BLOCK_KINDS if act_name(kind, i) in self._values}

    def accumulated_resid(self) -> torch.Tensor:
        """(L + 1, ...): the residual stream after the embeddings, then after each block (see resid_names)."""
        return torch.stack([self._values[name] for name in resid_names(self.n_layers)])

    def remove_batch_dim(self) -> ActivationCache:
        """The first (only) sequence of a batch of one: every value loses its leading dimension of 1."""
        return ActivationCache({name: value[0] for name, value in self._values.items()}, self.n_layers)

    def to(self, device) -> ActivationCache:
        return ActivationCache({name: value.to(device) for name, value in self._values.items()}, self.n_layers)
