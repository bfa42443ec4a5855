"""Training tab: a tiny model learns from scratch while the page watches (loss, samples, attention, embeddings)."""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field, replace

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch

from core.device import torch_threads
from core.inference.sampling import SamplingSettings
from core.inputs import InputError, number
from core.learning.data import mlm_mask
from core.learning.evaluation import sample_text
from core.learning.training import (
    RECIPES,
    Recipe,
    Run,
    Step,
    attention_pattern,
    batch_expert_load,
    embedding_map,
    evaluating,
    lr_at,
    make_batch,
    masked_guesses,
    memorisation_paragraph,
    memorisation_recipe,
    prepare,
    train_steps,
    training_loss,
)
from core.model.transformer import HookedTransformer
from core.weights import zoo
from explainers.draw.figures import placeholder, token_labels
from explainers.draw.widgets import code_panel
from explainers.page.groups import GROUPS
from explainers.page.inputs import model_choices
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View
from explainers.tabs.training_figures import attention_figure, curves_figure, embedding_figure, masking_html, samples_html

TITLE = "Training"
INTRO = r"""### Watch a model learn
Press **Train from scratch** and a new model, its weights random, learns from the Shakespeare corpus while you
watch. Each step reads a batch of windows of text, measures how badly the model predicts them (the
cross-entropy loss, in nats per token) and moves every weight a little downhill (AdamW). At first the
model guesses uniformly, a loss of ln V for V tokens, and writes noise; within a minute it writes
word-like text. The **held-out** loss is measured on text the model never trains on: while it falls with
the training loss the model is learning the language, not the pages. The one-paragraph button repeats the
tutorials' first experiment: a model that sees only one paragraph learns it by heart (its loss goes to
almost 0, and it recites the paragraph). One run at a time on this server: a second learner waits in line
and sees their place."""

RECIPE_CHOICES = [("TinyGPT: next character (causal LM)", "tiny-gpt-char"),
                  ("TinyBERT: masked words (MLM, 80/10/10)", "tiny-bert-word"),
                  ("Tiny MoE: next character, 8 experts, top-2, balancing loss", "tiny-moe")]
SHORT = {"tiny-gpt-char": "TinyGPT", "tiny-bert-word": "TinyBERT", "tiny-moe": "Tiny MoE"}
PREFIX = {"tiny-gpt-char": "my-tiny-gpt", "tiny-bert-word": "my-tiny-bert", "tiny-moe": "my-tiny-moe"}  # kept models
LIMITS = {"width": (16, 256), "layers": (1, 6), "steps": (10, 3000), "batch": (1, 64), "learning rate": (1e-4, 3e-2)}
DEFAULTS = {"width": 64, "layers": 2, "steps": 600, "learning rate": 5e-3, "batch": 32}
CONTEXT = 64           # tokens per window in the app (the shipped checkpoints were trained on 128)
REFRESH_SECONDS = 1.0  # curves and numbers redraw this often
SNAPSHOT_SECONDS = 3.0  # samples, attention and the embedding map at most this often, and
SNAPSHOT_SHARE = 0.05   # at most this share of the run's time (a sample costs about as much as five steps)
TRAIN_THREADS = max(1, len(os.sched_getaffinity(0)) // 2 if hasattr(os, "sched_getaffinity") else 1)
SAMPLE = SamplingSettings(temperature=0.8)
SAMPLE_CHARS = 100
MEMORISE_STEPS = 1000  # at most, for the one-paragraph experiment
PROBE_TOKENS = 32      # the attention pattern reads the paragraph's first tokens
MAP_WORDS = 150        # the embedding map of a word model shows its most frequent words


def bounded(name: str, value, whole: bool = True):
    """A setting within LIMITS[name]."""
    return number(name, value, *LIMITS[name], whole=whole)


def app_recipe(name: str, width, layers, steps, lr, batch) -> Recipe:
    """The named recipe at the chosen size, its context CONTEXT tokens, every setting checked."""
    if name not in RECIPES:
        raise InputError(f"Choose a recipe: {', '.join(RECIPES)}.")
    width = bounded("width", width)
    if width % 16:
        raise InputError(f"The width must be a multiple of 16 (4 heads of an even width); got {width}.")
    steps = bounded("steps", steps)
    base, cfg = RECIPES[name], RECIPES[name].config
    return replace(base, steps=steps, batch=bounded("batch", batch), lr=bounded("learning rate", lr, whole=False),
                   warmup=min(base.warmup, steps // 10),
                   config=replace(cfg, d_model=width, n_layers=bounded("layers", layers), d_head=None,
                                  d_ff=width * cfg.d_ff // cfg.d_model, n_ctx=CONTEXT))


@dataclass
class Trained:
    """What a run leaves in its Job for Keep: the model, its recipe, and the name it was kept as."""
    model: HookedTransformer
    recipe: str
    kept_as: str | None = None


def masking_counts(x: torch.Tensor, y: torch.Tensor, guesses: torch.Tensor, mask_id: int) -> dict:
    """Over a batch: how many positions were chosen, and the shares read as [MASK], a random word, or kept."""
    chosen = y != -100
    n = max(1, int(chosen.sum()))
    masked, kept = (x[chosen] == mask_id), (x[chosen] == y[chosen])
    return {"chosen": int(chosen.sum()), "rate": int(chosen.sum()) / y.numel(), "[MASK]": float(masked.sum()) / n,
            "kept": float(kept.sum()) / n, "random": float((~masked & ~kept).sum()) / n,
            "right": float((guesses[chosen] == y[chosen]).sum()) / n}


# The run, as the tab streams it.

@dataclass
class Watch:
    """What the tab draws of a run, gathered as it goes."""
    run: Run
    prompt: str                          # samples continue it
    sample_chars: int
    probe: list                          # the tokens whose attention pattern is drawn
    map_ids: list[int]                   # the vocabulary entries on the embedding map
    train: list[tuple[int, float]] = field(default_factory=list)
    heldout: list[tuple[int, float]] = field(default_factory=list)
    samples: list[tuple[int, str]] = field(default_factory=list)


def watch(run: Run, memorise: bool) -> Watch:
    tok, paragraph = run.model.tokenizer, memorisation_paragraph()
    if tok.kind == "character":
        map_ids = [i for i in range(tok.vocab_size) if tok.chars[i] != tok.unk or tok.chars[i] in paragraph]
    else:
        map_ids = list(range(len(tok.SPECIALS), min(tok.vocab_size, len(tok.SPECIALS) + MAP_WORDS)))
    prompt = paragraph[:6] if memorise else "ROMEO:\n"
    return Watch(run, prompt, 200 if memorise else SAMPLE_CHARS, tok.tokens(paragraph)[:PROBE_TOKENS], map_ids)


def heldout_loss(run: Run) -> float:
    with evaluating(run.model):
        return training_loss(run.model, *run.heldout).item()


def kept_samples(samples: list, new, latest: int = 6) -> list:
    """The samples shown: the first (step 0), the `latest` after it, and the new one, each once."""
    return [*samples[:1], *samples[1:][-latest:], new]


def snapshot(w: Watch, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[str, go.Figure, go.Figure]:
    """(samples or the masked batch as HTML, attention figure, embedding map) of the model as it is now."""
    model, tok, L = w.run.model, w.run.model.tokenizer, w.run.model.cfg.n_layers
    if model.cfg.head == "mlm":
        x, y = batch
        guesses, probs = masked_guesses(model, x)
        window = list(zip(x[0].tolist(), y[0].tolist(), guesses[0].tolist(), probs[0].tolist()))
        text = masking_html(window, tok, masking_counts(x, y, guesses, tok.mask_id), step)
    else:
        with evaluating(model):
            w.samples = kept_samples(w.samples, (step, sample_text(model, w.prompt, w.sample_chars, SAMPLE, seed=0)))
        text = samples_html(w.samples, w.prompt)
    probe = torch.tensor([t.id for t in w.probe])
    load = batch_expert_load(model, w.run.heldout[0]) if model.cfg.n_experts else None
    attention = attention_figure(attention_pattern(model, probe, L - 1, 0), token_labels(w.probe), L - 1, load)
    pieces = [tok.readable(i) for i in w.map_ids]
    return text, attention, embedding_figure(embedding_map(model, w.map_ids), pieces, tok.kind, step)


def status(w: Watch, title: str, s: Step | None, end: str = "") -> str:
    cfg, recipe = w.run.model.cfg, w.run.recipe
    params = sum(p.numel() for p in w.run.model.parameters())
    head = (f"**{title}**: width {cfg.d_model}, {cfg.n_layers} layer{'s' * (cfg.n_layers > 1)}, {params:,} "
            f"parameters; batches of {recipe.batch} windows × {cfg.n_ctx} tokens; {recipe.steps} steps, peak learning "
            f"rate {recipe.lr:g}.")
    if s is None:
        return f"{head}\n\n{end or 'Step 0: the weights are random.'}"
    held = w.heldout[-1][1]
    line = (f"Step **{s.step}** of {recipe.steps} · **{s.tokens / s.seconds:,.0f} tokens/s** · training loss "
            f"{s.loss:.2f} · held-out loss **{held:.2f}** (from {w.heldout[0][1]:.2f}) · {s.seconds:.0f} s")
    cap = GROUPS["train"].cap
    if not end and s.step >= 5 and s.seconds / s.step * recipe.steps > cap:
        end = (f"At this speed the run would take about {s.seconds / s.step * recipe.steps:.0f} s, so it will stop "
               f"at the {cap:.0f} s cap near step {cap * s.step / s.seconds:.0f}.")
    return f"{head}\n\n{line}" + (f"\n\n{end}" if end else "")


def stream(name: str, recipe: Recipe, job: Job, memorise: bool):
    """Train, yielding (status, curves, samples, attention, embeddings): the curves every REFRESH_SECONDS, the rest
    every SNAPSHOT_SECONDS or less often, so that they take at most SNAPSHOT_SHARE of the time (gr.skip() in
    between). Stops on Cancel within one step, or at the train group's time cap."""
    if job.stop.is_set():
        yield "Cancelled before the run started.", *[gr.skip()] * 4
        return
    with torch_threads(TRAIN_THREADS):
        run = prepare(recipe, memorisation_paragraph() if memorise else None, memorise=memorise)
        w = watch(run, memorise)
        w.heldout.append((0, heldout_loss(run)))
        shot = snapshot(w, 0, run.heldout)
    title = SHORT[name]
    job.result = Trained(run.model, name)
    chance = float(np.log(run.model.cfg.vocab_size))
    yield status(w, title, None), curves_figure(w.train, w.heldout, recipe.steps, chance), *shot
    drawn = time.monotonic()
    next_shot, s = drawn + SNAPSHOT_SECONDS, None
    for s in train_steps(run, stop=job.stop, eval_every=max(1, recipe.steps // 40), threads=TRAIN_THREADS):
        w.train.append((s.step, s.loss))
        if s.heldout is not None:
            w.heldout.append((s.step, s.heldout))
        now = time.monotonic()
        if job.timed_out() or s.step == recipe.steps:
            break
        if now > next_shot:
            with torch_threads(TRAIN_THREADS):
                shot = snapshot(w, s.step, s.batch)
            drawn = time.monotonic()
            next_shot = drawn + max(SNAPSHOT_SECONDS, (drawn - now) / SNAPSHOT_SHARE)
            yield status(w, title, s), curves_figure(w.train, w.heldout, recipe.steps, chance), *shot
        elif now - drawn > REFRESH_SECONDS:
            drawn = now
            yield status(w, title, s), curves_figure(w.train, w.heldout, recipe.steps, chance), *[gr.skip()] * 3
    end = job.why(f"after {s.step if s else 0} steps")
    with torch_threads(TRAIN_THREADS):
        if s is not None and w.heldout[-1][0] != s.step:
            w.heldout.append((s.step, heldout_loss(run)))
        shot = snapshot(w, s.step if s else 0, s.batch if s else run.heldout)
    job.ended = True  # Keep may take the model now
    end = end or f"**Finished** in {s.seconds:.0f} s."
    yield (status(w, title, s, end + " Press **Keep** to explore this model in the other tabs."),
           curves_figure(w.train, w.heldout, recipe.steps, chance), *shot)


def train_live(recipe_name: str, width, layers, steps, lr, batch, job: Job):
    """Train the chosen recipe from scratch at the chosen size, streaming what it learns."""
    yield from stream(recipe_name, app_recipe(recipe_name, width, layers, steps, lr, batch), job, memorise=False)


def memorise_live(recipe_name: str, width, layers, job: Job):
    """The tutorials' first experiment: the chosen recipe and size, trained on one paragraph until it knows it."""
    recipe = memorisation_recipe(app_recipe(recipe_name, width, layers, DEFAULTS["steps"], DEFAULTS["learning rate"],
                                            DEFAULTS["batch"]))
    # a masked LM scores 15% of the words a step: the command line's 2500 steps would pass the time cap here
    yield from stream(recipe_name, replace(recipe, steps=min(recipe.steps, MEMORISE_STEPS)), job, memorise=True)


def keep(job):
    """Add the session's finished model to the model picker (for this server; the last few are kept)."""
    trained = job.result if isinstance(job, Job) else None
    if not isinstance(trained, Trained):
        raise InputError("Train a model first: press Train from scratch, and keep it once it has finished.")
    if not job.ended:
        raise InputError("The run is still going: wait for it to finish (or cancel it), then keep it.")
    if trained.kept_as is None:
        cfg = trained.model.cfg
        title = f"{SHORT[trained.recipe]} trained here: width {cfg.d_model}, {cfg.n_layers} layers"
        trained.kept_as = zoo.keep(copy.deepcopy(trained.model), PREFIX[trained.recipe], title)
    return (f"Kept as **{trained.kept_as}**. Pick it in the **Model** menu at the top of the page and every tab "
            f"explores it. The server keeps the last {zoo.KEPT_MAX} models trained here."), \
        gr.Dropdown(choices=model_choices())


BEFORE_A_RUN = ("<div style='color:#6b7280;padding:8px'><b>Samples</b>: once a run starts, what the model writes "
                "after <code>ROMEO:</code> at step 0 (noise) and every few seconds after (a masked LM shows its guesses "
                "instead).</div>")


def build(page) -> View:
    gr.Markdown(INTRO)
    recipe = gr.Radio(RECIPE_CHOICES, value="tiny-gpt-char", label="Recipe")
    with gr.Row():
        width = gr.Slider(*LIMITS["width"], value=DEFAULTS["width"], step=16, label="Width C")
        layers = gr.Slider(*LIMITS["layers"], value=DEFAULTS["layers"], step=1, label="Layers")
        steps = gr.Slider(*LIMITS["steps"], value=DEFAULTS["steps"], step=10, label="Steps")
        lr = gr.Number(DEFAULTS["learning rate"], label=f"Peak learning rate ({LIMITS['learning rate'][0]:g} to "
                       f"{LIMITS['learning rate'][1]:g})")
        batch = gr.Slider(*LIMITS["batch"], value=DEFAULTS["batch"], step=1, label=f"Batch (windows of {CONTEXT} tokens)")
    with gr.Row():
        start = gr.Button("Train from scratch", variant="primary")
        memorise = gr.Button("Memorise one paragraph (the tutorials' first experiment)")
        stop = gr.Button("Cancel")
        keep_button = gr.Button("Keep this model for the other tabs")
    kept = gr.Markdown()
    summary = gr.Markdown()
    curves = gr.Plot(placeholder("Press <b>Train from scratch</b>: the training and held-out loss draw here, step by "
                                 "step, against the loss of guessing uniformly.", 260), label="Loss")
    with gr.Row():
        samples = gr.HTML(BEFORE_A_RUN)
        attention = gr.Plot(placeholder("One head's attention pattern on a paragraph,<br>redrawn as the model learns.",
                                        260), label="Attention")
    embeddings = gr.Plot(placeholder("The token embeddings in 2D, redrawn as the model learns:<br>tokens of one kind "
                                     "(vowels, digits, pronouns) gather.", 260), label="Embeddings")
    code_panel(train_steps, make_batch, training_loss, lr_at, mlm_mask, embedding_map)
    jobs = Jobs(page, stop, "train")
    outputs = [summary, curves, samples, attention, embeddings]
    jobs.on(start, train_live, [recipe, width, layers, steps, lr, batch], outputs, "train", note=summary)
    jobs.on(memorise, memorise_live, [recipe, width, layers], outputs, "memorise", note=summary)
    page.on([keep_button.click], keep, jobs.state, [kept, page.model], remember=False)
    return View(links=dict(recipe=recipe, width=width, layers=layers, steps=steps, lr=lr, batch=batch))
