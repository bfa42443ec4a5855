"""ModelConfig: every architectural choice of a HookedTransformer, one field each."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass
class ModelConfig:
    family: str = "gpt"            # label shown to learners: gpt, llama, bert, moe, qwen2, gemma2, ...
    vocab_size: int = 256          # V
    d_model: int = 128             # C
    n_layers: int = 4
    n_heads: int = 4               # H
    n_kv_heads: int | None = None  # G; None or H is multi-head, 1 is multi-query, between is GQA
    d_head: int | None = None      # D; None means d_model // n_heads
    d_ff: int = 512                # F
    n_ctx: int = 128               # longest sequence the positions cover
    positions: str = "learned"     # learned | sinusoidal | rope | alibi
    rope_theta: float = 10_000.0
    rope_local_theta: float | None = None  # sliding-window layers rotate at this base instead (Gemma 3: 10,000 vs 1e6)
    n_token_types: int = 0         # BERT's segment embeddings; 0 means none
    norm: str = "layernorm"        # layernorm | rmsnorm
    norm_eps: float = 1e-5
    pre_norm: bool = True          # GPT/Llama normalise before each sublayer, BERT after
    in_norm: bool = True           # with pre_norm: normalise each sublayer's input (ln1, ln2); OLMo 2 does not
    out_norm: bool = False         # normalise each sublayer's output before it joins the stream (ln1_post, ln2_post):
                                   # Gemma 2/3 on both sides ("sandwich"), OLMo 2 on the output only
    qk_norm: str | None = None     # RMSNorm on queries and keys before RoPE: "head" normalises each head (Qwen3,
                                   # Gemma 3), "full" all heads together (OLMo 2)
    embed_norm: bool = False       # BERT normalises the summed embeddings
    act: str = "gelu"              # gelu | gelu_tanh | relu | silu
    gated_ffn: bool = False        # act(gate(x)) * up(x), e.g. SwiGLU when act is silu
    bias: bool = True              # biases on attention and FFN projections
    qkv_bias: bool | None = None   # biases on q, k, v alone (Qwen2: yes, o_proj: no); None means as `bias`
    causal: bool = True            # decoders see only the past; encoders see everything
    sliding_window: int | None = None  # a query sees at most this many most recent keys
    window_layers: list[int] | None = None  # the layers that slide (Gemma: every other one); None means all
    attn_softcap: float | None = None  # scores squashed to (-cap, cap) by cap * tanh(s / cap) before the mask (Gemma 2)
    n_experts: int = 0             # E; 0 means a dense FFN in every block
    top_k: int = 2                 # K experts per token
    renormalize: bool = True       # the K weights rescaled to sum to 1 (Mixtral); Qwen2-MoE keeps the probabilities
    d_expert: int | None = None    # each expert's FFN width; None means d_ff
    d_shared: int = 0              # a shared expert of this width that every token runs, gated (Qwen2-MoE); 0: none
    router_noise: float = 0.0      # std of noisy top-k during training
    head: str = "lm"               # lm | mlm | none (hidden states out)
    tie_embeddings: bool = True    # unembedding shares the embedding matrix
    pad_token_id: int | None = None
    # Granite's muP multipliers; the defaults leave every other model untouched
    embed_scale: float = 1.0       # token embeddings are multiplied by this before the first block (Granite: 12)
    attn_scale: float | None = None  # attention scores are q.k times this; None means 1/sqrt(D) (Granite: 1/D)
    logit_divisor: float = 1.0     # logits are divided by this (Granite's logits_scaling: 6)
    logit_softcap: float | None = None  # logits squashed to (-cap, cap) by cap * tanh(l / cap) (Gemma 2: 30)

    def __post_init__(self):
        self.n_kv_heads = self.n_kv_heads or self.n_heads
        self.d_head = self.d_head or self.d_model // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    def window(self, layer: int) -> int | None:
        """The sliding window of that layer, or None where it attends to every earlier position."""
        return self.sliding_window if self.window_layers is None or layer in self.window_layers else None

    def theta(self, layer: int) -> float:
        """RoPE's base for that layer: sliding layers may rotate at a base of their own (Gemma 3)."""
        return self.rope_local_theta if self.rope_local_theta and self.window(layer) else self.rope_theta

    @property
    def norm_placement(self) -> str:
        """Where the block's norms sit, in words: pre-norm, post-norm (BERT), sandwich (Gemma), output (OLMo 2)."""
        if not self.pre_norm:
            return "post-norm"
        return {(True, False): "pre-norm", (True, True): "sandwich-norm", (False, True): "output-norm"}[
            (self.in_norm, self.out_norm)]

    @property
    def ffn_name(self) -> str:
        """SwiGLU (SiLU gate), GeGLU (GELU gate), or the plain activation's name."""
        short = {"gelu": "GELU", "gelu_tanh": "GELU (tanh)", "relu": "ReLU", "silu": "SiLU"}[self.act]
        if not self.gated_ffn:
            return short
        return "SwiGLU" if self.act == "silu" else "GeGLU" if self.act.startswith("gelu") else f"{short}-gated"

    def mechanisms(self) -> list[str]:
        """What this model adds to a plain decoder, in words (the 2026 families' extras), for a model card."""
        found = []
        if self.sliding_window:
            where = "every layer" if self.window_layers is None else \
                f"{len(self.window_layers)} of {self.n_layers} layers (the rest see everything)"
            found.append(f"sliding window of {self.sliding_window:,} tokens on {where}")
        if self.rope_local_theta:
            found.append(f"RoPE base {self.rope_local_theta:g} on sliding layers, {self.rope_theta:g} on global ones")
        if self.qk_norm:
            found.append(f"QK-norm ({'per head' if self.qk_norm == 'head' else 'across heads'})")
        if self.attn_softcap:
            found.append(f"attention scores soft-capped at ±{self.attn_softcap:g}")
        if self.logit_softcap:
            found.append(f"logits soft-capped at ±{self.logit_softcap:g}")
        if self.embed_scale != 1.0:
            found.append(f"embeddings scaled by {self.embed_scale:.4g}")
        if self.qkv_bias:
            found.append("biases on q, k, v")
        if self.d_shared:
            found.append(f"a shared expert of {self.d_shared:,} neurons beside the routed ones")
        if self.n_experts and not self.renormalize:
            found.append("top-k weights not renormalised")
        return found

    @property
    def attention_kind(self) -> str:
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**json.loads(text))
