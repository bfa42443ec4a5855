"""Hook points: named places in the forward pass where a caller can look or intervene.

A HookPoint is an identity module. Which functions run at it is decided per call,
not per module: `hooks({name: fn})` sets a context variable for the duration of a
`with` block and always resets it, so two threads sharing one model never see each
other's hooks and an exception never leaves a hook behind.

A hook function is `fn(value, hook) -> value | None`; returning a tensor replaces
the value (ablation, patching), returning None only reads it (caching).
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]
# the hooks of the current call; never changed in place: hooks() sets a new mapping and resets it after
_ACTIVE: contextvars.ContextVar[Mapping[str, tuple[HookFn, ...]]] = contextvars.ContextVar(
    "hooks", default=MappingProxyType({}))


class HookPoint(nn.Module):
    """Identity, unless the current call registered functions under this point's name."""

    def __init__(self):
        super().__init__()
        self.name = ""  # filled in from the module tree by HookedTransformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in _ACTIVE.get().get(self.name, ()):
            out = fn(x, self)
            if out is not None:
                x = out
        return x

    def active(self) -> bool:
        return self.name in _ACTIVE.get()


@contextlib.contextmanager
def hooks(fns: dict[str, HookFn | Iterable[HookFn]]):
    """Run the `with` block with these hooks added to any already active."""
    merged = dict(_ACTIVE.get())
    for name, fn in fns.items():
        merged[name] = merged.get(name, ()) + (tuple(fn) if isinstance(fn, (list, tuple)) else (fn,))
    token = _ACTIVE.set(merged)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def select(all_names: list[str], names=None) -> list[str]:
    """Hook names chosen by None (all), a predicate, a single name or a list of names."""
    if names is None:
        return list(all_names)
    if callable(names):
        return [n for n in all_names if names(n)]
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = sorted(set(wanted) - set(all_names))
    if unknown:
        raise KeyError(f"no hook point named {unknown[0]!r}")
    return wanted
