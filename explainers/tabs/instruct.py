"""Instruction tuning tab: a chat model's template as tokens and its live reply; SFT of a base model, before/after."""
from __future__ import annotations

import time

import gradio as gr

from core.device import torch_threads
from core.inputs import InputError, number, strip_controls
from core.learning.finetune import LoraSettings
from core.learning.instruct import (
    SFTSettings,
    answer,
    chat_prompt,
    chat_template,
    collate,
    encode_pair,
    prepare_sft,
    reply_steps,
    response_loss,
    sft_steps,
)
from core.learning.instruction_data import END, PROMPT, load_pairs
from explainers.draw.figures import placeholder
from explainers.draw.widgets import code_panel
from explainers.page.inputs import as_text, get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View
from explainers.tabs.instruct_figures import answers_html, curves_figure, mask_html, reply_html, template_html
from explainers.tabs.training import TRAIN_THREADS

TITLE = "Instruction tuning"
INTRO = r"""### From a model that continues text to one that answers
A pretrained model only continues text. **Instruction tuning** (supervised fine-tuning, SFT) trains it further on
pairs of an instruction and its response, laid out in a fixed **template**, with the loss on the **response
tokens only**: the model learns to answer, not to write instructions. A chat model's template marks the turns
with special tokens; the tokens that open the assistant's turn (the *generation prompt*) are where its reply
begins, and the token that closes a turn is where it stops."""

CHAT_MODEL = "smollm2-135m"   # SmolLM2-135M-Instruct: its GGUF carries its chat template (ChatML)
MAX_INSTRUCTION = 500         # characters: a longer instruction is refused, not cut
REPLY_DEFAULT, REPLY_MOST = 64, 256
REFRESH_SECONDS = 1.0         # the curves redraw this often while the model trains (as the Training tab's)
REPLY_SECONDS = 0.5           # and the reply while it streams
SFT_MODELS = [("tiny-gpt-char: every weight trains (full fine-tuning)", "tiny-gpt-char"),
              ("smollm2-135m: LoRA (r = 8) on its attention matrices (already instruction-tuned: it learns a "
               "second format)", "smollm2-135m")]
DEFAULTS = {"tiny-gpt-char": SFTSettings(steps=150, batch=16, lr=3e-3),
            "smollm2-135m": SFTSettings(steps=20, batch=8, lr=2e-3, warmup=4, eval_every=10)}
MOST_STEPS = {"tiny-gpt-char": 1000, "smollm2-135m": 60}  # SmolLM2's steps cost ~100 times more
LORA = LoraSettings(rank=8, alpha=16.0, dropout=0.0, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
SHOWN_PER_TASK = 2            # held-out instructions answered before and after, per task
ANSWER_TOKENS = {"character": 24, "other": 10}  # an answer's cap: 12 characters and [end]; a few BPE tokens


# The chat template and the reply.

def instruction_text(value) -> str:
    text = strip_controls(as_text(value)).strip()
    if not text:
        raise InputError("Type an instruction first: the box is empty.")
    if len(text) > MAX_INSTRUCTION:
        raise InputError(f"The instruction is {len(text):,} characters; keep it to {MAX_INSTRUCTION} or fewer.")
    return text


def chat_model(model_name):
    """The page's model where it has a chat template, else SmolLM2-Instruct, with a note saying which and why."""
    model = get_model(model_name)
    if chat_template(model.tokenizer):
        return model, f"The chat uses **{model_name}**, the page's model, in its own chat template."
    return get_model(CHAT_MODEL), (
        f"**{model_name}** has no chat template: it was trained only to continue text, so it has no turns to answer "
        f"in. The chat below uses **{CHAT_MODEL}** (SmolLM2-135M-Instruct), whose file carries its template.")


def show_template(model_name, instruction):
    """The templated prompt as token chips, and which model reads it."""
    model, note = chat_model(model_name)
    tokens = chat_prompt(model.tokenizer, instruction_text(instruction))
    return template_html(tokens), note


def reply(model_name, instruction, n_new, job: Job):
    """A generator: the templated prompt, then the model's greedy reply token by token (KV cache), each token's
    five likeliest alternatives on hover. Stops at the end of the turn, at n_new tokens, on Cancel or at the cap."""
    model, note = chat_model(model_name)
    tokens = chat_prompt(model.tokenizer, instruction_text(instruction))
    n_new = number("number of new tokens", n_new, 1, REPLY_MOST)
    if job.should_stop():
        yield template_html(tokens), gr.skip(), "Cancelled before the reply started."
        return
    ids = [c.token.id for c in tokens]
    yield template_html(tokens), reply_html(model.tokenizer, None), join_notes(note, "Replying…")
    last, g = time.monotonic(), None
    for g in reply_steps(model, ids, n_new):
        if job.should_stop():
            break
        if time.monotonic() - last > REPLY_SECONDS:
            last = time.monotonic()
            yield gr.skip(), reply_html(model.tokenizer, g), join_notes(note, f"Replying… {len(g.new_ids)} tokens.")
    done = len(g.new_ids) if g else 0
    ended = g is not None and g.new_ids[-1] in model.tokenizer.special_ids
    end = job.why(f"after {done} token{'s' * (done != 1)}") or (
        f"The model closed its turn with {model.tokenizer.readable(g.new_ids[-1])} after {done} tokens."
        if ended else f"Stopped at the {n_new}-token limit.")
    yield gr.skip(), reply_html(model.tokenizer, g), join_notes(note, end)


# Supervised fine-tuning.

def sft_settings(model_name, steps, lr, batch) -> tuple[SFTSettings, LoraSettings | None]:
    if model_name not in DEFAULTS:
        raise InputError(f"Fine-tune one of: {', '.join(DEFAULTS)}.")
    base = DEFAULTS[model_name]
    settings = SFTSettings(steps=number("number of steps", steps, 1, MOST_STEPS[model_name]),
                           batch=number("batch size", batch, 1, 64),
                           lr=number("learning rate", lr, 1e-5, 1e-2, whole=False),
                           warmup=base.warmup, eval_every=base.eval_every)
    return settings, (LORA if model_name == CHAT_MODEL else None)


def shown_pairs(pairs: dict) -> list[dict]:
    """The first SHOWN_PER_TASK held-out pairs of each task."""
    tasks = dict.fromkeys(p["task"] for p in pairs["heldout"])
    return [p for t in tasks for p in [q for q in pairs["heldout"] if q["task"] == t][:SHOWN_PER_TASK]]


def status(model_name: str, run, s, held: list[tuple[int, float]], end: str = "") -> str:
    n, before = run.settings, held[0][1]
    scored = int((run.heldout[1] != -100).sum())
    head = (f"**{model_name}**: {run.trainable:,} parameters train; {len(run.train)} training pairs, batches of "
            f"{n.batch}; {n.steps} steps, peak learning rate {n.lr:g}. The held-out loss is measured on the "
            f"{scored} response tokens of {len(run.heldout[0])} held-out pairs.")
    if s is None:
        return f"{head}\n\n{end or f'Step 0: held-out response loss {before:.2f} nats per token.'}"
    now = held[-1][1]
    line = (f"Step **{s.step}** of {n.steps} · training batch {s.loss:.2f} · held-out **{now:.2f}** (from "
            f"{before:.2f}, {now / before - 1:+.0%}) · {s.seconds:.0f} s")
    return f"{head}\n\n{line}" + (f"\n\n{end}" if end else "")


def sft_live(model_name, steps, lr, batch, job: Job):
    """A generator: fine-tune on the shipped pairs, redrawing the curves; the held-out instructions answered before
    and after. Cancel stops it within one step; the train group's cap ends it the same way."""
    settings, lora = sft_settings(model_name, steps, lr, batch)
    if job.should_stop():
        yield "Cancelled before the run started.", *[gr.skip()] * 3
        return
    pairs, base = load_pairs(), get_model(model_name)
    shown = shown_pairs(pairs)
    firsts = {p["task"]: p for p in reversed(pairs["train"])}                   # the first training pair of each task
    examples = [encode_pair(base.tokenizer, p["instruction"], p["response"]) for p in firsts.values()]
    with torch_threads(TRAIN_THREADS):
        run = prepare_sft(base, pairs, settings, lora)
        held = [(0, response_loss(base, run.heldout))]
        most = ANSWER_TOKENS["character" if base.tokenizer.kind == "character" else "other"]
        answers = [(p, answer(base, p["instruction"], most), None) for p in shown]
    train = []
    yield (status(model_name, run, None, held), curves_figure(train, held, settings.steps),
           mask_html(base.tokenizer, examples), answers_html(answers))
    last, s = time.monotonic(), None
    with torch_threads(TRAIN_THREADS):
        for s in sft_steps(run, job.should_stop):
            train.append((s.step, s.loss))
            if s.heldout is not None:
                held.append((s.step, s.heldout))
            if time.monotonic() - last > REFRESH_SECONDS and s.step < settings.steps:
                last = time.monotonic()
                yield status(model_name, run, s, held), curves_figure(train, held, settings.steps), gr.skip(), gr.skip()
        if s is not None and held[-1][0] != s.step:
            held.append((s.step, response_loss(run.model, run.heldout)))
        answers = [(p, before, answer(run.model, p["instruction"], most)) for p, before, _ in answers]
    before, after = held[0][1], held[-1][1]
    end = job.why(f"after {s.step if s else 0} steps") or f"**Finished** in {s.seconds:.0f} s."
    end += f" Held-out response loss **{before:.2f} → {after:.2f}** ({after / before - 1:+.0%})."
    yield status(model_name, run, s, held, end), curves_figure(train, held, settings.steps), gr.skip(), \
        answers_html(answers)


def sft_defaults(model_name):
    """The chosen model's default steps, learning rate and batch."""
    d = DEFAULTS.get(model_name, DEFAULTS["tiny-gpt-char"])
    return (gr.Slider(maximum=MOST_STEPS.get(model_name, 1000), value=d.steps), gr.Number(value=d.lr),
            gr.Slider(value=d.batch))


def build(page) -> View:
    gr.Markdown(INTRO)
    gr.Markdown("#### 1 · The chat template, token by token, and a live reply")
    with gr.Row():
        instruction = gr.Textbox(label="Instruction", value="Name three colours of the rainbow.", scale=4)
        n_new = gr.Slider(1, REPLY_MOST, value=REPLY_DEFAULT, step=1, label="New tokens at most")
    with gr.Row():
        go_reply = gr.Button("Reply", variant="primary")
        stop_reply = gr.Button("Cancel")
    chat_note = gr.Markdown()
    template = gr.HTML()
    answer_box = gr.HTML(reply_html(None, None))
    gr.Markdown("#### 2 · Supervised fine-tuning on instruction/response pairs")
    gr.Markdown(f"The pairs: {len(load_pairs()['train'])} for training and {len(load_pairs()['heldout'])} held out, "
                "five small tasks (reverse a word, write it in capitals, count its letters, add two numbers, name who "
                "answers in two lines of a play), generated by `core/learning/instruction_data.py` (seed 0) from the "
                f"Shakespeare corpus and shipped as `assets/data/instructions.json`. The template: "
                f"`{PROMPT.format(instruction='…')!r}` then the response and `{END}`.")
    sft_model = gr.Radio(SFT_MODELS, value="tiny-gpt-char", label="Base model")
    d = DEFAULTS["tiny-gpt-char"]
    with gr.Row():
        steps = gr.Slider(1, MOST_STEPS["tiny-gpt-char"], value=d.steps, step=1, label="Steps")
        lr = gr.Number(d.lr, label="Peak learning rate (0.00001 to 0.01)")
        batch = gr.Slider(1, 64, value=d.batch, step=1, label="Batch (pairs)")
    with gr.Row():
        go_sft = gr.Button("Fine-tune on the pairs", variant="primary")
        stop_sft = gr.Button("Cancel", key="cancel-sft")
    summary = gr.Markdown()
    curves = gr.Plot(placeholder("The response loss as the model learns: each training batch, and the held-out "
                                 "pairs.", 260))
    mask = gr.HTML()
    answers = gr.HTML()
    code_panel(chat_prompt, reply_steps, encode_pair, collate, sft_steps, answer)
    Jobs(page, stop_reply, "generate").on(go_reply, reply, [page.model, instruction, n_new],
                                          [template, answer_box, chat_note], "instruct_reply", note=chat_note)
    Jobs(page, stop_sft, "train").on(go_sft, sft_live, [sft_model, steps, lr, batch], [summary, curves, mask, answers],
                                     "instruct_sft", note=summary)
    page.on([instruction.submit], show_template, [page.model, instruction], [template, chat_note], api="chat_template")
    sft_model.change(sft_defaults, sft_model, [steps, lr, batch], queue=False, api_visibility="undocumented")
    return View(links=dict(instruction=instruction, n=n_new, base=sft_model, steps=steps, lr=lr, batch=batch),
                draws=[page.event(show_template, [page.model, instruction], [template, chat_note])])
