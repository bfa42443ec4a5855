"""The whole-model tabs: the flow (Overview), the Block tab and the Residual stream tab draw the model's own numbers,
link each stage to the tab that explains it, and reuse one recorded forward."""
from urllib.parse import parse_qs

import pytest
import torch

from core.inputs import InputError
from explainers.activations import forget_runs, run
from explainers.page.inputs import get_model
from explainers.tabs import block, lm_head, overview, residual

TEXT = "The capital of France is"


def query(link: str) -> dict:
    return {k: v[0] for k, v in parse_qs(link.lstrip("?")).items()}


@pytest.mark.parametrize("name", ["smollm2-135m", "minilm-l6", "tiny-moe", "tiny-bert-word"])
def test_the_flow_draws_every_stage_with_the_streams_real_length(name):
    model = get_model(name)
    html, fig, _ = overview.update_flow(name, TEXT)
    L = model.cfg.n_layers
    cells = fig.data[0]
    assert list(cells.y) == ["embeddings"] + [f"L{i} + {part}" for i in range(L) for part in ("attention", "FFN")]
    ids = tuple(model.tokenizer.encode(TEXT))
    cache = run(name, ids).cache
    torch.testing.assert_close(torch.tensor(cells.z[-1]), cache["resid_post", L - 1].norm(dim=-1).log10())
    torch.testing.assert_close(torch.tensor(cells.z[1]), cache["resid_mid", 0].norm(dim=-1).log10())
    # each row links to the tab that explains it, with this layer (and position) and this text
    attn, ffn = query(cells.customdata[3][0]), query(cells.customdata[4][2])
    assert attn == {"tab": "attention", "model": name, "text": TEXT, "layer": "1"}
    assert ffn == {"tab": "moe" if model.cfg.n_experts else "block", "model": name, "text": TEXT, "layer": "1",
                   "position": "2"}
    assert html.count("data-view") >= 7 and "tab=lm_head" in html if model.unembed else "tab=lm_head" not in html
    if model.unembed is not None:  # the top next tokens are the model's own probabilities
        bars = fig.data[1]
        probs = run(name, ids).logits(len(ids) - 1).softmax(-1)
        assert bars.x[0] == pytest.approx(float(probs.max()), rel=1e-5) and query(bars.customdata[0])["tab"] == "lm_head"
    else:
        assert len(fig.data) == 1


@pytest.mark.parametrize("name", ["smollm2-135m", "minilm-l6", "tiny-moe"])
def test_the_block_tab_shows_one_layer_and_position(name):
    model = get_model(name)
    notice, stream, norm, table, ffn, neurons, *_ = block.update(name, TEXT, 1, 2, block.NORMS[1])
    assert "Layer **1**, position **2**" in notice
    cache = run(name, tuple(model.tokenizer.encode(TEXT))).cache
    torch.testing.assert_close(torch.tensor(stream.data[0].z[4]), cache["resid_post", 1][2])
    assert "This model uses **" + ("RMSNorm" if model.cfg.norm == "rmsnorm" else "LayerNorm") + "**" in table
    assert neurons.shape == (8, 7 if model.cfg.gated_ffn else 6)
    if model.cfg.gated_ffn:  # SwiGLU: the curve's value act(gate), then act(gate) x up, each under its own name
        act = model.blocks[1].mlp.act if hasattr(model.blocks[1], "mlp") else model.blocks[1].moe.experts[0].act
        gate, on_curve = torch.tensor(neurons["gate (what act reads)"].values), neurons["act(gate)"].values
        torch.testing.assert_close(torch.tensor(on_curve), act(gate).double(), atol=2e-3, rtol=0)
        assert "act(gate) × up" in neurons.columns and "activation" not in neurons.columns
    curves = [t.name for t in ffn.data if t.mode == "lines"]
    assert curves == ["GELU", "GELU (tanh)", "ReLU", "SiLU"]
    own = {"silu": "SiLU", "gelu": "GELU"}[model.cfg.act]
    assert next(t for t in ffn.data if t.name == own).line.width == 3  # the model's own function stands out


def test_out_of_range_layer_and_position_are_clamped_with_a_note():
    notice, *_, layer, position = block.update("tiny-gpt-char", "To be", 99, 1000, block.NORMS[0])
    assert "Layer **3**, position **4**" in notice and "The layer was 99" in notice and "The position was 1000" in notice
    assert "tiny-gpt-char has 4 layers" in notice and "the text is 5 tokens" in notice  # the model's, the text's
    assert (layer.maximum, layer.value, position.minimum, position.maximum, position.value) == (3, 3, -1, 4, 4)
    with pytest.raises(InputError):
        block.update("tiny-gpt-char", "   ", 0, 0, block.NORMS[0])


def test_the_residual_tab_adds_up_and_links_heads_to_the_attention_tab():
    notice, parts, heads, growth, _ = residual.update("smollm2-135m", TEXT, -1, "")
    assert "'␣Paris'" in notice
    total = sum(sum(t.y) for t in parts.data)
    stated = float(notice.split("the model's logit is **")[1].split("**")[0])
    assert total == pytest.approx(stated, abs=1e-3)  # the constant is 0 for SmolLM2 (no biases)
    assert query(heads.data[0].customdata[23][4]) == {"tab": "attention", "model": "smollm2-135m", "text": TEXT,
                                                      "layer": "23", "head": "4"}
    assert len(growth.data[0].y) == 31
    other = residual.update("smollm2-135m", TEXT, -1, "London")[0]
    assert "'London'" in other


@pytest.mark.parametrize("name, message", [("minilm-l6", "post-norm"), ("tiny-bert-word", "needs a decoder")])
def test_an_encoder_where_a_decoder_is_needed_gets_a_plain_message(name, message):
    """On the tab, not as an error toast: the tab updates whenever the model changes, seen or not."""
    notice, *figures, _ = residual.update(name, TEXT, -1, "")
    assert message in notice and figures == [None, None, None]
    fig, notice, *_ = lm_head.update("minilm-l6", TEXT, -1, 1, 50, 0.9, 0, 200)
    assert fig is None and "no output head" in notice and lm_head.update_lens("minilm-l6", TEXT) is None


def test_a_new_text_runs_the_model_once_and_other_layers_or_positions_reuse_it():
    name = "tiny-gpt-char"
    model = get_model(name)
    forget_runs()
    runs = []
    hook = model.embed.register_forward_hook(lambda *_: runs.append(1))
    try:
        overview.update_flow(name, "A new text for every view")
        block.update(name, "A new text for every view", 0, -1, block.NORMS[0])
        block.update(name, "A new text for every view", 3, 5, block.NORMS[1])
        residual.update(name, "A new text for every view", 4, "")
    finally:
        hook.remove()
    assert len(runs) == 1
