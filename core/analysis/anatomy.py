"""Inside the model, one position at a time: the norm step by step, the FFN's neurons, and the residual
stream as a sum of what every part wrote into it (direct logit attribution).

A pre-norm block only ever *adds* to the residual stream, so the final stream of a position is exactly

    embedding (+ positions) + sum over layers (each head's output + attention bias + FFN output)

The functions here take the recorded values of one forward (an ActivationCache without its batch
dimension) and rerun the model's own modules on one vector where a step has no hook of its own.
"""
from __future__ import annotations

import torch

from core.inputs import InputError
from core.model.cache import ActivationCache
from core.model.moe import route
from core.model.transformer import HookedTransformer, Norm


def norm_steps(x: torch.Tensor, rms: bool, weight: torch.Tensor, bias: torch.Tensor | None,
               eps: float) -> dict[str, torch.Tensor]:
    """One vector x (C,) through LayerNorm (rms=False) or RMSNorm, step by step, in fp32.

    LayerNorm: centre, divide by sqrt(variance + eps), then gain and bias. RMSNorm skips the centring
    (so its "variance" is the mean square) and has no bias. `scale` is TransformerLens' hook_scale and
    `normalized` its hook_normalized."""
    x = x.float()
    mean = x.mean() if not rms else torch.zeros(())
    centred = x - mean                                          # (C,)
    mean_square = centred.pow(2).mean()                         # the variance, once centred
    scale = (mean_square + eps).sqrt()
    normalized = centred / scale                                # (C,)
    out = normalized * weight.float() + (0 if bias is None else bias.float())
    return dict(x=x, mean=mean, centred=centred, mean_square=mean_square, scale=scale, normalized=normalized,
                weight=weight.float(), out=out)


def both_norms(norm: Norm, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """The same vector through the model's own norm and through the other kind, with the model's gain
    (and its bias, where it has one): LayerNorm and RMSNorm side by side."""
    bias = norm.bias.detach() if norm.bias is not None else None
    return {"layernorm": norm_steps(x, False, norm.weight.detach(), bias, norm.eps),
            "rmsnorm": norm_steps(x, True, norm.weight.detach(), None, norm.eps)}


@torch.no_grad()
def mlp_steps(mlp, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One vector x (C,) through an FFN: the up-projection, the activation (SwiGLU: act(gate) * up) and the
    down-projection. `pre` is what the activation function reads (the gate, for SwiGLU); `post` is hook_post."""
    up = mlp.up_proj(x)                                         # (F,)
    pre = up if mlp.gate_proj is None else mlp.gate_proj(x)     # (F,)
    act = mlp.act(pre)
    post = act if mlp.gate_proj is None else act * up           # (F,)
    return dict(pre=pre, act=act, up=up, post=post, out=mlp.down_proj(post), W_out=mlp.down_proj.weight)


@torch.no_grad()
def ffn_steps(block, x: torch.Tensor) -> list[dict]:
    """The FFN of a block on one vector x (C,): one entry per FFN that runs, each with its router weight
    (a dense FFN: one entry of weight 1; an MoE: its top-k experts). The weighted outputs sum to hook_mlp_out.
    Neuron n of an entry adds weight * post[n] * W_out[:, n] to the stream; `write_size` (F,) is that vector's length."""
    if not hasattr(block, "moe"):
        ffns = [dict(mlp_steps(block.mlp, x), expert=None, weight=1.0)]
    else:
        moe = block.moe
        logits = moe.router(x)                                      # (E,)
        weights, experts = route(logits[None], moe.cfg.top_k, renormalize=moe.cfg.renormalize)  # (1, K) each
        ffns = [dict(mlp_steps(moe.experts[e], x), expert=int(e), weight=float(w))
                for w, e in zip(weights[0], experts[0])]
        if hasattr(moe, "shared_expert"):                           # Qwen2-MoE: gated by sigmoid(x . w_s)
            ffns.append(dict(mlp_steps(moe.shared_expert, x), expert="shared",
                             weight=float(torch.sigmoid(moe.shared_expert_gate(x)))))
    for f in ffns:
        f["write_size"] = (f["weight"] * f["post"]).abs() * f["W_out"].norm(dim=0)     # (F,)
    return ffns


def top_neurons(ffns: list[dict], k: int = 8) -> list[dict]:
    """The k neurons that write the most into the residual stream (by write_size), with what each writes (C,)."""
    rows = []
    for f in ffns:
        size = f["write_size"]
        for n in size.topk(min(k, size.numel())).indices.tolist():
            rows.append(dict(expert=f["expert"], neuron=n, pre=float(f["pre"][n]), act=float(f["act"][n]),
                             post=float(f["post"][n]),
                             weight=f["weight"], write=f["weight"] * f["post"][n] * f["W_out"][:, n],
                             size=float(size[n])))
    return sorted(rows, key=lambda r: -r["size"])[:k]


@torch.no_grad()
def inside_block(model: HookedTransformer, cache: ActivationCache, layer: int, pos: int) -> dict:
    """Everything the Block tab shows for one layer and position, from one recorded forward: the residual
    stream in, after attention and out; each sublayer's first norm on its real input (ln1 and ln2; OLMo 2 has
    none before its sublayers, so its norms after them, ln1_post and ln2_post); the FFN's steps and top neurons.
    The FFN entries' weighted outputs sum to what the FFN returns: hook_mlp_out, or its input to ln2_post."""
    block, cfg = model.blocks[layer], model.cfg
    at = lambda kind, i=layer: cache[kind, i][pos].to(model.device)                # (C,)
    attn_out, resid_mid, mlp_out, resid_post = map(at, ["attn_out", "resid_mid", "mlp_out", "resid_post"])
    resid_pre = at("resid_pre") if layer == 0 else at("resid_post", layer - 1)      # the same vector
    # pre-norm: the norms read the stream; post-norm (BERT): they read stream + sublayer output
    ln1_in, ln2_in = (resid_pre, resid_mid) if cfg.pre_norm else (resid_pre + attn_out, resid_mid + mlp_out)
    ffn_in = block._in(2, ln2_in) if cfg.pre_norm else resid_mid
    ffns = ffn_steps(block, ffn_in)
    if block.ln1 is None:  # OLMo 2: the norms read what attention and the FFN return
        ln1, ln1_in = block.ln1_post, block.attn.o_proj(at("z").flatten())
        ln2, ln2_in = block.ln2_post, sum(f["weight"] * f["out"] for f in ffns)
    else:
        ln1, ln2 = block.ln1, block.ln2
    return dict(resid_pre=resid_pre, attn_out=attn_out, resid_mid=resid_mid, mlp_out=mlp_out, resid_post=resid_post,
                ln1=both_norms(ln1, ln1_in), ln2=both_norms(ln2, ln2_in), norms=(ln1, ln2), ffns=ffns,
                neurons=top_neurons(ffns))


def stream_lengths(cache: ActivationCache, n_layers: int) -> tuple[list[str], torch.Tensor]:
    """(row names, (2L + 1, T) lengths of the residual stream): after the embeddings, then after each block's
    attention (resid_mid) and after its FFN (resid_post)."""
    rows, names = [cache["resid_pre", 0]], ["embeddings"]
    for i in range(n_layers):
        rows += [cache["resid_mid", i], cache["resid_post", i]]
        names += [f"L{i} + attention", f"L{i} + FFN"]
    return names, torch.stack(rows).norm(dim=-1)


def decompose(model: HookedTransformer, cache: ActivationCache, pos: int) -> tuple[list[str], torch.Tensor]:
    """The final residual stream of position pos as a sum: (labels, pieces (N, C)), one piece for the
    embeddings, the positions, each head of each layer, each attention bias and each FFN. Exact for pre-norm
    models: pieces.sum(0) == blocks.{L-1}.hook_resid_post[pos]. Where a norm follows attention (Gemma, OLMo 2)
    each head's write is taken through it: times the gain, divided by the one scale the heads' sum gave it."""
    cfg = model.cfg
    if not cfg.pre_norm or model.ln_embed is not None:
        raise InputError("This is a post-norm model (BERT-style): each block normalises the sum it writes, so the "
                         "stream is not a sum of parts. Pick a pre-norm model: smollm2-135m, tiny-gpt-char or tiny-moe.")
    labels, pieces = ["embedding"], [cache["embed"][pos]]
    if "hook_pos_embed" in cache:
        labels.append("positions")
        pieces.append(cache["pos_embed"][pos])
    for i, block in enumerate(model.blocks):
        z = cache["z", i][pos].to(model.device)                                      # (H, D)
        W_O = block.attn.o_proj.weight.view(cfg.d_model, cfg.n_heads, cfg.d_head)    # (C, H, D)
        heads = torch.einsum("hd,chd->hc", z, W_O)                                  # (H, C): each head's write
        if hasattr(block, "ln1_post"):  # norm(sum of heads) = gain * sum / scale: linear once the scale is known
            norm = block.ln1_post
            heads = heads * norm.weight / norm_steps(heads.sum(0), True, norm.weight, None, norm.eps)["scale"]
        labels += [f"L{i} H{h}" for h in range(cfg.n_heads)]
        pieces += list(heads.cpu())
        if block.attn.o_proj.bias is not None:
            labels.append(f"L{i} attention bias")
            pieces.append(block.attn.o_proj.bias.detach().cpu())
        labels.append(f"L{i} FFN")
        pieces.append(cache["mlp_out", i][pos])
    return labels, torch.stack([p.float().cpu() for p in pieces])


@torch.no_grad()
def direct_logit_attribution(model: HookedTransformer, pieces: torch.Tensor, token: int) -> dict:
    """Each piece's direct effect on one token's logit, through the final norm with its scale frozen at the
    value the whole stream gave it (the only approximation: the scale depends on all pieces together).

        logit = sum_i w_U . (gain * centre(piece_i) / scale)  +  w_U . bias  +  b_U
    """
    if model.unembed is None or model.unembed.transform is not None or model.ln_final is None:
        raise InputError("Direct logit attribution needs a decoder whose stream goes straight through a final norm "
                         "to the vocabulary (this model has no such head). Pick smollm2-135m, tiny-gpt-char or tiny-moe.")
    norm = model.ln_final
    stream = pieces.sum(0).to(model.device)                                          # (C,)
    steps = norm_steps(stream, norm.rms, norm.weight, norm.bias, norm.eps)
    x = pieces.to(model.device)
    if not norm.rms:
        x = x - x.mean(-1, keepdim=True)                                             # centring is linear
    W_U = model.embed.weight if model.unembed.weight is None else model.unembed.weight
    divisor = model.cfg.logit_divisor                                                # Granite divides logits by 6
    w = W_U[token].float() * norm.weight.float() / divisor                           # (C,)
    direct = (x.float() / steps["scale"]) @ w                                        # (N,)
    constant = ((W_U[token].float() @ norm.bias.float() if norm.bias is not None else torch.zeros(())) +
                (model.unembed.bias[token].float() if model.unembed.bias is not None else 0)) / divisor
    # the model's logit for the token, before Gemma 2's soft cap squashes it: what the pieces add up to
    b_U = model.unembed.bias[token].float() if model.unembed.bias is not None else 0
    logit = (W_U[token].float() @ norm(stream.to(norm.weight.dtype)).float() + b_U) / divisor
    return dict(direct=direct.cpu(), constant=float(constant), logit=float(logit), scale=float(steps["scale"]))


@torch.no_grad()
def vocabulary_reading(model: HookedTransformer, direction: torch.Tensor, k: int = 5) -> tuple[list[int], list[int]]:
    """The tokens a residual-stream direction (C,) pushes up most and down most: the unembedding read through the
    final norm's gain (its scale and centring left out), so (top k ids, bottom k ids)."""
    W_U = model.embed.weight if model.unembed is None or model.unembed.weight is None else model.unembed.weight
    gain = model.ln_final.weight if model.ln_final is not None else torch.ones_like(direction)
    scores = W_U.float() @ (direction.to(W_U.device).float() * gain.float())          # (V,)
    return scores.topk(k).indices.tolist(), (-scores).topk(k).indices.tolist()
