"""Preference tuning with DPO (Rafailov et al. 2023, "Direct Preference Optimization"): RLHF's third stage without a
reward model and without sampling.

RLHF (a) fine-tunes on demonstrations, (b) fits a reward model r(x, y) to human comparisons "y_c is better than
y_r", then (c) maximises E[r(x, y)] - beta KL(pi || pi_ref) with PPO, sampling from the policy as it goes. DPO
notices that the best policy for (c) is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x), so a policy defines its
own reward, r(x, y) = beta log(pi(y|x) / pi_ref(y|x)) + beta log Z(x), and Z cancels in a comparison. Fitting that
implicit reward to the comparisons (Bradley-Terry, as (b) would) is one loss on the policy:

    loss = -log sigmoid( beta [ (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x)) ] )

Here log pi(y|x) is a sum over the response's tokens only: the prompt is given, not generated. The reference
is a frozen copy of the starting model; beta is how far the policy may wander from it.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from core.inference.sampling import SamplingSettings, sample
from core.learning.preference_pairs import GENTLE, GRIM, words
from core.model.kv_cache import KVCache
from core.model.transformer import HookedTransformer


@dataclass(frozen=True)
class DpoSettings:
    beta: float = 0.5            # the KL penalty's weight: small lets the policy move far from the reference (the paper
    #                              uses 0.1; a model this small loses its spelling there within 60 steps)
    lr: float = 1e-4             # AdamW's rate (constant)
    steps: int = 60
    batch: int = 32              # pairs per step
    eval_every: int = 10         # held-out pairs measured every this many steps
    seed: int = 0


@dataclass(frozen=True)
class Pairs:
    """Pairs as one padded batch: the chosen rows, then the rejected rows in the same order."""
    ids: torch.Tensor            # (2N, T) prompt, response, then padding (id 0)
    response: torch.Tensor       # (2N, T) True at the response's tokens

    @property
    def n(self) -> int:
        return self.ids.shape[0] // 2

    def take(self, rows: torch.Tensor) -> Pairs:
        """The pairs numbered `rows` (K,), as a batch of 2K rows."""
        both = torch.cat([rows, rows + self.n])
        width = int(self.response[both].nonzero()[:, 1].max()) + 1               # drop the padding they all share
        return Pairs(self.ids[both, :width], self.response[both, :width])


def encode_pairs(tokenizer, pairs: list[dict]) -> Pairs:
    """[{prompt, chosen, rejected}] -> Pairs: each row is a prompt followed by one of its responses."""
    rows = [(tokenizer.encode(p["prompt"]), tokenizer.encode(p[side])) for side in ("chosen", "rejected") for p in pairs]
    T = max(len(x) + len(y) for x, y in rows)
    ids, response = torch.zeros(len(rows), T, dtype=torch.long), torch.zeros(len(rows), T, dtype=torch.bool)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x) + len(y)] = torch.tensor(x + y)
        response[i, len(x):len(x) + len(y)] = True
    return Pairs(ids, response)


def response_logprob(logits: torch.Tensor, ids: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """log p(response | prompt) per row, (B,): logits (B, T-1, V) read at ids[:, :-1] predict ids[:, 1:]; only the
    response's tokens count (the prompt is given, the padding is not text)."""
    logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]        # (B, T-1) log p of each next token
    return (logp * response[:, 1:]).sum(-1)


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss, averaged over pairs, and each pair's implicit rewards beta log(pi / ref), (N,) each."""
    chosen_reward = beta * (pi_chosen - ref_chosen)
    rejected_reward = beta * (pi_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


def response_kl(pi_logits: torch.Tensor, ref_logits: torch.Tensor, response: torch.Tensor) -> float:
    """KL(pi || ref) over the whole vocabulary at each position that predicts a response token, averaged over
    those positions: exact, not the one-sample estimate log pi(y) - log ref(y) that PPO's penalty uses."""
    pi, ref = pi_logits.log_softmax(-1), ref_logits.log_softmax(-1)           # (B, T-1, V)
    kl = (pi.exp() * (pi - ref)).sum(-1)                                       # (B, T-1)
    keep = response[:, 1:]
    return float(kl[keep].mean())


@dataclass
class Measure:
    """The numbers of one set of pairs: means over its pairs."""
    loss: float
    chosen_reward: float
    rejected_reward: float
    accuracy: float              # share of pairs whose chosen reward beats the rejected one
    pi_chosen: float             # log pi(y_c | x), nats
    pi_rejected: float
    kl: float

    @property
    def margin(self) -> float:
        return self.chosen_reward - self.rejected_reward


def measure(pi_logits, ref_logits, batch: Pairs, beta: float) -> tuple[torch.Tensor, Measure]:
    """The DPO loss of a batch (differentiable when pi_logits is) and its Measure."""
    n = batch.n
    pi = response_logprob(pi_logits, batch.ids, batch.response)                # (2N,)
    with torch.no_grad():
        ref = response_logprob(ref_logits, batch.ids, batch.response)
    loss, chosen, rejected = dpo_loss(pi[:n], pi[n:], ref[:n], ref[n:], beta)
    return loss, Measure(loss.item(), chosen.mean().item(), rejected.mean().item(),
                         (chosen > rejected).float().mean().item(), pi[:n].mean().item(), pi[n:].mean().item(),
                         response_kl(pi_logits.detach(), ref_logits, batch.response))


@torch.no_grad()
def evaluate(policy: HookedTransformer, reference: HookedTransformer, pairs: Pairs, beta: float,
             chunk: int = 128) -> Measure:
    """The Measure of every pair, in chunks of `chunk` pairs (a chunk's values weighted by its size)."""
    parts = []
    for start in range(0, pairs.n, chunk):
        b = pairs.take(torch.arange(start, min(start + chunk, pairs.n)))
        parts.append((b.n, measure(policy(b.ids[:, :-1]), reference(b.ids[:, :-1]), b, beta)[1]))
    mean = lambda key: sum(k * getattr(m, key) for k, m in parts) / pairs.n
    return Measure(*(mean(key) for key in Measure.__dataclass_fields__))


SAMPLING = SamplingSettings(temperature=0.8)


@torch.no_grad()
def sample_lines(model: HookedTransformer, prompt_ids: list[int], n: int, max_new: int, seed: int) -> list[list[int]]:
    """n samples after one prompt, each up to its first newline (at most max_new tokens), drawn together with a KV
    cache: (n, P) prompts -> n lists of new ids."""
    g = torch.Generator().manual_seed(seed)
    cache, x = KVCache(model.cfg.n_layers), torch.tensor([prompt_ids] * n)     # (n, P)
    out = []
    for _ in range(max_new):
        x = sample(model(x, kv_cache=cache, last_only=True)[:, -1], SAMPLING, g)[:, None]  # (n, 1)
        out.append(x)
    newline = model.tokenizer.encode("\n")[0]
    rows = torch.cat(out, 1).tolist()                                           # (n, max_new)
    return [row[:row.index(newline)] if newline in row else row for row in rows]


def word_counts(lines: list[str]) -> dict[str, int]:
    """How many lines have a gentle word, and how many a grim one."""
    return {"gentle": sum(bool(words(line) & GENTLE) for line in lines),
            "grim": sum(bool(words(line) & GRIM) for line in lines)}


@dataclass
class DpoRun:
    """A DPO run as it goes: what the tab draws."""
    policy: HookedTransformer
    reference: HookedTransformer
    settings: DpoSettings
    train_log: list[tuple[int, Measure]] = field(default_factory=list)    # the training batch of each step
    heldout_log: list[tuple[int, Measure]] = field(default_factory=list)  # all held-out pairs, every eval_every
    before: dict[str, list[str]] = field(default_factory=dict)           # sample prompt -> lines, the reference's
    after: dict[str, list[str]] = field(default_factory=dict)            # the same prompts, the policy's
    train_final: Measure | None = None                                   # every training pair, at the end
    step: int = 0
    phase: str = "starting"
    stopped: bool = False
    seconds: float = 0.0                                                  # training steps only


def copies(base: HookedTransformer) -> tuple[HookedTransformer, HookedTransformer]:
    """(policy, reference): two copies of the shared model, which is never trained; the tokenizer is shared."""
    copy_of = lambda: copy.deepcopy(base, memo={id(base.tokenizer): base.tokenizer})
    return copy_of().train().requires_grad_(True), copy_of().eval().requires_grad_(False)


def samples(model: HookedTransformer, prompts: list[str], n: int, max_new: int, seed: int) -> dict[str, list[str]]:
    tok = model.tokenizer
    return {p: [tok.decode(s) for s in sample_lines(model.eval(), tok.encode(p), n, max_new, seed + i)]
            for i, p in enumerate(prompts)}


def dpo(base: HookedTransformer, train: list[dict], heldout: list[dict], prompts: list[str],
        settings: DpoSettings = DpoSettings(), should_stop: Callable[[], bool] = lambda: False,
        n_samples: int = 8, max_new: int = 60) -> Iterator[DpoRun]:
    """Train a copy of `base` with DPO on the `train` pairs against a frozen copy, yielding the DpoRun after every
    step and every stage around it. should_stop() is read before each step: when it answers True the training ends
    there, and the measurements and the samples after it still run."""
    policy, reference = copies(base)
    r = DpoRun(policy, reference, settings)
    train_pairs, held_pairs = encode_pairs(base.tokenizer, train), encode_pairs(base.tokenizer, heldout)
    r.phase = "sampling before"
    yield r
    r.before = samples(reference, prompts, n_samples, max_new, settings.seed)
    r.heldout_log.append((0, evaluate(reference, reference, held_pairs, settings.beta)))
    opt = torch.optim.AdamW(policy.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(train_pairs.n, generator=g)
    for step in range(1, settings.steps + 1):
        if should_stop():
            r.stopped = True
            break
        start = time.perf_counter()
        at = (step - 1) * settings.batch % train_pairs.n                       # through the pairs in a seeded order
        rows = order.roll(-at)[:settings.batch]
        r.train_log.append((step, dpo_step(policy, reference, train_pairs.take(rows), settings.beta, opt)))
        r.seconds += time.perf_counter() - start
        if step % settings.eval_every == 0 or step == settings.steps:
            r.heldout_log.append((step, evaluate(policy, reference, held_pairs, settings.beta)))
            policy.train()
        r.step, r.phase = step, f"step {step} of {settings.steps}"
        yield r
    r.phase = "measuring"
    yield r
    if r.heldout_log[-1][0] != r.step:
        r.heldout_log.append((r.step, evaluate(policy, reference, held_pairs, settings.beta)))
    r.train_final = evaluate(policy, reference, train_pairs, settings.beta)
    r.after = samples(policy, prompts, n_samples, max_new, settings.seed)
    r.phase = "done"
    yield r


def dpo_step(policy: HookedTransformer, reference: HookedTransformer, batch: Pairs, beta: float,
             opt: torch.optim.Optimizer) -> Measure:
    """One optimiser step on a batch of pairs: the reference runs without gradients, only the policy learns."""
    with torch.no_grad():
        ref_logits = reference(batch.ids[:, :-1])                               # (2B, T-1, V)
    loss, m = measure(policy(batch.ids[:, :-1]), ref_logits, batch, beta)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    return m


CHANCE_LOSS = math.log(2)  # the loss at the start, where the policy is the reference and every reward is 0
