"""Core of the explainer: one hooked transformer and everything around it.

Shape letters used in comments throughout `core`:
    B batch              T query positions      S key positions (cache included)
    H query heads        G key/value heads      D head width
    C model width        F FFN width            V vocabulary
    E experts            K experts per token
"""
from core.model.config import ModelConfig
from core.model.transformer import HookedTransformer

__all__ = ["ModelConfig", "HookedTransformer"]
