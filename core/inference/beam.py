"""Beam search: keep the `width` most likely partial texts, not just one, and grow them together.

Each step runs one batched forward over the kept beams (the KV cache holds one row per beam), scores every
(beam, next token) pair by its cumulative log-probability, and looks at the best 2 x width of them: a candidate
that ends with an end-of-text token becomes a finished hypothesis (if it is among the best `width`), the best
`width` others go on, and their cache rows are copied from the beams they grew from. A finished hypothesis is
ranked by  score = sum of log-probabilities / (new tokens) ** length_penalty  (penalty > 0 favours longer texts).

This is the search `transformers.generate(num_beams=...)` runs, with its three early-stopping rules:
True stops once `width` hypotheses are finished; False stops once no running beam, at its current length, could
beat the worst finished one; "never" assumes a positive length penalty could still lift a beam at full length.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.inputs import InputError
from core.model.kv_cache import KVCache
from core.model.transformer import HookedTransformer

EARLY_STOPPING = {"True": True, "False": False, "never": "never"}  # the setting as a word -> transformers' value


@dataclass
class Candidate:
    """One (beam, next token) pair a step looked at: the beam it extends (its slot in the step before), the token,
    the cumulative log-probability, and what became of it: "kept" (it goes on), "finished" (a hypothesis now),
    "pruned" (not among the best)."""
    parent: int
    token: int
    logprob: float
    fate: str = "pruned"


@dataclass
class Hypothesis:
    ids: list[int]       # the new tokens
    logprob: float       # their summed log-probability
    score: float         # logprob / len(ids) ** length_penalty: what ranks them
    step: int            # the step it finished at (0 = the first new token)
    node: int            # its candidate's index in that step's list


@dataclass
class BeamSearch:
    prompt_ids: list[int]
    width: int
    steps: list[list[Candidate]] = field(default_factory=list)  # every step's candidates, best first
    kept: list[list[int]] = field(default_factory=list)         # at each step, the candidates that went on (indices)
    finished: list[Hypothesis] = field(default_factory=list)    # the best `width`, best first
    stopped: str = ""                                           # why the search ended ("because ...")


def _reorder(cache: KVCache, rows: torch.Tensor) -> None:
    """Each beam's cache becomes the cache of the beam it grew from."""
    cache.keys = [k.index_select(0, rows) for k in cache.keys]
    cache.values = [v.index_select(0, rows) for v in cache.values]


@torch.no_grad()
def beam_search(model: HookedTransformer, ids, width: int, max_new_tokens: int, length_penalty: float = 1.0,
                early_stopping: bool | str = False, eos_ids=(), should_stop=None) -> BeamSearch:
    """Beam search from the prompt ids, recording every candidate each step looked at (see the module's text)."""
    if not model.cfg.causal or model.unembed is None:
        raise InputError("Beam search continues a text token by token, so it needs a decoder; this model is an encoder.")
    ids = torch.as_tensor(ids, device=model.device).reshape(1, -1)       # (1, T)
    if ids.shape[1] + max_new_tokens > model.cfg.n_ctx:
        raise InputError(f"{ids.shape[1]} + {max_new_tokens} tokens exceed the context of {model.cfg.n_ctx}")
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=model.device)
    keep = max(2, 1 + len(eos)) * width        # candidates looked at per step: enough that `width` can go on
    out = BeamSearch(prompt_ids=ids[0].tolist(), width=width)
    cache = KVCache(model.cfg.n_layers)
    logits = model(ids, kv_cache=cache, last_only=True)[:, -1].float()  # (1, V): the prompt runs once
    scores = torch.zeros(1, device=model.device)                          # (B,) each running beam's log-probability
    beams: list[list[int]] = [[]]                                         # each running beam's new tokens
    improvable = True
    for step in range(max_new_tokens):
        total = (logits.log_softmax(-1) + scores[:, None]).reshape(-1)   # (B * V,)
        best, flat = total.topk(min(keep, total.numel()))
        V = logits.shape[-1]
        parents, tokens = (flat // V).tolist(), (flat % V).tolist()
        last = step == max_new_tokens - 1
        ends = [last or t in eos for t in tokens]                         # the text stops here (end token or length)
        cands = [Candidate(p, t, s) for p, t, s in zip(parents, tokens, best.tolist())]
        full = len(out.finished) == width
        for i, c in enumerate(cands[:width]):                             # only the best `width` may finish
            if ends[i] and improvable and not (full and early_stopping is True):
                h = Hypothesis(beams[c.parent] + [c.token], c.logprob, c.logprob / (step + 1) ** length_penalty, step,
                               i)
                if len(out.finished) < width or h.score > out.finished[-1].score:
                    out.finished = sorted(out.finished + [h], key=lambda h: -h.score)[:width]
                    c.fate = "finished"
        going = [i for i in range(len(cands)) if not ends[i]][:width]
        out.steps.append(cands)
        out.kept.append(going)
        if last or not going:
            out.stopped = "it reached the length limit"
            break
        for i in going:
            cands[i].fate = "kept"
        beams = [beams[cands[i].parent] + [cands[i].token] for i in going]
        scores = best[going]
        rows = torch.tensor([cands[i].parent for i in going], device=model.device)
        length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step + 1
        full = len(out.finished) == width
        if full and float(scores[0]) / length ** length_penalty <= out.finished[-1].score:
            improvable = False                                            # no running beam can beat the worst one
            out.stopped = "no running beam could still beat the finished ones"
            break
        if full and early_stopping is True:
            out.stopped = f"{width} hypotheses had finished (early stopping)"
            break
        if should_stop is not None and should_stop():
            out.stopped = "it was cancelled"
            break
        _reorder(cache, rows)
        step_ids = torch.tensor([[cands[i].token] for i in going], device=model.device)   # (B, 1)
        logits = model(step_ids, kv_cache=cache, last_only=True)[:, -1].float()          # one forward for all beams
    return out


def path(search: BeamSearch, step: int, node: int) -> list[tuple[int, int]]:
    """The (step, candidate index) nodes that lead from the prompt to this candidate, first step first."""
    nodes = [(step, node)]
    while step > 0:
        slot = search.steps[step][node].parent           # the running beam it extended, a slot of the step before
        step, node = step - 1, search.kept[step - 1][slot]
        nodes.append((step, node))
    return nodes[::-1]
