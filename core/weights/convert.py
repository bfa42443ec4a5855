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
    cfg, weights = read(hf_model)
    model = HookedTransformer(cfg)
    model.load_state_dict(weights, strict=True)
    return model.to(hf_model.dtype).eval()


def read(hf_model) -> tuple[ModelConfig, dict]:
    """The ModelConfig and our-named weights of a transformers model; ValueError naming what cannot be converted
    (it also runs on a model built on the meta device: core.weights.hub checks a model before downloading it)."""
    kind = type(hf_model).__name__
    if kind not in CONVERTERS:
        raise ValueError(f"cannot convert {kind}; supported: {', '.join(CONVERTERS)}")
    sd = _Reading(hf_model.state_dict())
    cfg, weights = CONVERTERS[kind](hf_model, sd)
    unread = [k for k in sd if k not in sd.read and not k.startswith(UNUSED) and not (k == "lm_head.weight" and
                                                                                    cfg.tie_embeddings)]
    if unread:  # a tensor the converter does not know (a bias or norm a config flag switched on) would be lost
        raise ValueError(f"{kind} has weights this app does not convert: {', '.join(unread[:3])}")
    return cfg, weights


ACTS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}  # transformers' names -> core.model.mlp's


class _Reading(dict):
    """A state dict that remembers which tensors a converter read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


UNUSED = ("pooler.",)  # BERT's sentence pooler: not part of the hidden states the tabs read


def _gpt2(hf, sd):
    c = hf.config
    C = c.n_embd
    cfg = ModelConfig(family="gpt", vocab_size=c.vocab_size, d_model=C, n_layers=c.n_layer, n_heads=c.n_head,
                      d_ff=c.n_inner or 4 * C, n_ctx=c.n_positions, norm_eps=c.layer_norm_epsilon,
                      act=ACTS.get(c.activation_function, c.activation_function))
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


# What each decoder family adds to Llama's recipe, read from its transformers config (README: Families)
GEMMA = ("gemma2", "gemma3", "gemma3_text")
QK_NORM = {"qwen3": "head", "gemma3": "head", "gemma3_text": "head", "olmo2": "full"}
PER_LAYER_WINDOWS = ("qwen2", "qwen3", "qwen2_moe", *GEMMA)        # layer_types says which layers slide
WINDOWED = (*PER_LAYER_WINDOWS, "mistral", "phi3", "mixtral")      # a sliding_window their code applies


def _llama(hf, sd):
    """Llama, and every decoder built like it: Mistral (a sliding window), Qwen2 (q/k/v biases, sliding upper
    layers), Qwen3 (QK-norm), Gemma 2/3 (GeGLU, norms around each sublayer, soft-capping, sliding and global
    layers, scaled embeddings), Phi-3 (fused projections), OLMo 2 (norms on the sublayer outputs, QK-norm), and
    the MoE decoders Mixtral, GraniteMoe (Mixtral plus four muP multipliers) and Qwen2-MoE (a shared expert)."""
    c, kind = hf.config, hf.config.model_type
    gemma, n_experts = kind in GEMMA, getattr(c, "num_local_experts", 0) or getattr(c, "num_experts", 0)
    rope = getattr(c, "rope_parameters", None) or {"rope_type": "default", "rope_theta": c.rope_theta}
    by_layer = rope if "full_attention" in rope else {"full_attention": rope}    # Gemma 3: a rope per layer kind
    for r in by_layer.values():
        if r.get("rope_type", "default") != "default":
            raise ValueError(f"RoPE scaling {r['rope_type']!r} is not supported")
        if r.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError(f"RoPE on part of each head (partial_rotary_factor {r['partial_rotary_factor']}) "
                             "is not supported")
    local_theta = by_layer.get("sliding_attention", {}).get("rope_theta")
    # Only the families whose transformers code applies a window read one: Llama and OLMo 2 ignore a stray
    # sliding_window in their config.json, Mistral and Phi-3 apply theirs to every layer whatever layer_types says
    types = getattr(c, "layer_types", None) if kind in PER_LAYER_WINDOWS else None
    window = (getattr(c, "sliding_window", None) or None) if kind in WINDOWED else None  # Qwen2-MoE: 0 for none
    window_layers = None if types is None else [i for i, t in enumerate(types) if t == "sliding_attention"]
    if window_layers == []:
        window = window_layers = None
    act = c.hidden_activation if gemma else c.hidden_act
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise ValueError("decoders with biases on every projection are not supported")
    if n_experts and (getattr(c, "mlp_only_layers", None) or getattr(c, "decoder_sparse_step", 1) != 1):
        raise ValueError("MoE decoders with some dense layers are not supported")
    cfg = ModelConfig(
        family={"mixtral": "moe", "granitemoe": "moe", "gemma3_text": "gemma3"}.get(kind, kind), vocab_size=c.vocab_size,
        d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        n_kv_heads=c.num_key_value_heads, d_head=getattr(c, "head_dim", None), d_ff=c.intermediate_size,
        n_ctx=c.max_position_embeddings, positions="rope", rope_theta=by_layer["full_attention"]["rope_theta"],
        rope_local_theta=local_theta if local_theta != by_layer["full_attention"]["rope_theta"] else None,
        norm="rmsnorm", norm_eps=c.rms_norm_eps, in_norm=kind != "olmo2", out_norm=gemma or kind == "olmo2",
        qk_norm=QK_NORM.get(kind), act=ACTS.get(act, act),
        gated_ffn=True, bias=False, qkv_bias=kind == "qwen2" or getattr(c, "qkv_bias", False),
        sliding_window=window, window_layers=window_layers, attn_softcap=getattr(c, "attn_logit_softcapping", None),
        n_experts=n_experts, top_k=getattr(c, "num_experts_per_tok", 2),
        renormalize=getattr(c, "norm_topk_prob", True), d_expert=getattr(c, "moe_intermediate_size", None),
        d_shared=getattr(c, "shared_expert_intermediate_size", 0) if n_experts else 0,
        tie_embeddings=c.tie_word_embeddings, pad_token_id=c.pad_token_id,
        embed_scale=c.hidden_size ** 0.5 if gemma else getattr(c, "embedding_multiplier", 1.0),
        attn_scale=c.query_pre_attn_scalar ** -0.5 if gemma else getattr(c, "attention_multiplier", None),
        logit_divisor=getattr(c, "logits_scaling", 1.0), logit_softcap=getattr(c, "final_logit_softcapping", None))
    # Granite scales what each sublayer adds to the stream by residual_multiplier (0.22). That is linear, so it is
    # folded into the output projections: hook_attn_out and hook_mlp_out are what joins the stream, and every
    # tool that reads the weights (per-head writes, an expert's neurons) stays exact with no extra step.
    r = getattr(c, "residual_multiplier", 1.0)
    to_stream = (lambda W: W) if r == 1.0 else (lambda W: W * r)
    gain = (lambda W: W + 1) if gemma else (lambda W: W)                     # Gemma's RMSNorm multiplies by 1 + w
    ffn, router = ("block_sparse_moe.", "router") if kind == "granitemoe" else ("mlp.", "gate")
    norms = {"gemma": [("input_layernorm", "ln1"), ("post_attention_layernorm", "ln1_post"),
                       ("pre_feedforward_layernorm", "ln2"), ("post_feedforward_layernorm", "ln2_post")],
             "olmo2": [("post_attention_layernorm", "ln1_post"), ("post_feedforward_layernorm", "ln2_post")]}.get(
        "gemma" if gemma else kind, [("input_layernorm", "ln1"), ("post_attention_layernorm", "ln2")])
    w = {"embed.weight": sd["model.embed_tokens.weight"], "ln_final.weight": gain(sd["model.norm.weight"])}
    if not c.tie_word_embeddings:
        w["unembed.weight"] = sd["lm_head.weight"]
    H, G, D = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    for i in range(c.num_hidden_layers):
        p, o = f"model.layers.{i}.", f"blocks.{i}."
        if kind == "phi3":  # Phi-3 fuses q, k, v into one projection, and gate and up into another
            qkv = sd[p + "self_attn.qkv_proj.weight"].split([H * D, G * D, G * D])
            for name, W in zip(["q_proj", "k_proj", "v_proj"], qkv):
                w[o + f"attn.{name}.weight"] = W
            w[o + "mlp.gate_proj.weight"], w[o + "mlp.up_proj.weight"] = sd[p + "mlp.gate_up_proj.weight"].chunk(2)
            w[o + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"]
        else:
            for name in ["q_proj", "k_proj", "v_proj"]:
                w[o + f"attn.{name}.weight"] = sd[p + f"self_attn.{name}.weight"]
                if cfg.qkv_bias:
                    w[o + f"attn.{name}.bias"] = sd[p + f"self_attn.{name}.bias"]
        w[o + "attn.o_proj.weight"] = to_stream(sd[p + "self_attn.o_proj.weight"])
        for name in ["q_norm", "k_norm"] if cfg.qk_norm else []:
            w[o + f"attn.{name}.weight"] = gain(sd[p + f"self_attn.{name}.weight"])
        for src, dst in norms:
            w[o + dst + ".weight"] = gain(sd[p + src + ".weight"])
        if n_experts:  # transformers 5 fuses experts: gate_up_proj (E, 2F, C), down_proj (E, C, F); Granite's files
            # call them input_linear and output_linear, and transformers renames them on loading
            w[o + "moe.router.weight"] = sd[p + ffn + router + ".weight"]
            gate_up, down = sd[p + ffn + "experts.gate_up_proj"], to_stream(sd[p + ffn + "experts.down_proj"])
            for e in range(cfg.n_experts):
                gate, up = gate_up[e].chunk(2, dim=0)
                w[o + f"moe.experts.{e}.gate_proj.weight"] = gate
                w[o + f"moe.experts.{e}.up_proj.weight"] = up
                w[o + f"moe.experts.{e}.down_proj.weight"] = down[e]
            if cfg.d_shared:  # Qwen2-MoE
                for name in ["gate_proj", "up_proj", "down_proj"]:
                    w[o + f"moe.shared_expert.{name}.weight"] = sd[p + f"mlp.shared_expert.{name}.weight"]
                w[o + "moe.shared_expert_gate.weight"] = sd[p + "mlp.shared_expert_gate.weight"]
        elif kind != "phi3":
            for name in ["gate_proj", "up_proj", "down_proj"]:
                w[o + f"mlp.{name}.weight"] = sd[p + f"mlp.{name}.weight"]
    return cfg, w


def _bert(hf, sd):
    c = hf.config
    mlm = type(hf).__name__ == "BertForMaskedLM"
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
        if "cls.predictions.decoder.bias" in sd and not torch.equal(sd["cls.predictions.decoder.bias"], w["unembed.bias"]):
            raise ValueError("BERT MLM decoder's bias is not its prediction bias")
    return cfg, w


# transformers class name (a config's `architectures`) -> the converter that reads it
CONVERTERS = {"GPT2LMHeadModel": _gpt2, "BertModel": _bert, "BertForMaskedLM": _bert, **{
    f"{family}ForCausalLM": _llama for family in ["Llama", "Mistral", "Qwen2", "Qwen3", "Gemma2", "Gemma3", "Phi3",
                                                  "Olmo2", "Mixtral", "GraniteMoe", "Qwen2Moe"]}}
