"""Activation patching tab: copy activations from a clean run into a corrupted one and see where the answer lives."""
from __future__ import annotations

import time

import gradio as gr
import plotly.graph_objects as go
import torch

from core.analysis.patching import logit_diff, run_patched, sweep
from core.inputs import InputError, text_to_tokens
from explainers.draw.figures import figure, grid, on, piece, placeholder, scale, token_labels
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View

TITLE = "Activation patching"
INTRO = r"""### Where does the answer live?
Run a **clean** prompt and a **corrupted** one that differs in a word and so gets another answer. Then run
the corrupted prompt again, but copy one activation in from the clean run: one layer's residual stream
at one position, one attention or FFN output, or one head. If the clean answer comes back, that
activation carried it. The colour is the share of the logit difference restored:

$$\text{restored} = \frac{LD_{\text{patched}} - LD_{\text{corrupted}}}{LD_{\text{clean}} - LD_{\text{corrupted}}}
\qquad LD = \text{logit(answer)} - \text{logit(wrong)}$$

0 means the patch changed nothing, 1 means it brought the whole clean answer back."""

SWEEPS = {"residual stream": ["resid_pre"], "attention and FFN outputs": ["attn_out", "mlp_out"], "heads": ["z"]}
TITLES = {"resid_pre": "residual stream (block input)", "attn_out": "attention output", "mlp_out": "FFN output",
          "z": "each head's output (all positions)"}
MAX_TOKENS = 48
PRESETS = [["The Eiffel Tower is in the city of", "The Colosseum is in the city of", " Paris", " Rome"],
           ["When John and Mary went to the store, John gave a drink to",
            "When John and Mary went to the store, Mary gave a drink to", " Mary", " John"],
           ["The capital of France is", "The capital of Italy is", " Paris", " Rome"],
           ["the king and quee", "the lord and ladi", "n", "e"]]


def one_token(model, text, role: str) -> tuple[int, str]:
    """The id of a single answer token, with a warning when the text is several tokens (the first is used)."""
    if text is None or not str(text):
        raise InputError(f"Type the {role} token (with its leading space where the model writes one, e.g. ' Paris').")
    ids = model.tokenizer.encode(str(text)[:50])
    if not ids:
        raise InputError(f"The {role} {text!r} gives no token for this model.")
    note = f"Warning: the {role} {text!r} is {len(ids)} tokens; only the first, {piece(model.tokenizer, ids[0])!r}, " \
        "is compared." if len(ids) > 1 else ""
    return ids[0], note


def patch_figure(results: dict[str, torch.Tensor], labels: list[str], heads: int) -> go.Figure:
    """One heatmap per patched kind: layers down, positions (or heads) across; blue = restored, red = made worse."""
    kinds = list(results)
    layout = grid(len(kinds), titles=[TITLES[k] for k in kinds], gap=(0.06, 0),
                  y=dict(autorange="reversed", title=dict(text="layer")))
    traces = []
    for i, kind in enumerate(kinds):
        r = results[kind]
        x = [f"H{h}" for h in range(heads)] if kind == "z" else labels
        traces.append(dict(type="heatmap", z=r.numpy(), x=x, y=list(range(r.shape[0])), colorscale=scale("RdBu"),
                           zmin=-1, zmax=1, xgap=1, ygap=1, showscale=i == len(kinds) - 1,
                           colorbar=dict(title=dict(text="restored")),
                           hovertemplate="layer %{y}, %{x}: %{z:.2f}<extra></extra>", **on(i)))
        layout[f"xaxis{i + 1 if i else ''}"].update(tickangle=-60, tickfont=dict(size=10), type="category")
    L = next(iter(results.values())).shape[0]
    return figure(traces, **layout, height=max(320, 120 + 16 * L))


def prepare(model_name: str, clean_text: str, corrupt_text: str, answer_text: str, wrong_text: str):
    model = get_model(model_name)
    if model.unembed is None or not model.cfg.causal:
        raise InputError(f"{model_name} does not predict a next token, and patching compares next-token logits. "
                         "Pick a decoder: smollm2-135m, tiny-gpt-char or tiny-moe.")
    clean, note_clean = text_to_tokens(model, clean_text, MAX_TOKENS)
    corrupt, note_corrupt = text_to_tokens(model, corrupt_text, MAX_TOKENS)
    if len(clean) != len(corrupt):
        raise InputError(f"The clean prompt is {len(clean)} tokens and the corrupted one {len(corrupt)}: patching "
                         "copies position by position, so they must be the same length. Change a word for one "
                         "of the same number of tokens.")
    answer, note_answer = one_token(model, answer_text, "answer")
    wrong, note_wrong = one_token(model, wrong_text, "wrong answer")
    if answer == wrong:
        raise InputError("The answer and the wrong answer are the same token; pick two different ones.")
    return model, clean, corrupt, answer, wrong, join_notes(note_clean, note_corrupt, note_answer, note_wrong)


def summary(tokenizer, swept: dict, answer: int, wrong: int) -> str:
    """What each prompt predicts, and the two logit differences the colours are measured between."""
    runs = [("clean", swept["clean_top"], swept["clean"]), ("corrupted", swept["corrupt_top"], swept["corrupt"])]
    return "; ".join(f"**{name}** predicts {piece(tokenizer, top)!r} (logit difference {ld:+.2f})"
                     for name, top, ld in runs) + \
        f". Answer {piece(tokenizer, answer)!r}, wrong {piece(tokenizer, wrong)!r}."


class Stopped(Exception):
    """The job was cancelled or passed its cap in the middle of a sweep."""


def update(model_name: str, clean_text: str, corrupt_text: str, answer_text: str, wrong_text: str, chosen, job: Job,
           progress=gr.Progress()):
    """Each chosen sweep in turn, the figure redrawn after each (a generator: Gradio shows it as it comes). The job
    is asked whether to stop after every layer."""
    model, clean, corrupt, answer, wrong, notes = prepare(model_name, clean_text, corrupt_text, answer_text, wrong_text)
    kinds = [k for label in (chosen or []) if label in SWEEPS for k in SWEEPS[label]]
    if not kinds:
        raise InputError("Tick at least one thing to patch: the residual stream, the sublayer outputs or the heads.")
    clean_ids = torch.tensor([t.id for t in clean], device=model.device)
    corrupt_ids = torch.tensor([t.id for t in corrupt], device=model.device)
    results, L = {}, model.cfg.n_layers

    def tick(step: int, layer: int) -> None:
        progress((step * L + layer + 1) / (len(kinds) * L), desc=f"patching {TITLES[kinds[step]]}, layer {layer}")
        if job.should_stop():
            raise Stopped

    started = time.monotonic()
    for step, kind in enumerate(kinds):
        try:
            swept = sweep(model, clean_ids, corrupt_ids, answer, wrong, kind,
                          progress=lambda layer, step=step: tick(step, layer))
        except Stopped:
            said = job.why(f"after {len(results)} of {len(kinds)} sweeps")
            yield (join_notes(said, "Shorten the prompts or tick fewer sweeps." if job.timed_out() else ""),
                   patch_figure(results, token_labels(corrupt), model.cfg.n_heads) if results else gr.skip())
            return
        results[kind] = swept["restored"]
        done = f"{len(results)} of {len(kinds)} sweeps in {time.monotonic() - started:.1f} s."
        yield join_notes(summary(model.tokenizer, swept, answer, wrong), notes, done), \
            patch_figure(results, token_labels(corrupt), model.cfg.n_heads)


def build(page) -> View:
    gr.Markdown(INTRO)
    with gr.Row():
        clean = gr.Textbox(label="Clean prompt", value=PRESETS[0][0])
        corrupt = gr.Textbox(label="Corrupted prompt (same number of tokens)", value=PRESETS[0][1])
    with gr.Row():
        answer = gr.Textbox(label="Answer (the clean prompt's)", value=PRESETS[0][2], max_lines=1)
        wrong = gr.Textbox(label="Wrong answer (the corrupted prompt's)", value=PRESETS[0][3], max_lines=1)
        chosen = gr.CheckboxGroup(list(SWEEPS), value=["residual stream"], label="Patch")
    gr.Examples(PRESETS, [clean, corrupt, answer, wrong], label="Presets (the last one is for tiny-gpt-char)")
    with gr.Row():
        go_button = gr.Button("Run the patching sweep", variant="primary")
        stop = gr.Button("Cancel")
    notice = gr.Markdown()
    plot = gr.Plot(placeholder("Press <b>Run the patching sweep</b>: for every layer and position (or head), how much "
                               "of the clean answer<br>copying that piece of the clean run into the corrupted run "
                               "restores.", 260))
    code_panel(sweep, run_patched, logit_diff)
    # a preset only fills the boxes: a sweep is long work on a shared server, so it runs when asked
    Jobs(page, stop, "sweep").on(go_button, update, [page.model, clean, corrupt, answer, wrong, chosen], [notice, plot],
                                 "patching", note=notice)
    return View(links=dict(clean=clean, corrupt=corrupt, answer=answer, wrong=wrong, patch=chosen))
