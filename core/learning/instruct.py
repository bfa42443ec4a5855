"""Instruction tuning: the chat template a tuned model reads, and supervised fine-tuning (SFT) that makes one.

A base model only continues text. Instruction tuning trains it on (instruction, response) pairs laid out in a
template, with the loss on the response tokens only: the model learns to answer, not to write instructions.

    prompt    "Instruction:\\nAdd 12 and 23.\\nResponse:\\n"     read, not scored     labels -100
    response  "35[end]"                                         scored               labels = the next token

A chat model's template does the same with special tokens (ChatML: <|im_start|>user ... <|im_end|>); its
*generation prompt*, <|im_start|>assistant and a newline, is where the model's reply begins.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from core.inference.generation import Generation, generate_steps
from core.inputs import InputError
from core.learning.finetune import LoraSettings, add_lora
from core.learning.instruction_data import END, PROMPT
from core.learning.training import evaluating, lr_at, training_loss
from core.model.transformer import HookedTransformer
from core.weights.tokenizers import Token

# The chat template, as tokens.

ROLES = ("system", "user", "assistant")


@dataclass
class ChatToken:
    token: Token
    kind: str   # "special" (<|im_start|>, <|im_end|>), "role" (user, ...), "system", "user" (the instruction), "markup"
    part: str   # "system message", "user message" or "generation prompt" (where the reply begins)


def chat_template(tokenizer) -> str | None:
    """The tokenizer's chat template (a Jinja text shipped with the model), or None: a model trained only to
    continue text has none."""
    return getattr(getattr(tokenizer, "hf", None), "chat_template", None) or None


def chat_prompt(tokenizer, instruction: str) -> list[ChatToken]:
    """The instruction as a one-message chat in the model's template, with the generation prompt, token by token.

    The template is rendered twice, with and without the generation prompt: the difference is the generation
    prompt. The instruction's tokens are those whose characters overlap its place in the rendered text; a role
    name is the line right after a special token, where that line is a role ("assistant" may be two tokens)."""
    messages = [{"role": "user", "content": instruction}]
    text = tokenizer.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head = tokenizer.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    cue = len(head) if text.startswith(head) else len(text)
    start = text.rfind(instruction, 0, cue)
    user = (start, start + len(instruction)) if start >= 0 else (0, 0)  # a template that rewrites the text: none
    out, role, role_end = [], "", -1
    for t in tokenizer.tokens(text, add_special_tokens=False):  # the template writes its own special tokens
        if t.id in tokenizer.special_ids:
            kind, newline = "special", text.find("\n", t.end)
            line = text[t.end:newline if newline >= 0 else len(text)]
            if line.strip() in ROLES:
                role, role_end = line.strip(), t.end + len(line)
        elif t.end <= role_end:
            kind = "role"
        elif t.start < user[1] and t.end > user[0]:
            kind = "user"
        else:
            kind = "system" if role == "system" and text[t.start:t.end].strip() else "markup"
        part = "generation prompt" if t.start >= cue else f"{role or 'system'} message"
        out.append(ChatToken(t, kind, part))
    return out


def reply_steps(model: HookedTransformer, ids: list[int], max_new_tokens: int, k: int = 5) -> Iterator[Generation]:
    """The model's greedy reply after a templated prompt, one token per step with the KV cache, each step's k
    likeliest tokens kept with their probabilities; it stops at a special token (<|im_end|> ends a turn)."""
    yield from generate_steps(model, ids, max_new_tokens, stop_ids=model.tokenizer.special_ids, alternatives=k)


# Supervised fine-tuning on instruction/response pairs.

@dataclass(frozen=True)
class SFTSettings:
    steps: int = 300
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 20        # lr_at's linear warm-up, then cosine decay to 10%
    eval_every: int = 10    # held-out response loss on the curve every this many steps
    seed: int = 0


def encode_pair(tokenizer, instruction: str, response: str) -> tuple[list[int], list[int]]:
    """(inputs, labels) of one training example, each of length n - 1 for its n tokens: the label at position t
    is token t + 1 where that token belongs to the response (its end marker included), -100 where it belongs to
    the prompt. The prompt and the response are tokenized apart, so the boundary is the same for every tokenizer."""
    prompt = tokenizer.encode(PROMPT.format(instruction=instruction))
    answer = tokenizer.encode(response + END)
    ids = prompt + answer
    labels = [-100] * (len(prompt) - 1) + answer
    return ids[:-1], labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples of different lengths as one batch (B, T): inputs padded with pad_id at the end, labels with -100
    (the model is causal, so padding after a text never changes what it computes for the text)."""
    T = max(len(x) for x, _ in examples)
    x = torch.tensor([ids + [pad_id] * (T - len(ids)) for ids, _ in examples])
    y = torch.tensor([labels + [-100] * (T - len(labels)) for _, labels in examples])
    return x, y


@dataclass
class SFTRun:
    """A copy of the base model that learns (through a LoRA adapter where `lora` is given), and its data."""
    model: HookedTransformer
    settings: SFTSettings
    train: list[tuple[list[int], list[int]]]            # encoded training pairs
    heldout: tuple[torch.Tensor, torch.Tensor]          # every held-out pair, one batch
    trainable: int                                      # parameters the optimiser updates
    adapter: object = None                              # the peft model, for LoRA
    params: list = field(default_factory=list)          # what the optimiser updates


@dataclass
class SFTStep:
    step: int
    loss: float               # response loss on this step's batch
    heldout: float | None     # response loss on the held-out pairs, every eval_every steps and at the last
    seconds: float            # since the loop started


def own_copy(model: HookedTransformer) -> HookedTransformer:
    """A copy to train (the zoo's model is shared and never changes); the tokenizer is shared."""
    return copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})


def prepare_sft(base: HookedTransformer, pairs: dict, settings: SFTSettings = SFTSettings(),
                lora: LoraSettings | None = None) -> SFTRun:
    """A seeded copy of the base model (every weight trains) or a LoRA adapter on it, and the encoded pairs."""
    tok = base.tokenizer
    encode = lambda ps: [encode_pair(tok, p["instruction"], p["response"]) for p in ps]
    train, held = encode(pairs["train"]), encode(pairs["heldout"])
    longest = max(len(x) for x, _ in train + held)
    if longest > base.cfg.n_ctx:
        raise InputError(f"An example is {longest} tokens and {base.name if hasattr(base, 'name') else 'the model'} "
                         f"reads {base.cfg.n_ctx}; use shorter pairs.")
    torch.manual_seed(settings.seed)                                    # LoRA's initial A and its dropout
    if lora is None:
        model, adapter = own_copy(base).requires_grad_(True), None
        params = list(model.parameters())
    else:
        adapter = add_lora(base, lora)
        model, params = adapter.get_base_model(), [p for p in adapter.parameters() if p.requires_grad]
    return SFTRun(model, settings, train, collate(held), sum(p.numel() for p in params), adapter, params)


def response_loss(model: HookedTransformer, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean cross-entropy (nats per token) over the response tokens of a batch, in eval mode."""
    with evaluating(model):
        return training_loss(model, *batch).item()


def sft_steps(run: SFTRun, should_stop: Callable[[], bool] = lambda: False) -> Iterator[SFTStep]:
    """The SFT loop, one optimiser step per item: a random batch of pairs, the loss on their response tokens only.
    should_stop() is asked before every step, so a run stops within one step of Cancel."""
    s, model = run.settings, run.model
    g = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(run.params, lr=s.lr, betas=(0.9, 0.95), weight_decay=0.0)
    start = time.perf_counter()
    model.train()
    for step in range(s.steps):
        if should_stop():
            return
        x, y = collate([run.train[i] for i in torch.randint(len(run.train), (s.batch,), generator=g).tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
        loss = training_loss(model, x, y)                               # -100 labels: the prompt is not scored
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        opt.step()
        last = step + 1 == s.steps
        heldout = response_loss(model, run.heldout) if (step + 1) % s.eval_every == 0 or last else None
        yield SFTStep(step + 1, loss.item(), heldout, time.perf_counter() - start)


@torch.no_grad()
def answer(model: HookedTransformer, instruction: str, max_new_tokens: int = 24) -> str:
    """The model's greedy response to an instruction in the SFT template, up to its end marker (or the cap)."""
    ids = model.tokenizer.encode(PROMPT.format(instruction=instruction))
    n = min(max_new_tokens, model.cfg.n_ctx - len(ids))
    text = ""
    with evaluating(model):
        for g in generate_steps(model, ids, n):
            text = model.tokenizer.decode(g.new_ids)
            if END in text:
                return text[:text.index(END)]
    return text + " …"
