"""Hook points: names, shapes, interventions and their per-call lifetime."""
import threading

import pytest
import torch
import torch.nn.functional as F

from core import HookedTransformer, ModelConfig

# The DESIGN's hook names for one block of a Llama-style model, in firing order's module order.
PINNED_LLAMA_BLOCK = [
    "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q",
    "attn.hook_rot_k", "attn.hook_mask", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
    "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_resid_pre", "hook_attn_out",
    "hook_resid_mid", "hook_mlp_out", "hook_resid_post",
]


QK_NORM = ["attn.q_norm.hook_scale", "attn.q_norm.hook_normalized", "attn.k_norm.hook_scale",
           "attn.k_norm.hook_normalized"]
OUT_NORMS = ["ln1_post.hook_scale", "ln1_post.hook_normalized", "ln2_post.hook_scale", "ln2_post.hook_normalized"]


def pinned_block(family: str) -> list[str]:
    """Block 0's hook names, in module order, for each family: Llama's, with what the family adds or removes."""
    names = list(PINNED_LLAMA_BLOCK)
    if family == "gpt2":
        names = [n for n in names if "rot_" not in n]
    if family in ("mixtral", "granitemoe", "qwen2_moe"):
        shared = ["moe.hook_shared_out"] if family == "qwen2_moe" else []
        at = names.index("mlp.hook_pre")
        names[at:at + 2] = [*shared, "moe.hook_router_logits", "moe.hook_expert_weights", "moe.hook_expert_indices"]
    if family in ("qwen3", "gemma3", "olmo2"):                       # QK-norm: its hooks before hook_q
        at = names.index("attn.hook_q")
        names[at:at] = QK_NORM
    if family in ("gemma2", "gemma3", "olmo2"):                      # norms on the outputs, after ln2
        at = names.index("ln2.hook_normalized") + 1
        names[at:at] = OUT_NORMS
    if family == "olmo2":                                            # and none on the inputs
        names = [n for n in names if not n.startswith(("ln1.", "ln2."))]
    return names


def test_hook_names_are_pinned(decoder_pair):
    family, model, _ = decoder_pair
    names = list(model.hook_points)
    block0 = [n[len("blocks.0."):] for n in names if n.startswith("blocks.0.")]
    assert block0 == pinned_block(family)
    top = [n for n in names if not n.startswith("blocks.")]
    final = ["ln_final.hook_scale", "ln_final.hook_normalized", "unembed.hook_out"]
    assert top == (["hook_tokens", "hook_embed", "hook_pos_embed", *final] if family == "gpt2" else
                   ["hook_tokens", "hook_embed", *final])


def test_pinned_names_of_a_new_family_differ_from_llamas_only_where_it_adds_a_mechanism():
    """The rule above can fail: Gemma 3 adds QK-norm and output norms and nothing else."""
    assert set(pinned_block("gemma3")) - set(PINNED_LLAMA_BLOCK) == set(QK_NORM + OUT_NORMS)
    assert pinned_block("mistral") == pinned_block("qwen2") == pinned_block("phi3") == PINNED_LLAMA_BLOCK


def documented_shape(name: str, cfg: ModelConfig, B: int, T: int) -> tuple:
    H, G, D, C, F, V, E, K = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model, cfg.d_ff, cfg.vocab_size,
                              cfg.n_experts, cfg.top_k)
    leaf = name.split(".")[-1]
    if ".q_norm." in name or ".k_norm." in name:                     # QK-norm: per head (D) or across heads
        heads = H if ".q_norm." in name else G
        if cfg.qk_norm == "head":
            return (B, T, heads, 1) if leaf == "hook_scale" else (B, T, heads, D)
        return (B, T, 1) if leaf == "hook_scale" else (B, T, heads * D)
    table = {
        "hook_tokens": (B, T), "hook_embed": (B, T, C), "hook_pos_embed": (1, T, C), "hook_normalized": (B, T, C),
        "hook_scale": (B, T, 1),
        "hook_q": (B, T, H, D), "hook_k": (B, T, G, D), "hook_v": (B, T, G, D),
        "hook_rot_q": (B, T, H, D), "hook_rot_k": (B, T, G, D), "hook_mask": (1, 1, T, T),
        "hook_attn_scores": (B, H, T, T), "hook_pattern": (B, H, T, T), "hook_z": (B, T, H, D),
        "hook_pre": (B, T, F), "hook_post": (B, T, F), "hook_router_logits": (B, T, E),
        "hook_expert_weights": (B, T, K), "hook_expert_indices": (B, T, K), "hook_out": (B, T, V),
    }
    return table.get(leaf, (B, T, C))  # residual, attn_out, mlp_out


def test_every_hook_fires_with_its_documented_shape(pair, ids):
    _, model, _ = pair
    _, cache = model.run_with_cache(ids)
    assert set(cache) == set(model.hook_points), "every hook point fires on a full forward"
    for name, value in cache.items():
        assert tuple(value.shape) == documented_shape(name, model.cfg, *ids.shape), name


def test_a_cache_without_logits_skips_only_the_unembedding(pair, ids):
    _, model, _ = pair
    logits, full = model.run_with_cache(ids)
    hidden, cache = model.run_with_cache(ids, logits=False)
    assert set(full) - set(cache) == {n for n in full if n.startswith("unembed.")} != set()
    for name, value in cache.items():
        assert torch.equal(value, full[name]), name
    assert torch.equal(model.unembed(hidden, model.embed.weight), logits)


def identity(x, hook):
    return x


def test_identity_hook_leaves_logits_bit_identical(pair, ids):
    _, model, _ = pair
    # hooking these switches SDPA, or the fused norm, to the explicit path (equal within float error, tested apart)
    explicit = ("hook_attn_scores", "hook_pattern", "hook_scale", "hook_normalized")
    with torch.no_grad():
        plain = model(ids)
        with model.hooks({n: identity for n in model.hook_points if not n.endswith(explicit)}):
            hooked = model(ids)
        assert torch.equal(plain, hooked)
        looked, _ = model.run_with_cache(ids)
        with model.hooks({n: identity for n in model.hook_points}):
            hooked_everywhere = model(ids)
        assert torch.equal(looked, hooked_everywhere)


def norm_inputs(model, cache, i: int) -> dict[str, torch.Tensor]:
    """What each norm of block i (and the final norm) reads: the stream (pre-norm) or stream + sublayer (BERT);
    an output norm reads its sublayer's output; QK-norm reads the projected queries and keys."""
    if model.cfg.pre_norm:
        block, ins = model.blocks[i], {}
        if block.ln1 is not None:
            ins = {f"blocks.{i}.ln1": cache["resid_pre", i], f"blocks.{i}.ln2": cache["resid_mid", i]}
        if model.cfg.out_norm:
            ins[f"blocks.{i}.ln1_post"] = block.attn.o_proj(cache["z", i].flatten(-2))
            ins[f"blocks.{i}.ln2_post"] = block.mlp(block._in(2, cache["resid_mid", i]))
        if model.cfg.qk_norm:
            x, attn = block._in(1, cache["resid_pre", i]), block.attn
            q, k = attn.q_proj(x), attn.k_proj(x)
            if model.cfg.qk_norm == "head":
                q, k = q.unflatten(-1, (-1, model.cfg.d_head)), k.unflatten(-1, (-1, model.cfg.d_head))
            ins[f"blocks.{i}.attn.q_norm"], ins[f"blocks.{i}.attn.k_norm"] = q, k
        return {**ins, "ln_final": cache["resid_post", model.cfg.n_layers - 1]}
    return {f"blocks.{i}.ln1": cache["resid_pre", i] + cache["attn_out", i],
            f"blocks.{i}.ln2": cache["resid_mid", i] + cache["mlp_out", i]}


def test_norm_hooks_mean_what_transformer_lens_means(pair, ids):
    """hook_scale is the divisor sqrt(mean(x^2) + eps) of the (centred) vector; hook_normalized is x / scale, before
    the gain and bias; the norm's output (gain and bias applied) is what F.layer_norm / F.rms_norm give."""
    _, model, _ = pair
    _, cache = model.run_with_cache(ids)
    for prefix, x in norm_inputs(model, cache, 1).items():
        norm = model.get_submodule(prefix)
        C = x.shape[-1]
        centred = x if norm.rms else x - x.mean(-1, keepdim=True)
        torch.testing.assert_close(cache[f"{prefix}.hook_scale"], (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt())
        normalized = cache[f"{prefix}.hook_normalized"]
        bare = F.rms_norm(x, (C,), eps=norm.eps) if norm.rms else F.layer_norm(x, (C,), eps=norm.eps)
        torch.testing.assert_close(normalized, bare, rtol=1e-5, atol=1e-5)
        full = F.rms_norm(x, (C,), norm.weight, norm.eps) if norm.rms else F.layer_norm(x, (C,), norm.weight,
                                                                                         norm.bias, norm.eps)
        gained = normalized * norm.weight + (0 if norm.rms else norm.bias)
        torch.testing.assert_close(gained, full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(norm(x), full, rtol=1e-5, atol=1e-5)  # the fused path, when no one is looking


def zero_head(head: int):
    def fn(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z
    return fn


def test_zeroing_one_head_changes_logits(pair, ids):
    _, model, _ = pair
    with torch.no_grad():
        plain = model(ids)
        with model.hooks({"blocks.1.attn.hook_z": zero_head(2)}):
            ablated = model(ids)
    assert (plain - ablated).abs().max() > 1e-3


def test_exception_inside_a_hook_leaves_no_hook_behind(pair, ids):
    _, model, _ = pair

    def boom(x, hook):
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError, match="inside hook"), model.hooks({"blocks.0.hook_resid_post": boom}):
        model(ids)
    model(ids)  # would raise again if the hook had stayed
    assert not any(hp.active() for hp in model.hook_points.values())


def test_unknown_hook_name_is_a_clear_error(pair):
    _, model, _ = pair
    with pytest.raises(KeyError, match="no hook point named"):
        model.hooks({"blocks.0.attn.hook_nothing": lambda x, h: x})


def test_threads_sharing_one_model_get_their_serial_results():
    torch.manual_seed(0)
    model = HookedTransformer(ModelConfig(positions="rope", norm="rmsnorm", gated_ffn=True, act="silu",
                                          n_kv_heads=2, d_model=64, n_layers=3)).eval()
    prompts = [torch.randint(0, 256, (1, 8 + i)) for i in range(8)]

    def job(i):
        hooks = {f"blocks.{i % 3}.attn.hook_z": zero_head(i % 4)} if i % 2 else {}
        with torch.no_grad(), model.hooks(hooks):
            logits, cache = model.run_with_cache(prompts[i], names=lambda n: n.endswith("hook_pattern"))
        return logits, cache["blocks.2.attn.hook_pattern"]

    serial = [job(i) for i in range(8)]
    results, barrier = [None] * 8, threading.Barrier(8)

    def worker(i):
        barrier.wait()
        for _ in range(5):
            results[i] = job(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (a, pa), (b, pb) in zip(serial, results):
        assert torch.equal(a, b) and torch.equal(pa, pb)
