"""Fine-tuning: adapt a trained model to a new corpus, every weight at once or through LoRA.

    full   every weight W learns; AdamW keeps two numbers per weight (running mean and variance
           of its gradient), so the optimiser state is twice the model
    LoRA   W stays frozen; each chosen matrix learns a low-rank change
               dW = (alpha / r) B A      A (r, d_in), B (d_out, r), B starts at zero
           so the model starts unchanged and r (d_in + d_out) numbers learn instead of d_in d_out

Merging adds dW into W: one matrix again, no adapter to run, the same logits. The adapter comes
from the `peft` library, which wraps any nn.Linear by its name (q_proj, v_proj, ...): our hook points
sit between the modules, so they fire on the adapted model as on the original.

`compare` runs both on the same batches, one step each in turn, and yields its progress, so a tab can
draw it live and stop it. BLEU and ROUGE come from `sacrebleu` and `rouge-score`.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from core.inference.generation import generate
from core.inference.sampling import SamplingSettings
from core.inputs import InputError, strip_controls
from core.learning.data import clm_batch
from core.learning.training import training_loss
from core.model.kv_cache import KVCache
from core.model.transformer import HookedTransformer
from core.paths import DATA

CORPORA = {  # title -> (file in assets/data, a prompt from the same kind of text); sources in assets/data/README.md
    "The Constitution of the United States": ("constitution.txt", "The Congress shall have Power to"),
    "Genesis 1-23 (King James Version)": ("genesis.txt", "And God said unto Abraham,"),
    "The Declaration of Independence": ("declaration.txt", "He has refused his Assent to"),
}
MIN_CHARS, MAX_CHARS = 500, 200_000  # enough for a held-out tenth; a paste beyond this is refused, not cut
HELDOUT_SHARE = 0.1
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class RunSettings:
    steps: int = 60
    batch: int = 16
    seq_len: int = 128           # T, tokens per training window
    lr_full: float = 1e-3
    lr_lora: float = 5e-3        # LoRA learns a small change from zero, and takes a larger rate
    eval_every: int = 5          # held-out loss on the curves every this many steps
    seed: int = 0


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8                # r
    alpha: float = 16.0          # dW is scaled by alpha / r, so changing r keeps the step size
    dropout: float = 0.05        # on the adapter's input, while training
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def read_corpus(name: str) -> str:
    if name not in CORPORA:
        raise InputError(f"There is no corpus {name!r}; choose one of: {', '.join(CORPORA)}.")
    return (DATA / CORPORA[name][0]).read_text()


def check_corpus(text) -> str:
    """The text, fit to fine-tune on, or an InputError saying what is wrong with it."""
    text = strip_controls("" if text is None else str(text))
    if not text.strip():
        raise InputError("The corpus is empty: pick one of the corpora or paste a text.")
    if len(text) < MIN_CHARS:
        raise InputError(f"The corpus has {len(text):,} characters; paste at least {MIN_CHARS:,}, so that a tenth "
                         "of it can be held out to measure the loss on.")
    if len(text) > MAX_CHARS:
        raise InputError(f"The corpus has {len(text):,} characters; paste at most {MAX_CHARS:,} (about 100 pages), "
                         "which is more than a run here can read.")
    return text


def split_ids(model: HookedTransformer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 90% of the text and the last 10% as token ids (N,) and (M,): the held-out part is never trained on."""
    cut = int(len(text) * (1 - HELDOUT_SHARE))
    return (torch.tensor(model.tokenizer.encode(part), device=model.device) for part in (text[:cut], text[cut:]))


def windows(ids: torch.Tensor, T: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows (W, T) of the ids and their next tokens (W, T), at most `limit` of them."""
    starts = list(range(0, len(ids) - T, T))[:limit]
    return torch.stack([ids[s:s + T] for s in starts]), torch.stack([ids[s + 1:s + T + 1] for s in starts])


@torch.no_grad()
def heldout_loss(model: HookedTransformer, ids: torch.Tensor, T: int, limit: int | None = None) -> float:
    """Mean cross-entropy (nats per token) of the next token over held-out windows."""
    x, y = windows(ids, T, limit)
    return sum(F.cross_entropy(model(xb).flatten(0, 1), yb.flatten(), reduction="sum").item()
               for xb, yb in zip(x.split(16), y.split(16))) / y.numel()


def add_lora(model: HookedTransformer, lora: LoraSettings) -> PeftModel:
    """A copy of the model with a LoRA adapter on every Linear whose name ends in one of lora.targets."""
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [t for t in lora.targets if t in present]
    if not targets:
        raise InputError(f"None of {', '.join(lora.targets) or 'no matrices'} is in this model; "
                         f"adapt some of: {', '.join(n for n in LINEAR_NAMES if n in present)}.")
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    return get_peft_model(own_copy(model).requires_grad_(False), config)


def own_copy(model: HookedTransformer) -> HookedTransformer:
    """A copy to train: the zoo's model is shared by every user and never changes. The tokenizer is shared."""
    return copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})


def lora_parameters(model: HookedTransformer, targets) -> int:
    """What LoRA should train, counted from the shapes: r (d_in + d_out) for each adapted matrix."""
    return sum(m.in_features + m.out_features for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the optimiser's state: for AdamW two tensors (mean, variance) the size of each trained weight."""
    return sum(t.numel() * t.element_size() for state in opt.state.values() for t in state.values()
               if torch.is_tensor(t) and t.dim() > 0)


def delta_w(adapted: PeftModel, name: str) -> torch.Tensor:
    """The change LoRA makes to one matrix, dW = (alpha / r) B A, (d_out, d_in): rank r at most."""
    layer = adapted.get_base_model().get_submodule(name)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight       # (r, d_in), (d_out, r)
    return (B @ A * layer.scaling["default"]).detach()


@torch.no_grad()
def greedy(model: HookedTransformer, prompts: torch.Tensor, n: int) -> torch.Tensor:
    """prompts (B, P) -> the n most likely next tokens of each, (B, n), one position per step with a KV cache."""
    cache, x, out = KVCache(model.cfg.n_layers), prompts, []
    for _ in range(n):
        x = model(x, kv_cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(x)
    return torch.cat(out, dim=1)


_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])


def text_scores(model: HookedTransformer, ids: torch.Tensor, T: int, n: int = 16) -> dict[str, float]:
    """The tutorials' table: perplexity on held-out windows; BLEU (with its 1- to 4-gram precisions) and ROUGE F1
    of the model's greedy continuations of n held-out passages (first half of a window) against the text's own
    second half."""
    x, _ = windows(ids, T, n)
    half = T // 2
    decode = model.tokenizer.decode
    hyps = [decode(row) for row in greedy(model, x[:, :half], T - half).tolist()]
    refs = [decode(row) for row in x[:, half:].tolist()]
    bleu = BLEU().corpus_score(hyps, [refs])
    rouge = [_ROUGE.score(ref, hyp) for ref, hyp in zip(refs, hyps)]
    loss = heldout_loss(model, ids, T, FINAL_WINDOWS)
    scores = {"cross-entropy": loss, "perplexity": math.exp(loss), "bleu": bleu.score / 100}
    scores.update({f"{n}-gram": p / 100 for n, p in zip(range(1, 5), bleu.precisions)})
    scores.update({key: sum(r[key].fmeasure for r in rouge) / len(rouge) for key in rouge[0]})
    return scores


@dataclass
class Side:
    """One model in the comparison: the one before fine-tuning, or one way of fine-tuning it, as it goes."""
    name: str                                   # "before", "full" or "LoRA"
    model: HookedTransformer                    # the copy that learns (for LoRA the model inside the adapter)
    trainable: int = 0                          # parameters the optimiser updates (0: the model before)
    optimizer: torch.optim.Optimizer | None = None  # while it trains
    state_bytes: int = 0                        # the optimiser's state, measured after the first step
    adapter: PeftModel | None = None
    losses: list[float] = field(default_factory=list)               # training loss, one per step
    heldout: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    step_seconds: list[float] = field(default_factory=list)
    probs: torch.Tensor | None = None           # (V,) next token after the prompt
    sample: str = ""
    scores: dict[str, float] = field(default_factory=dict)          # text_scores, when done
    seconds: float = 0.0                        # time spent training

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        start = time.perf_counter()
        loss = training_loss(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], 1.0)
        self.optimizer.step()
        self.state_bytes = self.state_bytes or optimizer_bytes(self.optimizer)
        self.step_seconds.append(time.perf_counter() - start)
        self.seconds += self.step_seconds[-1]
        self.losses.append(loss.item())


@dataclass
class Comparison:
    sides: dict[str, Side]
    total: int                                  # the model's parameters
    T: int                                      # tokens per window
    tokens: tuple[int, int]                     # training and held-out tokens
    step: int = 0
    phase: str = "starting"
    stopped: bool = False                       # should_stop ended the training early
    matrix: str = ""                            # the adapted matrix whose change is kept below
    lora_delta: torch.Tensor | None = None      # (d_out, d_in) LoRA's dW = (alpha / r) B A
    full_delta: torch.Tensor | None = None      # the same matrix's change under full fine-tuning
    merge_diff: float | None = None             # max |logits merged - logits with the adapter|


EVAL_WINDOWS, FINAL_WINDOWS = 8, 64  # held-out windows for the curves and for the final numbers


def sides_for(base: HookedTransformer, methods, run: RunSettings, lora: LoraSettings) -> dict[str, Side]:
    """The untouched model and a copy for each method, with its optimiser: the shared model is never trained."""
    sides = {"before": Side("before", base)}
    if "full" in methods:
        model = own_copy(base).requires_grad_(True)
        opt = torch.optim.AdamW(model.parameters(), lr=run.lr_full, betas=(0.9, 0.95), weight_decay=0.0)
        sides["full"] = Side("full", model, sum(p.numel() for p in model.parameters()), opt)
    if "LoRA" in methods:
        adapter = add_lora(base, lora)
        trained = [p for p in adapter.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trained, lr=run.lr_lora, betas=(0.9, 0.95), weight_decay=0.0)
        sides["LoRA"] = Side("LoRA", adapter.get_base_model(), sum(p.numel() for p in trained), opt, adapter=adapter)
    return sides


def compare(base: HookedTransformer, text: str, prompt_ids: list[int], run: RunSettings = RunSettings(),
            lora: LoraSettings = LoraSettings(), methods=("full", "LoRA"),
            should_stop: Callable[[], bool] = lambda: False, sample_tokens: int = 100) -> Iterator[Comparison]:
    """Fine-tune copies of `base` on the first 90% of `text`, every method on the same batches, and yield the
    Comparison after every step and every stage of the evaluation that follows. should_stop() is read before each
    step: when it answers True the training ends there and the evaluation still runs."""
    train_ids, held_ids = split_ids(base, text)
    T = min(run.seq_len, base.cfg.n_ctx, len(held_ids) - 1, len(train_ids) - 2)
    if T < 8:
        raise InputError(f"The corpus gives this model only {len(held_ids)} held-out tokens; paste a longer text.")
    torch.manual_seed(run.seed)                                                 # LoRA's initial A and its dropout
    c = Comparison(sides_for(base, methods, run, lora), sum(p.numel() for p in base.parameters()), T,
                   (len(train_ids), len(held_ids)))
    start = heldout_loss(base, held_ids, T, EVAL_WINDOWS)
    for side in c.sides.values():
        side.heldout.append((0, start))
    yield c
    g = torch.Generator().manual_seed(run.seed)
    learners = [side for side in c.sides.values() if side.trainable]
    for side in learners:
        side.model.train()
    for step in range(1, run.steps + 1):
        if should_stop():
            c.stopped = True
            break
        x, y = clm_batch(train_ids, run.batch, T, g)                            # (B, T) each, the same for all
        for side in learners:
            side.step(x, y)
            if step % run.eval_every == 0 or step == run.steps:
                side.model.eval()
                side.heldout.append((step, heldout_loss(side.model, held_ids, T, EVAL_WINDOWS)))
                side.model.train()
        c.step, c.phase = step, f"step {step} of {run.steps}"
        yield c
    for side in learners:
        side.optimizer = None                                                   # its state is no longer needed
    yield from finish(c, held_ids)
    on_prompt(c, prompt_ids, sample_tokens, run.seed)
    c.phase = "done"
    yield c


SAMPLING = SamplingSettings(temperature=0.8, top_k=50)


def shown_matrix(model: HookedTransformer) -> str:
    """The adapted matrix whose change the tab draws: the first adapted one of the last block."""
    names = [name for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    last = [n for n in names if n.startswith(f"blocks.{model.cfg.n_layers - 1}.")]
    return (last or names)[0]


@torch.no_grad()
def merge(c: Comparison, probe: torch.Tensor) -> None:
    """Keep LoRA's change to one matrix (and full fine-tuning's change to the same matrix), then merge the adapter
    into its weights and record how far the merged model's logits on probe (1, T) are from the adapter's."""
    side = c.sides["LoRA"]
    c.matrix = shown_matrix(side.model)
    c.lora_delta = delta_w(side.adapter, c.matrix)
    if "full" in c.sides:
        weight = lambda name: c.sides[name].model.get_submodule(c.matrix).weight
        c.full_delta = weight("full") - weight("before")
    unmerged = side.model.eval()(probe)
    side.model = side.adapter.merge_and_unload()         # each adapted Linear becomes one Linear with W + dW
    c.merge_diff = (side.model(probe) - unmerged).abs().max().item()


def finish(c: Comparison, held_ids: torch.Tensor) -> Iterator[Comparison]:
    """After training: the merge, then each model's scores on the held-out text."""
    if "LoRA" in c.sides:
        merge(c, held_ids[None, :c.T])
    for side in c.sides.values():
        c.phase = f"measuring {side.name}"
        yield c
        side.scores = {**text_scores(side.model.eval(), held_ids, c.T), "time (s)": side.seconds}


@torch.no_grad()
def on_prompt(c: Comparison, prompt_ids: list[int], sample_tokens: int, seed: int = 0) -> None:
    """Each model's next-token probabilities after the prompt, and a sample that continues it (seeded)."""
    for side in c.sides.values():
        model = side.model.eval()
        side.probs = model(torch.tensor([prompt_ids], device=model.device), last_only=True)[0, -1].softmax(-1)  # (V,)
        n = min(sample_tokens, model.cfg.n_ctx - len(prompt_ids))
        side.sample = model.tokenizer.decode(generate(model, prompt_ids, n, settings=SAMPLING, seed=seed).new_ids)
