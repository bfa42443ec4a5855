"""Widgets more than one tab builds: the code panel, sliders fitted to the chosen model."""
from __future__ import annotations

import inspect
import textwrap

import gradio as gr

from core.inputs import InputError, fitted
from explainers.page.inputs import get_model


def code_panel(*functions) -> None:
    """A closed panel with the source of the core functions that made a tab's figures, read from the running code."""
    with gr.Accordion("Code: the core functions behind these figures", open=False):
        for f in functions:
            gr.Code(textwrap.dedent(inspect.getsource(f)), language="python", label=f"{f.__module__}.{f.__qualname__}",
                    interactive=False)


def fit_sliders(model_name: str, layer=None, head=None, blocks_plus_one: bool = False):
    """Layer and head sliders fitted to the model (layer 0..L when the embeddings count as a layer); a value given
    is moved into range, since a slider refuses a value above its maximum (one left where a bigger model put it)."""
    try:
        cfg = get_model(model_name).cfg
        tops = (cfg.n_layers if blocks_plus_one else cfg.n_layers - 1, cfg.n_heads - 1)
        values = [None if v is None else fitted(name, v, 0, top)[0] for name, v, top in
                  zip(("layer", "head"), (layer, head), tops)]
    except InputError:
        return gr.Slider(), gr.Slider()
    return tuple(gr.Slider(maximum=top) if v is None else gr.Slider(maximum=top, value=v) for v, top in zip(values, tops))


def fit_layer(model_name: str, layer=0):
    """The layer slider alone, fitted to the model, its value moved into range."""
    return fit_sliders(model_name, layer)[0]
