"""HookedTransformer: embed -> blocks -> final norm -> head, for every family we show.

One class covers GPT-2 (learned positions, pre-LayerNorm, GELU), Llama/SmolLM2 (RoPE,
RMSNorm, SwiGLU, GQA), BERT/MiniLM (post-LayerNorm, bidirectional, MLM head) and
Mixtral-style MoE decoders; `ModelConfig` says which pieces to use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.inputs import InputError
from core.model import hooks as hooklib
from core.model.attention import Attention, build_mask, softcap
from core.model.cache import ActivationCache
from core.model.config import ModelConfig
from core.model.hooks import HookPoint
from core.model.kv_cache import KVCache
from core.model.mlp import ACTIVATIONS, MLP
from core.model.moe import MoE
from core.model.norm import Norm
from core.model.positional import rope_cos_sin, rope_inv_freq, sinusoidal_table


class Block(nn.Module):
    """Attention then FFN, each added to the residual stream, with norms where the family puts them:

        pre-norm (GPT-2, Llama):  x + f(ln(x))              post-norm (BERT):  ln(x + f(x))
        sandwich (Gemma 2/3):     x + ln_post(f(ln(x)))     output (OLMo 2):   x + ln_post(f(x))"""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.pre_norm = cfg.pre_norm
        inputs = cfg.in_norm or not cfg.pre_norm
        self.ln1 = Norm(cfg) if inputs else None
        self.attn = Attention(cfg, layer)
        self.ln2 = Norm(cfg) if inputs else None
        if cfg.out_norm:
            self.ln1_post, self.ln2_post = Norm(cfg), Norm(cfg)
        if cfg.n_experts:
            self.moe = MoE(cfg, layer)
        else:
            self.mlp = MLP(cfg)
        for name in ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]:
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x, mask, rope=None, kv_cache=None) -> torch.Tensor:
        ffn = self.moe if hasattr(self, "moe") else self.mlp
        x = self.hook_resid_pre(x)                                               # (B, T, C)
        if not self.pre_norm:  # BERT: norm(x + f(x))
            x = self.hook_resid_mid(self.ln1(x + self.hook_attn_out(self.attn(x, mask, rope, kv_cache))))
            return self.hook_resid_post(self.ln2(x + self.hook_mlp_out(ffn(x))))
        x = self.hook_resid_mid(x + self.hook_attn_out(self._out(1, self.attn(self._in(1, x), mask, rope, kv_cache))))
        return self.hook_resid_post(x + self.hook_mlp_out(self._out(2, ffn(self._in(2, x)))))

    def _in(self, i: int, x):
        norm = getattr(self, f"ln{i}")
        return x if norm is None else norm(x)

    def _out(self, i: int, y):
        return getattr(self, f"ln{i}_post")(y) if hasattr(self, f"ln{i}_post") else y


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))  # (V, C)
        self.token_type = nn.Parameter(torch.zeros(cfg.n_token_types, cfg.d_model)) if cfg.n_token_types else None
        self.scale = cfg.embed_scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.weight[ids]                                                     # (B, T, C)
        if self.scale != 1.0:                                                    # Granite: x 12
            x = x * self.scale
        return x if self.token_type is None else x + self.token_type[0]          # one segment: type 0


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.positions == "learned":
            self.weight = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))     # (n_ctx, C)
        else:
            self.register_buffer("weight", sinusoidal_table(cfg.n_ctx, cfg.d_model), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.weight[positions][None]                                      # (1, T, C)


class Unembed(nn.Module):
    """Hidden states -> vocabulary logits; BERT's MLM head first applies dense + act + norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transform = None
        if cfg.head == "mlm":
            self.transform = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), _Act(cfg.act),
                                           nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps))
        self.weight = None if cfg.tie_embeddings else nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.head == "mlm" else None
        self.divisor, self.cap = cfg.logit_divisor, cfg.logit_softcap
        self.hook_out = HookPoint()

    def forward(self, x: torch.Tensor, tied_weight: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        W = tied_weight if self.weight is None else self.weight
        logits = F.linear(x, W, self.bias)                                       # (B, T, V)
        if self.divisor != 1.0:                                                  # Granite: / 6
            logits = logits / self.divisor
        return self.hook_out(softcap(logits, self.cap))                          # Gemma 2: 30 tanh(l / 30)


class _Act(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.fn = ACTIVATIONS[name]

    def forward(self, x):
        return self.fn(x)


class HookedTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.hook_tokens, self.hook_embed = HookPoint(), HookPoint()
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg) if cfg.positions in ("learned", "sinusoidal") else None
        self.hook_pos_embed = HookPoint() if self.pos_embed is not None else None
        self.ln_embed = Norm(cfg) if cfg.embed_norm else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_final = Norm(cfg) if cfg.pre_norm else None
        self.unembed = Unembed(cfg) if cfg.head != "none" else None
        if cfg.positions == "rope":
            self.register_buffer("rope_inv_freq", rope_inv_freq(cfg.d_head, cfg.rope_theta), persistent=False)
            if cfg.rope_local_theta:  # Gemma 3's sliding layers
                self.register_buffer("rope_local_inv_freq", rope_inv_freq(cfg.d_head, cfg.rope_local_theta),
                                     persistent=False)
        self.tokenizer = None  # attached by the zoo
        self.hook_points = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module
        self.apply(_init_weights)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, last_only: bool = False, resume=None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V), or final hidden states (B, T, C) for head 'none'.

        last_only=True unembeds the last position only, (B, 1, V), as a generation loop needs: for SmolLM2 each
        position costs 49,152 rows of the unembedding. resume: see hidden."""
        x = self.hidden(ids, attention_mask, kv_cache, resume)
        return self.head(x[:, -1:] if last_only else x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, C) -> logits (B, T, V); the states themselves for a model with no head."""
        return x if self.unembed is None else self.unembed(x, self.embed.weight)

    def hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               kv_cache: KVCache | None = None, resume: tuple[int, torch.Tensor] | None = None,
               stop: int | None = None) -> torch.Tensor:
        """ids (B, T) -> the final hidden states (B, T, C) that the head reads.

        resume=(layer, x): start at that block with x (B, T, C) as its residual stream input, skipping the blocks
        before it (activation patching runs many sequences that agree up to the patched layer).
        stop=n: run blocks 0..n-1 only and return the residual stream after them, not normed (a figure of layer
        n-1 needs no more)."""
        if ids.dim() == 1:
            ids = ids[None]
        B, T = ids.shape
        past = len(kv_cache) if kv_cache is not None else 0
        if past + T > self.cfg.n_ctx:
            raise InputError(f"{past + T} tokens do not fit this model's context of {self.cfg.n_ctx}.")
        positions = torch.arange(past, past + T, device=ids.device)
        x = self.hook_embed(self.embed(self.hook_tokens(ids)))                   # (B, T, C)
        if self.pos_embed is not None:
            x = x + self.hook_pos_embed(self.pos_embed(positions))
        if self.ln_embed is not None:
            x = self.ln_embed(x)
        cfg, masks, ropes = self.cfg, {}, {}
        first = 0
        if resume is not None:
            first, x = resume
        for i, block in list(enumerate(self.blocks))[first:stop]:
            window, theta = cfg.window(i), cfg.theta(i)   # each layer's mask and rotation, made once per kind
            if window not in masks:
                masks[window] = build_mask(cfg, T, past + T, attention_mask, ids.device, window)  # (1|B, 1|H, T, S)
            if cfg.positions == "rope" and theta not in ropes:
                inv_freq = self.rope_local_inv_freq if theta != cfg.rope_theta else self.rope_inv_freq
                ropes[theta] = rope_cos_sin(positions, inv_freq)
            x = block(x, masks[window], ropes.get(theta), kv_cache)
        return x if self.ln_final is None or stop is not None else self.ln_final(x)

    def hooks(self, fns: dict):
        """`with model.hooks({name: fn}): model(ids)` runs fn at that hook point for this call only."""
        unknown = [n for n in fns if n not in self.hook_points]
        if unknown:
            raise KeyError(f"no hook point named {unknown[0]!r}")
        return hooklib.hooks(fns)

    @torch.no_grad()
    def run_with_cache(self, ids: torch.Tensor, names=None, logits: bool = True,
                       **kwargs) -> tuple[torch.Tensor, ActivationCache]:
        """Forward pass that also returns the values of the chosen hook points (all, a predicate such as
        core.model.cache.kinds("pattern"), a name or a list of names) as an ActivationCache.

        logits=False returns the final hidden states instead (unembed.hook_out does not fire): a caller that reads
        only hook values skips the unembedding (SmolLM2's has 49,152 rows for each position)."""
        cache: dict[str, torch.Tensor] = {}

        def save(x, hook):
            cache[hook.name] = x.detach()

        with self.hooks({n: save for n in hooklib.select(list(self.hook_points), names)}):
            out = self(ids, **kwargs) if logits else self.hidden(ids, **kwargs)
        return out, ActivationCache(cache, self.cfg.n_layers)


def _init_weights(module: nn.Module) -> None:
    """GPT-2's scheme: normal(0, 0.02) weights, zero biases (norms start at 1 and 0)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (Embed, PosEmbed, Unembed)):
        for name, p in module.named_parameters(recurse=False):
            if name == "weight":
                nn.init.normal_(p, std=0.02)


def parameter_groups(model: HookedTransformer) -> dict[str, int]:
    """Parameter counts by role: embeddings, attention, FFN (or experts), norms, head."""
    groups = {"embeddings": 0, "attention": 0, "feed-forward": 0, "norms": 0, "head": 0}
    for name, p in model.named_parameters():
        if name.startswith(("embed", "pos_embed")):
            key = "embeddings"
        elif ".attn." in name:
            key = "attention"
        elif ".mlp." in name or ".moe." in name:
            key = "feed-forward"
        elif name.startswith("unembed"):
            key = "head"
        else:
            key = "norms"
        groups[key] += p.numel()
    if model.unembed is not None and model.unembed.weight is None:
        groups["head (shares the embedding matrix)"] = groups.pop("head")
    return groups


def active_parameters(model: HookedTransformer, top_k: int | None = None) -> int:
    """Parameters one token actually uses: with MoE, only K of the E experts run (the config's K, or top_k)."""
    total = sum(p.numel() for p in model.parameters())
    cfg = model.cfg
    if not cfg.n_experts:
        return total
    per_expert = sum(p.numel() for p in model.blocks[0].moe.experts[0].parameters())
    return total - cfg.n_layers * (cfg.n_experts - (top_k or cfg.top_k)) * per_expert
