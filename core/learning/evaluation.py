"""Metrics of the tiny models, as in the tutorials' tables.

Causal LM: cross-entropy (nats per token), perplexity e^CE, next-token accuracy, bits per
character CE / ln 2, and distinct-1/2 of a seeded sample (unique n-grams / all n-grams).
Masked LM: the same on the masked positions only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.inference.generation import generate
from core.inference.sampling import SamplingSettings
from core.learning.data import mlm_mask, mlm_windows
from core.model.cache import kinds
from core.model.transformer import HookedTransformer


def sample_text(model: HookedTransformer, prompt: str, n: int, settings: SamplingSettings, seed: int = 0) -> str:
    """n new tokens, the model reading the last n_ctx tokens of the text (the tutorials' sampling loop)."""
    ids = model.tokenizer.encode(prompt)
    return model.tokenizer.decode(generate(model, ids, n, use_cache=False, settings=settings, seed=seed,
                                           window=True).new_ids)


def distinct_n(tokens: list, n: int) -> float:
    """Unique n-grams / all n-grams: 1 means nothing repeats, near 0 means a loop."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


@torch.no_grad()
def evaluate_clm(model: HookedTransformer, text: str, sample_prompt: str = "ROMEO:\n", sample_tokens: int = 400) -> dict:
    """CE (nats/token), PPL, next-token accuracy, BPC and distinct-1/2 of a seeded sample of sample_tokens (0: none)."""
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
    metrics = {"cross_entropy": ce, "perplexity": math.exp(ce), "accuracy": correct / count, "bpc": ce / math.log(2),
               "tokens": count}
    if sample_tokens:
        generated = sample_text(model, sample_prompt, sample_tokens, SamplingSettings(0.8, 50, 1.0))
        tokens = model.tokenizer.encode(generated)
        metrics.update(distinct_1=distinct_n(tokens, 1), distinct_2=distinct_n(tokens, 2), sample=generated)
    return metrics


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


def evaluate(model: HookedTransformer, text: str, sample_prompt: str = "ROMEO:\n", sample_tokens: int = 400) -> dict:
    if model.cfg.head == "mlm":
        return evaluate_mlm(model, text)
    return evaluate_clm(model, text, sample_prompt, sample_tokens)


@torch.no_grad()
def expert_choices(model: HookedTransformer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N,) of the text and the experts each layer chose for them (L, N, K)."""
    data = torch.tensor(model.tokenizer.encode(text))
    T = model.cfg.n_ctx
    windows = data[: len(data) // T * T].view(-1, T) if len(data) >= T else data[None]
    chosen = []
    for batch in windows.split(64):
        _, cache = model.run_with_cache(batch, names=kinds("expert_indices"), logits=False)
        chosen.append(cache.stack("expert_indices").reshape(model.cfg.n_layers, -1, model.cfg.top_k))
    return windows.reshape(-1), torch.cat(chosen, dim=1)


def expert_load(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(L, N, K) chosen experts -> (L, E) share of routing slots each expert received."""
    counts = torch.stack([layer.reshape(-1).bincount(minlength=n_experts) for layer in indices])
    return counts.float() / counts.sum(-1, keepdim=True)


CHAR_CLASSES = {"lower-case letters": str.islower, "capitals": str.isupper, "spaces and newlines": str.isspace,
                "punctuation": lambda ch: not ch.isalnum() and not ch.isspace(), "digits": str.isdigit}


def routing_by_class(model: HookedTransformer, text: str) -> dict[str, torch.Tensor]:
    """{character class: (L, E) share of that class's routing slots per expert}."""
    ids, indices = expert_choices(model, text)
    chars = [model.tokenizer.decode([i]) for i in ids.tolist()]
    out = {}
    for name, test in CHAR_CLASSES.items():
        keep = torch.tensor([test(ch) for ch in chars])
        if keep.any():
            out[name] = expert_load(indices[:, keep], model.cfg.n_experts)
    return out


def moe_report(model: HookedTransformer, text: str) -> dict:
    """Expert load per layer and routing by character class, as nested lists for JSON."""
    _, indices = expert_choices(model, text)
    return {"load": expert_load(indices, model.cfg.n_experts).tolist(),
            "by_class": {name: share.tolist() for name, share in routing_by_class(model, text).items()}}


def moe_markdown(report: dict) -> str:
    """The report as Markdown tables: load per layer, then each class's favourite experts per layer."""
    E = len(report["load"][0])
    head = "| layer | " + " | ".join(f"e{e}" for e in range(E)) + " |\n|---|" + "---|" * E + "\n"
    load = head + "".join(f"| {i} | " + " | ".join(f"{x:.1%}" for x in row) + " |\n" for i, row in enumerate(report["load"]))
    classes = "| class | " + " | ".join(f"layer {i}: top experts" for i in range(len(report["load"]))) + " |\n"
    classes += "|---|" + "---|" * len(report["load"]) + "\n"
    for name, layers in report["by_class"].items():
        cells = []
        for row in layers:
            top = sorted(range(E), key=lambda e: -row[e])[:2]
            cells.append(", ".join(f"e{e} {row[e]:.0%}" for e in top))
        classes += f"| {name} | " + " | ".join(cells) + " |\n"
    return load + "\n" + classes
