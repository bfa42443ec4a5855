"""Widgets more than one tab builds: the code panel, and settings fitted to the model and the text.

A layer, head, position or expert-count slider's range depends on the model (its layers, heads, experts) and the
text (its tokens). A tab's handler fits each such setting with `fit_*` and returns the `Fit.slider` updates with
its figures: one handler moves the value, says so in the tab's note, and gives the slider the range it now has,
whether the model, the text or a link changed. Gradio refuses an input outside a slider's range ("Value 29 is
greater than maximum value 5"), so a slider's range and value always change together here."""
from __future__ import annotations

import inspect
import textwrap
from typing import NamedTuple

import gradio as gr

from core.inputs import fitted


def code_panel(*functions) -> None:
    """A closed panel with the source of the core functions that made a tab's figures, read from the running code."""
    with gr.Accordion("Code: the core functions behind these figures", open=False):
        for f in functions:
            gr.Code(textwrap.dedent(inspect.getsource(f)), language="python", label=f"{f.__module__}.{f.__qualname__}",
                    interactive=False)


class FittedSlider(gr.Slider):
    """A layer, head, position or expert-count slider: Gradio's own range check is left out, since its handler fits
    the value (`fit_*`, with a note). A link or a lesson step made for a bigger model or a longer text may meet the
    range a tab fitted earlier in the session; its value reaches the handler, which moves it and says so."""

    @classmethod
    def get_block_name(cls) -> str:
        return "slider"  # drawn by Gradio's slider

    def preprocess(self, payload):
        return payload


class Fit(NamedTuple):
    """A setting moved into the range the model and the text allow."""
    value: int         # the setting to use, in range
    note: str          # what was moved and why, for the tab's note; '' when it was in range
    slider: gr.Slider  # the slider's update: that range, that value


def fit(name: str, value, low: int, high: int, allowed: str = "") -> Fit:
    """Any whole-number setting from low to high; `allowed` says where the range comes from, for the note."""
    kept, note = fitted(name, value, low, high, allowed)
    return Fit(kept, note, gr.Slider(minimum=low, maximum=high, value=kept))


def fit_layer(model, layer, embeddings: bool = False) -> Fit:
    """A layer: 0 to the last block; with `embeddings`, 0 is the embeddings and l the stream after block l."""
    L = model.cfg.n_layers
    if embeddings:
        return fit("layer", layer, 0, L, f"{model.name} has {L} layers (0 = the embeddings, {L} = after the last)")
    return fit("layer", layer, 0, L - 1, f"{model.name} has {L} layers, 0 to {L - 1}")


def fit_head(model, head) -> Fit:
    H = model.cfg.n_heads
    return fit("head", head, 0, H - 1, f"{model.name} has {H} heads a layer, 0 to {H - 1}")


def fit_position(model, tokens: list, position) -> Fit:
    """A position in the text as this model reads it (-1 = the tab's default point, usually the last token)."""
    T = len(tokens)
    return fit("position", position, -1, T - 1,
               f"the text is {T} token{'s' if T != 1 else ''} for {model.name}, positions 0 to {T - 1} (or −1)")


def fit_experts(model, top_k) -> Fit:
    """The number of experts each token runs: 1 to all of them."""
    E = model.cfg.n_experts
    return fit("top-k", top_k, 1, E, f"{model.name} has {E} experts")
