"""transformers model -> HookedTransformer with the same weights.

Each converter reads the Hugging Face config into a ModelConfig, renames every tensor
into our module tree and loads it with strict=True, so a missing or misshapen weight
fails loudly instead of silently staying random.
"""
from __future__ import annotations

import torch

from core.model.config import ModelConfig
from core.model.transformer import HookedTransformer


def from_transformers(hf_model) -> HookedTransformer:
    """A transformers model of a class in CONVERTERS -> the same model as a HookedTransformer."""
    kind = type(hf_model).__name__
    if kind not in CONVERTERS:
        raise ValueError(f"cannot convert {kind}; supported: {', '.join(CONVERTERS)}")
    cfg, weights = CONVERTERS[kind](hf_model)
    model = HookedTransformer(cfg)
    model.load_state_dict(weights, strict=True)
    return model.to(hf_model.dtype).eval()


def _gpt2(hf):
    c, sd = hf.config, hf.state_dict()
    C = c.n_embd
    cfg = ModelConfig(family="gpt", vocab_size=c.vocab_size, d_model=C, n_layers=c.n_layer, n_heads=c.n_head,
                      d_ff=c.n_inner or 4 * C, n_ctx=c.n_positions, norm_eps=c.layer_norm_epsilon,
                      act={"gelu_new": "gelu_tanh"}.get(c.activation_function, c.activation_function))
    w = {"embed.weight": sd["transformer.wte.weight"], "pos_embed.weight": sd["transformer.wpe.weight"],
         "ln_final.weight": sd["transformer.ln_f.weight"], "ln_final.bias": sd["transformer.ln_f.bias"]}
    for i in range(c.n_layer):
        p, o = f"transformer.h.{i}.", f"blocks.{i}."
        # GPT-2's Conv1D stores (in, out): transpose to nn.Linear's (out, in); c_attn packs q, k, v
        for name, W, b in zip(["q_proj", "k_proj", "v_proj"], sd[p + "attn.c_attn.weight"].t().split(C),
                              sd[p + "attn.c_attn.bias"].split(C)):
            w[o + f"attn.{name}.weight"], w[o + f"attn.{name}.bias"] = W, b
        for src, dst in [("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.up_proj"), ("mlp.c_proj", "mlp.down_proj")]:
            w[o + dst + ".weight"], w[o + dst + ".bias"] = sd[p + src + ".weight"].t(), sd[p + src + ".bias"]
        for src, dst in [("ln_1", "ln1"), ("ln_2", "ln2")]:
            w[o + dst + ".weight"], w[o + dst + ".bias"] = sd[p + src + ".weight"], sd[p + src + ".bias"]
    return cfg, w


def _llama(hf):
    """Llama, and the MoE decoders built like it: Mixtral, and GraniteMoe (Mixtral plus four muP multipliers)."""
    c, sd = hf.config, hf.state_dict()
    rope = getattr(c, "rope_parameters", None) or {"rope_type": "default", "rope_theta": c.rope_theta}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"RoPE scaling {rope['rope_type']!r} is not supported")
    moe = hasattr(c, "num_local_experts")
    granite = c.model_type == "granitemoe"
    cfg = ModelConfig(family="moe" if moe else "llama", vocab_size=c.vocab_size, d_model=c.hidden_size,
                      n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                      n_kv_heads=c.num_key_value_heads, d_head=getattr(c, "head_dim", None),
                      d_ff=c.intermediate_size, n_ctx=c.max_position_embeddings, positions="rope",
                      rope_theta=rope["rope_theta"], norm="rmsnorm", norm_eps=c.rms_norm_eps, act=c.hidden_act,
                      gated_ffn=True, bias=False, sliding_window=getattr(c, "sliding_window", None),
                      n_experts=c.num_local_experts if moe else 0, top_k=getattr(c, "num_experts_per_tok", 2),
                      tie_embeddings=c.tie_word_embeddings, pad_token_id=c.pad_token_id,
                      embed_scale=getattr(c, "embedding_multiplier", 1.0),
                      attn_scale=getattr(c, "attention_multiplier", None),
                      logit_divisor=getattr(c, "logits_scaling", 1.0))
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise ValueError("Llama variants with projection biases are not supported")
    # Granite scales what each sublayer adds to the stream by residual_multiplier (0.22). That is linear, so it is
    # folded into the output projections: hook_attn_out and hook_mlp_out are what joins the stream, and every
    # tool that reads the weights (per-head writes, an expert's neurons) stays exact with no extra step.
    r = getattr(c, "residual_multiplier", 1.0)
    to_stream = (lambda W: W) if r == 1.0 else (lambda W: W * r)
    ffn, router = ("block_sparse_moe.", "router") if granite else ("mlp.", "gate")
    w = {"embed.weight": sd["model.embed_tokens.weight"], "ln_final.weight": sd["model.norm.weight"]}
    if not c.tie_word_embeddings:
        w["unembed.weight"] = sd["lm_head.weight"]
    for i in range(c.num_hidden_layers):
        p, o = f"model.layers.{i}.", f"blocks.{i}."
        for name in ["q_proj", "k_proj", "v_proj"]:
            w[o + f"attn.{name}.weight"] = sd[p + f"self_attn.{name}.weight"]
        w[o + "attn.o_proj.weight"] = to_stream(sd[p + "self_attn.o_proj.weight"])
        w[o + "ln1.weight"] = sd[p + "input_layernorm.weight"]
        w[o + "ln2.weight"] = sd[p + "post_attention_layernorm.weight"]
        if moe:  # transformers 5 fuses experts: gate_up_proj (E, 2F, C), down_proj (E, C, F); Granite's files
            # call them input_linear and output_linear, and transformers renames them on loading
            w[o + "moe.router.weight"] = sd[p + ffn + router + ".weight"]
            gate_up, down = sd[p + ffn + "experts.gate_up_proj"], to_stream(sd[p + ffn + "experts.down_proj"])
            for e in range(cfg.n_experts):
                gate, up = gate_up[e].chunk(2, dim=0)
                w[o + f"moe.experts.{e}.gate_proj.weight"] = gate
                w[o + f"moe.experts.{e}.up_proj.weight"] = up
                w[o + f"moe.experts.{e}.down_proj.weight"] = down[e]
        else:
            for name in ["gate_proj", "up_proj", "down_proj"]:
                w[o + f"mlp.{name}.weight"] = sd[p + f"mlp.{name}.weight"]
    return cfg, w


def _bert(hf):
    c = hf.config
    mlm = type(hf).__name__ == "BertForMaskedLM"
    sd = hf.state_dict()
    pre = "bert." if mlm else ""
    cfg = ModelConfig(family="bert", vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                      n_heads=c.num_attention_heads, d_ff=c.intermediate_size, n_ctx=c.max_position_embeddings,
                      n_token_types=c.type_vocab_size, norm_eps=c.layer_norm_eps, pre_norm=False, embed_norm=True,
                      act=c.hidden_act, causal=False, head="mlm" if mlm else "none", pad_token_id=c.pad_token_id)
    e = pre + "embeddings."
    w = {"embed.weight": sd[e + "word_embeddings.weight"], "embed.token_type": sd[e + "token_type_embeddings.weight"],
         "pos_embed.weight": sd[e + "position_embeddings.weight"],
         "ln_embed.weight": sd[e + "LayerNorm.weight"], "ln_embed.bias": sd[e + "LayerNorm.bias"]}
    for i in range(c.num_hidden_layers):
        p, o = f"{pre}encoder.layer.{i}.", f"blocks.{i}."
        pairs = [("attention.self.query", "attn.q_proj"), ("attention.self.key", "attn.k_proj"),
                 ("attention.self.value", "attn.v_proj"), ("attention.output.dense", "attn.o_proj"),
                 ("attention.output.LayerNorm", "ln1"), ("intermediate.dense", "mlp.up_proj"),
                 ("output.dense", "mlp.down_proj"), ("output.LayerNorm", "ln2")]
        for src, dst in pairs:
            w[o + dst + ".weight"], w[o + dst + ".bias"] = sd[p + src + ".weight"], sd[p + src + ".bias"]
    if mlm:
        t = "cls.predictions.transform."
        w.update({"unembed.transform.0.weight": sd[t + "dense.weight"], "unembed.transform.0.bias": sd[t + "dense.bias"],
                  "unembed.transform.2.weight": sd[t + "LayerNorm.weight"],
                  "unembed.transform.2.bias": sd[t + "LayerNorm.bias"], "unembed.bias": sd["cls.predictions.bias"]})
        if not torch.equal(sd["cls.predictions.decoder.weight"], sd[e + "word_embeddings.weight"]):
            raise ValueError("BERT MLM decoder is not tied to the word embeddings")
    return cfg, w


# transformers class name (a config's `architectures`) -> the converter that reads it
CONVERTERS = {"GPT2LMHeadModel": _gpt2, "LlamaForCausalLM": _llama, "MixtralForCausalLM": _llama,
              "GraniteMoeForCausalLM": _llama, "BertModel": _bert, "BertForMaskedLM": _bert}
