"""Train and evaluate the project's tiny models: `python -m core.training NAME`.

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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.config import ModelConfig
from core.model import HookedTransformer
from core.moe import load_balancing_loss
from core.sampling import SamplingSettings, sample
from core.tokenizers import CharTokenizer, WordTokenizer
from core.zoo import ASSETS, save_checkpoint

CORPUS = ASSETS / "data" / "shakespeare.txt"


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
    extra: dict = field(default_factory=dict)


RECIPES = {
    "tiny-gpt-char": Recipe(ModelConfig(family="gpt", d_model=128, n_layers=4, n_heads=4, d_ff=512, n_ctx=128,
                                        act="gelu"), "clm", steps=1800),
    "tiny-bert-word": Recipe(ModelConfig(family="bert", d_model=128, n_layers=4, n_heads=4, d_ff=512, n_ctx=64,
                                         pre_norm=False, embed_norm=True, causal=False, head="mlm",
                                         norm_eps=1e-12, pad_token_id=0), "mlm", steps=1800, lr=1e-3,
                             vocab_words=4096),
    "tiny-moe": Recipe(ModelConfig(family="moe", d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=128,
                                   n_ctx=128, positions="rope", norm="rmsnorm", act="silu", gated_ffn=True,
                                   bias=False, n_experts=8, top_k=2, router_noise=0.1), "clm", steps=1600,
                       aux_coef=0.01),
}


def corpus_split(text: str | None = None) -> tuple[str, str]:
    text = text if text is not None else CORPUS.read_text()
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def make_tokenizer(recipe: Recipe, text: str):
    if recipe.objective == "mlm":
        return WordTokenizer.build(text, recipe.vocab_words)
    return CharTokenizer(sorted(set(text) | {"?"}))


def clm_batch(data: torch.Tensor, B: int, T: int, g: torch.Generator):
    """B random windows: x is T tokens, y the same shifted by one (the next token at each position)."""
    start = torch.randint(0, len(data) - T - 1, (B,), generator=g)
    x = torch.stack([data[s:s + T] for s in start])
    y = torch.stack([data[s + 1:s + T + 1] for s in start])
    return x, y


def mlm_mask(ids: torch.Tensor, tok: WordTokenizer, g: torch.Generator, rate: float = 0.15):
    """BERT's rule: choose `rate` of the ordinary tokens; of those 80% -> [MASK], 10% -> random, 10% kept.

    Returns (inputs, labels) with labels -100 where the loss ignores the position.
    """
    special = torch.tensor(sorted(tok.special_ids))
    chosen = (torch.rand(ids.shape, generator=g) < rate) & ~torch.isin(ids, special)
    labels = ids.masked_fill(~chosen, -100)
    roll = torch.rand(ids.shape, generator=g)
    inputs = ids.masked_fill(chosen & (roll < 0.8), tok.mask_id)
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(len(tok.SPECIALS), tok.vocab_size, ids.shape, generator=g)
    return torch.where(randomise, random_ids, inputs), labels


def mlm_windows(data: torch.Tensor, tok: WordTokenizer, starts: torch.Tensor, T: int) -> torch.Tensor:
    """[CLS] w ... w [SEP] windows of T tokens."""
    body = torch.stack([data[s:s + T - 2] for s in starts])
    B = body.shape[0]
    return torch.cat([torch.full((B, 1), tok.cls_id), body, torch.full((B, 1), tok.sep_id)], dim=1)


def loss_and_logits(model: HookedTransformer, x, y, aux_coef: float = 0.0):
    """Cross-entropy on labelled positions, plus the load-balancing loss of every MoE layer."""
    router: list[torch.Tensor] = []
    names = {f"blocks.{i}.moe.hook_router_logits": (lambda t, h: router.append(t))
             for i in range(model.cfg.n_layers)} if model.cfg.n_experts else {}
    with model.hooks(names):
        logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
    if router and aux_coef:
        aux = sum(load_balancing_loss(r, r.topk(model.cfg.top_k, -1).indices, model.cfg.n_experts) for r in router)
        loss = loss + aux_coef * aux / len(router)
    return loss, logits


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(name: str, recipe: Recipe | None = None, text: str | None = None, seed: int = 0,
          progress: bool = True) -> HookedTransformer:
    recipe = recipe or RECIPES[name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train_text, _ = corpus_split(text)
    tok = make_tokenizer(recipe, text if text is not None else CORPUS.read_text())
    cfg = replace(recipe.config, vocab_size=tok.vocab_size)
    model = HookedTransformer(cfg)
    model.tokenizer = tok
    data = torch.tensor(tok.encode(train_text))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.1)
    T = min(cfg.n_ctx, len(data) - 2)
    model.train()
    bar = tqdm(range(recipe.steps), desc=name, disable=not progress, mininterval=2)
    for step in bar:
        if recipe.objective == "mlm":
            ids = mlm_windows(data, tok, torch.randint(0, len(data) - T, (recipe.batch,), generator=g), T)
            x, y = mlm_mask(ids, tok, g)
        else:
            x, y = clm_batch(data, recipe.batch, T, g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        loss, _ = loss_and_logits(model, x, y, recipe.aux_coef)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def sample_text(model: HookedTransformer, prompt: str, n: int, settings: SamplingSettings, seed: int = 0) -> str:
    """n new tokens, the context cropped to the model's window (the tutorials' generate loop)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([model.tokenizer.encode(prompt)])
    for _ in range(n):
        token = sample(model(ids[:, -model.cfg.n_ctx:])[:, -1], settings, g)
        ids = torch.cat([ids, token[:, None]], dim=1)
    return model.tokenizer.decode(ids[0, -n:].tolist())


def distinct_n(tokens: list, n: int) -> float:
    """Unique n-grams / all n-grams: 1 means nothing repeats, near 0 means a loop."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


@torch.no_grad()
def evaluate_clm(model: HookedTransformer, text: str, sample_prompt: str = "ROMEO:\n") -> dict:
    """CE (nats/token), PPL, next-token accuracy, BPC and distinct-1/2 of a seeded sample."""
    data = torch.tensor(model.tokenizer.encode(text))
    T = min(model.cfg.n_ctx, len(data) - 1)
    starts = range(0, len(data) - T - 1 + 1, T)  # non-overlapping windows
    total, correct, count = 0.0, 0, 0
    for chunk in [list(starts)[i:i + 64] for i in range(0, len(starts), 64)]:
        x = torch.stack([data[s:s + T] for s in chunk])
        y = torch.stack([data[s + 1:s + T + 1] for s in chunk])
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        count += y.numel()
    ce = total / count
    generated = sample_text(model, sample_prompt, 400, SamplingSettings(0.8, 50, 1.0))
    tokens = model.tokenizer.encode(generated)
    return {"cross_entropy": ce, "perplexity": math.exp(ce), "accuracy": correct / count,
            "bpc": ce / math.log(2), "distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
            "tokens": count, "sample": generated}


@torch.no_grad()
def evaluate_mlm(model: HookedTransformer, text: str, seed: int = 1234) -> dict:
    """CE, PPL and accuracy on masked positions, and the always-most-frequent-word baseline."""
    tok = model.tokenizer
    data = torch.tensor(tok.encode(text))
    T = model.cfg.n_ctx
    ids = mlm_windows(data, tok, torch.arange(0, len(data) - T, T - 2), T)
    x, y = mlm_mask(ids, tok, torch.Generator().manual_seed(seed))
    total, correct = 0.0, 0
    for xb, yb in zip(x.split(64), y.split(64)):
        logits = model(xb)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), ignore_index=-100,
                                 reduction="sum").item()
        keep = yb != -100
        correct += (logits.argmax(-1)[keep] == yb[keep]).sum().item()
    targets = y[y != -100]
    ce = total / len(targets)
    most_frequent = targets.bincount().max().item() / len(targets)
    return {"cross_entropy": ce, "perplexity": math.exp(ce), "accuracy": correct / len(targets),
            "baseline_accuracy": most_frequent, "masked_tokens": len(targets)}


def evaluate(model: HookedTransformer, text: str) -> dict:
    return evaluate_mlm(model, text) if model.cfg.head == "mlm" else evaluate_clm(model, text)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train (or evaluate) one of the project's tiny models.")
    parser.add_argument("name", choices=list(RECIPES))
    parser.add_argument("--evaluate", action="store_true", help="only evaluate the shipped checkpoint")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: assets/NAME)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or ASSETS / args.name
    _, heldout = corpus_split()
    if args.evaluate:
        from core.zoo import load_checkpoint
        model = load_checkpoint(out)
    else:
        start = time.time()
        model = train(args.name)
        save_checkpoint(model, out)
        print(f"trained in {time.time() - start:.0f} s -> {out}")
    metrics = evaluate(model, heldout)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2)) if not args.evaluate else None
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
