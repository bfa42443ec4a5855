"""Train and evaluate the project's tiny models: `python -m core.learning.training NAME`.

    tiny-gpt-char   causal LM over characters (the tutorials' TinyGPT)
    tiny-bert-word  masked LM over words, 15% of tokens chosen, 80/10/10 (TinyBERT)
    tiny-moe        causal LM over characters whose FFNs are 8 experts, top-2

The corpus is assets/data/shakespeare.txt: the first 90% trains, the last 10% is held
out. Everything is seeded, so the same command gives the same checkpoint and metrics.
"""
from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.device import torch_threads
from core.learning.data import CORPUS, clm_batch, corpus_split, mlm_mask, mlm_windows
from core.learning.evaluation import evaluate, expert_load, moe_markdown, moe_report
from core.model.cache import act_name, kinds
from core.model.config import ModelConfig
from core.model.moe import load_balancing_loss
from core.model.transformer import HookedTransformer
from core.paths import ASSETS
from core.weights.tokenizers import CharTokenizer, WordTokenizer


@dataclass
class Recipe:
    config: ModelConfig
    objective: str                 # clm | mlm
    steps: int
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 100
    aux_coef: float = 0.0          # weight of the MoE load-balancing loss
    vocab_words: int = 0           # word vocabulary size (mlm)


RECIPES = {
    "tiny-gpt-char": Recipe(ModelConfig(family="gpt", d_model=128, n_layers=4, n_heads=4, d_ff=512, n_ctx=128,
                                        act="gelu"), "clm", steps=1650),
    # the tutorials' TinyBERT normalises before each sublayer (as TinyGPT does), unlike BERT itself
    "tiny-bert-word": Recipe(ModelConfig(family="bert", d_model=128, n_layers=4, n_heads=4, d_ff=512, n_ctx=64,
                                         causal=False, head="mlm", pad_token_id=0), "mlm", steps=2900, lr=2e-3,
                             vocab_words=4096),
    "tiny-moe": Recipe(ModelConfig(family="moe", d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=128,
                                   n_ctx=128, positions="rope", norm="rmsnorm", act="silu", gated_ffn=True,
                                   bias=False, n_experts=8, top_k=2, router_noise=0.1), "clm", steps=1400,
                       aux_coef=0.01),
}


@dataclass
class Step:
    """What the loop reports after one optimiser step."""
    step: int                      # steps done so far, 1..recipe.steps
    loss: float                    # training loss on this step's batch
    lr: float
    tokens: int                    # tokens read so far
    seconds: float                 # since the loop started, everything included
    heldout: float | None          # held-out loss, measured every eval_every steps and at the last
    batch: tuple[torch.Tensor, torch.Tensor]  # this step's (inputs, labels): the app shows MLM's masking on it


@dataclass
class Run:
    """A fresh model and its data: the training ids and a fixed held-out batch (inputs, labels)."""
    model: HookedTransformer
    recipe: Recipe
    data: torch.Tensor             # (N,) token ids of the training text
    heldout: tuple[torch.Tensor, torch.Tensor]


def make_tokenizer(recipe: Recipe, text: str):
    if recipe.objective == "mlm":
        return WordTokenizer.build(text, recipe.vocab_words)
    return CharTokenizer(sorted(set(text) | {"?"}))


def prepare(recipe: Recipe, text: str | None = None, seed: int = 0, memorise: bool = False,
            heldout_windows: int = 16) -> Run:
    """A seeded, freshly initialised model for the recipe, its tokenizer built from the training text.

    The text (default: the corpus) is split 90/10 into training and held-out text, whose vocabulary stays unseen;
    memorising trains on all of it and measures on the same text, as the tutorials' first experiment does."""
    train_text, heldout_text = (text, text) if memorise else corpus_split(text)
    torch.manual_seed(seed)
    tok = make_tokenizer(recipe, train_text)
    model = HookedTransformer(replace(recipe.config, vocab_size=tok.vocab_size))
    model.tokenizer = tok
    data, held = torch.tensor(tok.encode(train_text)), torch.tensor(tok.encode(heldout_text))
    T = min(model.cfg.n_ctx, len(data) - 2, len(held) - 2)
    return Run(model, recipe, data, make_batch(recipe, tok, held, heldout_windows, T, torch.Generator().manual_seed(1)))


def make_batch(recipe: Recipe, tok, data: torch.Tensor, B: int, T: int, g: torch.Generator):
    """B random windows of T tokens as (inputs, labels): next tokens (CLM), or BERT's masking (MLM)."""
    if recipe.objective == "mlm":
        ids = mlm_windows(data, tok, torch.randint(0, len(data) - T, (B,), generator=g), T)
        return mlm_mask(ids, tok, g)
    return clm_batch(data, B, T, g)


def training_loss(model: HookedTransformer, x, y, aux_coef: float = 0.0) -> torch.Tensor:
    """Cross-entropy on labelled positions, plus the load-balancing loss of every MoE layer.

    The vocabulary head runs only where there is a label: for MLM that is 15% of positions,
    which makes a TinyBERT step cheaper than scoring every position."""
    router: list[torch.Tensor] = []
    names = {f"blocks.{i}.moe.hook_router_logits": (lambda t, h: router.append(t))
             for i in range(model.cfg.n_layers)} if model.cfg.n_experts else {}
    with model.hooks(names):
        hidden = model.hidden(x)
    keep = y != -100
    logits = model.unembed(hidden[keep], model.embed.weight)                     # (N, V)
    loss = F.cross_entropy(logits, y[keep])
    if router and aux_coef:
        aux = sum(load_balancing_loss(r, r.topk(model.cfg.top_k, -1).indices, model.cfg.n_experts) for r in router)
        loss = loss + aux_coef * aux / len(router)
    return loss


@contextmanager
def evaluating(model: HookedTransformer):
    """The model in eval mode without gradients (no router noise), back in its former mode afterwards."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train_steps(run: Run, seed: int = 0, stop: threading.Event | None = None, eval_every: int = 0,
                threads: int | None = None) -> Iterator[Step]:
    """The training loop, one optimiser step per item: the command line and the app both iterate it.

    It checks `stop` before every step, so a run stops within one step of the request. Every `eval_every`
    steps (and at the last) it measures the held-out loss. `threads` caps torch's threads for the steps
    (the setting is per thread: a server gives training fewer cores so its other users keep theirs)."""
    model, recipe = run.model, run.recipe
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.1)
    T = min(model.cfg.n_ctx, len(run.data) - 2)
    start = time.perf_counter()
    model.train()
    for step in range(recipe.steps):
        if stop is not None and stop.is_set():
            return
        with torch_threads(threads):
            x, y = make_batch(recipe, model.tokenizer, run.data, recipe.batch, T, g)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, recipe)
            loss = training_loss(model, x, y, recipe.aux_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            heldout = None
            if eval_every and (step % eval_every == 0 or step + 1 == recipe.steps):
                with evaluating(model):
                    heldout = training_loss(model, *run.heldout).item()
        yield Step(step + 1, loss.item(), lr_at(step, recipe), (step + 1) * x.numel(), time.perf_counter() - start,
                   heldout, (x, y))


def train(name: str, recipe: Recipe | None = None, text: str | None = None, seed: int = 0,
          progress: bool = True, memorise: bool = False) -> HookedTransformer:
    """Seeded and bit-reproducible: the embedding gradient (an indexed sum) is otherwise
    accumulated in a thread-dependent order on the CPU; the deterministic kernels cost nothing here."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        run = prepare(recipe or RECIPES[name], text, seed, memorise)
        bar = tqdm(total=run.recipe.steps, desc=name, disable=not progress, mininterval=2)
        for step in train_steps(run, seed):
            bar.update()
            bar.set_postfix(loss=f"{step.loss:.3f}", refresh=False)
        return run.model.eval()
    finally:
        torch.use_deterministic_algorithms(was)


# What the app draws while a run goes on: each looks at the model as it is now, in eval mode.

def attention_pattern(model: HookedTransformer, ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """(T,) ids -> (T, T): where each query position of one head looks."""
    with evaluating(model):
        _, cache = model.run_with_cache(ids[None], names=act_name("pattern", layer), logits=False)
    return cache["pattern", layer][0, head]


def embedding_map(model: HookedTransformer, ids: list[int]) -> np.ndarray:
    """The embedding rows of these token ids projected to 2D by PCA, (N, 2). Each axis is turned so that its
    farthest point lies on the positive side: successive maps of a run then keep their orientation."""
    from core.analysis.projection import project  # here, not at the top: a data-parallel worker imports this module
    points = project(model.embed.weight[ids].detach().float().numpy(), "PCA")
    far = np.abs(points).argmax(0)
    return points * np.sign(points[far, range(points.shape[1])])


def masked_guesses(model: HookedTransformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) inputs -> the model's most likely token at every position and its probability, each (B, T)."""
    with evaluating(model):
        best = model(x).softmax(-1).max(-1)                                      # (B, T, V) -> (B, T)
    return best.indices, best.values


def batch_expert_load(model: HookedTransformer, x: torch.Tensor) -> torch.Tensor:
    """(B, T) ids -> (L, E): each layer's share of routing slots per expert on this batch."""
    with evaluating(model):
        _, cache = model.run_with_cache(x, names=kinds("expert_indices"), logits=False)
    return expert_load(cache.stack("expert_indices"), model.cfg.n_experts)


SLICE_CHARS = 20_000  # the held-out slice the tests re-evaluate quickly


def memorisation_paragraph() -> str:
    """The tutorials' first experiment fits one short paragraph; ours is Hamlet's soliloquy opening."""
    text = CORPUS.read_text()
    start = text.index("To be, or not to be")
    return text[start:text.index("so long life;", start) + len("so long life;")]


def memorisation_recipe(base: Recipe) -> Recipe:
    """The one-paragraph experiment's settings for a recipe of either objective.

    A masked LM sees only 15% of the words as targets per pass, so it needs more steps,
    larger batches and a higher rate than the causal models (lr 1e-2 diverges)."""
    if base.objective == "mlm":
        return replace(base, steps=2500, batch=32, lr=5e-3, warmup=50, vocab_words=10_000,
                       config=replace(base.config, n_ctx=32))
    return replace(base, steps=600, batch=16, warmup=50, config=replace(base.config, n_ctx=64))


def memorise(name: str) -> dict:
    """Train on one paragraph until it is memorised and report the same metrics on it."""
    paragraph = memorisation_paragraph()
    model = train(name, memorisation_recipe(RECIPES[name]), text=paragraph, memorise=True, progress=False)
    return evaluate(model, paragraph, sample_prompt=paragraph[:6])


def main() -> None:
    parser = argparse.ArgumentParser(description="Train (or evaluate) one of the project's tiny models.")
    parser.add_argument("name", choices=list(RECIPES))
    parser.add_argument("--evaluate", action="store_true", help="only evaluate the checkpoint in --out")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: assets/NAME)")
    parser.add_argument("--steps", type=int, help="override the recipe's step count (for quick trials)")
    parser.add_argument("--memorise", action="store_true", help="the tutorials' one-paragraph experiment")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from core.weights.zoo import save_checkpoint
    torch.set_num_threads(args.threads)
    out = args.out or ASSETS / args.name
    _, heldout = corpus_split()
    if args.memorise:
        print(json.dumps(memorise(args.name), indent=2))
        return
    if args.evaluate:
        from core.weights.zoo import load_checkpoint
        model = load_checkpoint(out)
    else:
        start = time.time()
        recipe = replace(RECIPES[args.name], steps=args.steps) if args.steps else RECIPES[args.name]
        model = train(args.name, recipe)
        save_checkpoint(model, out)
        print(f"trained in {time.time() - start:.0f} s -> {out}")
    metrics = {"heldout": evaluate(model, heldout), "heldout_slice": evaluate(model, heldout[:SLICE_CHARS])}
    if model.cfg.n_experts:
        metrics["experts"] = moe_report(model, heldout)
        print(moe_markdown(metrics["experts"]))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: v for k, v in metrics.items() if k != "experts"}, indent=2))


if __name__ == "__main__":
    main()
