"""ModelConfig: every architectural choice of a HookedTransformer, one field each."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass
class ModelConfig:
    family: str = "gpt"            # label shown to learners: gpt, llama, bert, moe
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
    n_token_types: int = 0         # BERT's segment embeddings; 0 means none
    norm: str = "layernorm"        # layernorm | rmsnorm
    norm_eps: float = 1e-5
    pre_norm: bool = True          # GPT/Llama normalise before each sublayer, BERT after
    embed_norm: bool = False       # BERT normalises the summed embeddings
    act: str = "gelu"              # gelu | gelu_tanh | relu | silu
    gated_ffn: bool = False        # act(gate(x)) * up(x), e.g. SwiGLU when act is silu
    bias: bool = True              # biases on attention and FFN projections
    causal: bool = True            # decoders see only the past; encoders see everything
    sliding_window: int | None = None  # a query sees at most this many most recent keys
    n_experts: int = 0             # E; 0 means a dense FFN in every block
    top_k: int = 2                 # K experts per token
    router_noise: float = 0.0      # std of noisy top-k during training
    head: str = "lm"               # lm | mlm | none (hidden states out)
    tie_embeddings: bool = True    # unembedding shares the embedding matrix
    pad_token_id: int | None = None
    # Granite's muP multipliers; the defaults leave every other model untouched
    embed_scale: float = 1.0       # token embeddings are multiplied by this before the first block (Granite: 12)
    attn_scale: float | None = None  # attention scores are q.k times this; None means 1/sqrt(D) (Granite: 1/D)
    logit_divisor: float = 1.0     # logits are divided by this (Granite's logits_scaling: 6)

    def __post_init__(self):
        self.n_kv_heads = self.n_kv_heads or self.n_heads
        self.d_head = self.d_head or self.d_model // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

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
