"""Masks, seen through the hook_pattern of real forwards."""
import pytest
import torch
from conftest import tiny_hf

from core import HookedTransformer, ModelConfig
from core.model.attention import causal_mask, sliding_window_mask
from core.model.cache import kinds
from core.weights.convert import from_transformers


def patterns(model, ids, **kw):
    _, cache = model.run_with_cache(ids, names=lambda n: n.endswith("hook_pattern"), **kw)
    return list(cache.values())


def test_causal_patterns_are_zero_above_the_diagonal_and_rows_sum_to_one(decoder_pair, ids):
    _, model, _ = decoder_pair
    for p in patterns(model, ids):
        assert torch.all(p.triu(1) == 0)
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))


def test_bidirectional_patterns_see_the_future(pair, ids):
    family, model, _ = pair
    if family != "bert":
        return
    T = ids.shape[1]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for p in patterns(model, ids):
        assert torch.all(p[..., future] > 0)


def test_sliding_window_zeroes_keys_outside_the_window():
    model = HookedTransformer(ModelConfig(positions="rope", norm="rmsnorm", sliding_window=4)).eval()
    ids = torch.randint(0, 256, (1, 12))
    T = ids.shape[1]
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    outside = (s > t) | (t - s >= 4)
    for p in patterns(model, ids):
        assert torch.all(p[..., outside] == 0) and torch.all(p[..., ~outside] > 0)


def test_padding_zeroes_padded_keys(pair, ids):
    _, model, _ = pair
    attention_mask = torch.ones_like(ids)
    attention_mask[0, -4:] = 0
    for p in patterns(model, ids, attention_mask=attention_mask):
        assert torch.all(p[0, :, :, -4:][:, :-4] == 0)  # real queries never look at padding


def test_mask_functions_on_toy_sizes():
    assert causal_mask(3, 3).isinf().tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    # one new query (KV-cache step) sees all cached keys
    assert not causal_mask(1, 5).isinf().any()
    assert sliding_window_mask(1, 5, 2).isinf().tolist() == [[True, True, True, False, False]]


def test_alibi_bias_penalises_distance_per_head():
    model = HookedTransformer(ModelConfig(positions="alibi")).eval()
    _, cache = model.run_with_cache(torch.randint(0, 256, (1, 6)), names="blocks.0.attn.hook_mask")
    mask = cache["blocks.0.attn.hook_mask"][0]                    # (H, T, S)
    assert mask.shape == (4, 6, 6) and torch.all(mask.triu(1).isinf() | (mask.triu(1) == 0))
    slopes = -mask[:, 5, 4]                                        # distance 1
    assert torch.all(slopes[:-1] > slopes[1:])                    # steeper for earlier heads


def test_left_pad_puts_padding_first():
    from core.model.attention import left_pad
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


SLIDING = {"mistral": [0, 1], "qwen2": [1], "gemma2": [0], "gemma3": [0]}   # conftest's layers with a 5-token window


@pytest.mark.parametrize("family", sorted(SLIDING))
def test_sliding_layers_see_their_window_and_global_layers_everything(family, ids):
    model = from_transformers(tiny_hf(family))
    _, cache = model.run_with_cache(ids, names=kinds("pattern"))
    T = ids.shape[1]
    q, k = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for i in range(model.cfg.n_layers):
        pattern = cache["pattern", i]                                          # (B, H, T, T)
        window = model.cfg.window(i)
        assert (window == 5) == (i in SLIDING[family])
        visible = (k <= q) & ((q - k < window) if window else True)
        assert pattern[..., ~visible].abs().max() == 0 and (pattern[..., visible] > 0).all()
