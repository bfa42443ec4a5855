"""The MoE-routing and KV-cache tabs: routing shown = hooks, live re-routing, timings and cache memory."""

import re

import numpy as np
import pytest
import torch

from core.inference.generation import generate, generate_steps, median_slope
from core.inputs import InputError
from core.model.kv_cache import cache_bytes
from core.model.moe import Routing, route, routing
from core.weights import zoo
from explainers.page.jobs import Job, cancel
from explainers.tabs import kv_cache, moe

TEXT = "ROMEO:\nBut, soft! what light"
OWN = dict(top_k=2, noise=0, seed=0, disabled=[], forced="none")


def moe_update(text=TEXT, layer=1, position=-1, sliders=False, **change):
    """The tab's figures and notes (and with `sliders`, its layer, position and top-k sliders after them)."""
    s = {**OWN, **change}
    out = moe.update("tiny-moe", text, layer, position, s["top_k"], s["noise"], s["seed"], s["disabled"], s["forced"])
    return out if sliders else out[:-3]


def hook_values(text=TEXT, change=None):
    model = zoo.load("tiny-moe", "cpu")
    ids = torch.tensor([model.tokenizer.encode(text)])
    with routing(change) if change else torch.no_grad():
        _, cache = model.run_with_cache(ids, names=lambda n: ".moe.hook_expert" in n)
    L = model.cfg.n_layers
    return (torch.stack([cache[f"blocks.{i}.moe.hook_expert_indices"][0] for i in range(L)]),
            torch.stack([cache[f"blocks.{i}.moe.hook_expert_weights"][0] for i in range(L)]))


def test_routing_shown_equals_the_hooks():
    indices, weights = hook_values()
    choices, coloured, router, *_ = moe_update(layer=2, position=5)
    assert torch.equal(torch.tensor(choices.data[0].z), indices[..., 0])
    assert choices.data[0].text[3][7] == "·".join(str(int(e)) for e in indices[3, 7])
    shown = {e: t for e, t in enumerate(router.data[0].text) if t}
    assert shown == {int(e): f"chosen, weight {w:.2f}" for e, w in zip(indices[2, 5], weights[2, 5])}
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert "expert" in coloured and coloured.count("<span title=") == indices.shape[1]


def lab(colour: str, alpha: float = 1.0) -> np.ndarray:
    """CIE L*a*b* of an sRGB colour drawn at `alpha` over white."""
    rgb = alpha * np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255 + (1 - alpha)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.cbrt(xyz / [0.9505, 1.0, 1.089])  # every colour here is light enough for the cube-root branch
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("E", [8, 32, 60])  # tiny-moe, granite-moe-1b, qwen1.5-moe-a2.7b
def test_every_expert_of_the_zoo_models_has_its_own_colour(E):
    if E == 8:
        assert zoo.load("tiny-moe", "cpu").cfg.n_experts == 8
    colours = [moe.expert_colour(e) for e in range(E)]
    assert len(set(colours)) == E and all(re.fullmatch("#[0-9A-F]{6}", c) for c in colours)
    stops = moe._colourscale(E)  # the choices heatmap: expert e's cell in expert e's colour
    assert [stops[2 * e][1] for e in range(E)] == colours


def test_the_first_eight_expert_colours_stay_apart_as_bars_and_as_text_chips():
    """Okabe-Ito's blue and sky blue (experts 0 and 4) were 9 apart as 33% chips; now every pair is far apart."""
    tint = int(moe.CHIP_TINT, 16) / 255
    for alpha in (1.0, tint):
        points = [lab(moe.expert_colour(e), alpha) for e in range(8)]
        closest = min(np.linalg.norm(a - b) for i, a in enumerate(points) for b in points[i + 1:])
        assert closest > 25, (alpha, closest)  # CIE76 ΔE: about 2 is just noticeable, 25 is another colour
    assert all(lab(moe.expert_colour(e), tint)[0] > 55 for e in range(8))  # light enough for black text
    coloured = moe_update(layer=2)[1]
    indices, _ = hook_values()
    assert [f"{moe.expert_colour(int(e))}{moe.CHIP_TINT}" for e in indices[2, :, 0]] == \
        re.findall(r"background:(#[0-9A-F]{8});border", coloured)
    assert re.findall(r">e(\d+)</sub>", coloured) == [str(int(e)) for e in indices[2, :, 0]]  # its number below


def test_the_choices_heatmap_writes_its_cells_only_where_they_fit():
    long, short = moe_update()[0], moe_update(text="To be or not")[0]
    assert len(long.data[0].x) > moe.WRITTEN_CELLS and long.data[0].texttemplate == ""
    assert "hover: all k" in long.layout.title.text and long.data[0].text[0][0]              # still in the hover data
    assert short.data[0].texttemplate == "%{text}" and "text: all k" in short.layout.title.text


def test_disabling_an_expert_routes_nothing_to_it_and_changes_the_prediction():
    indices, _ = hook_values(change=Routing(disabled=frozenset({3, 5})))
    assert not ((indices == 3) | (indices == 5)).any()
    choices, *_, effect, note, _ = moe_update(disabled=["e3", "e5"])
    assert not torch.isin(torch.tensor(choices.data[0].z), torch.tensor([3, 5])).any()
    assert "total variation" in note


def test_top1_forced_and_noisy_routing():
    indices, weights = hook_values(change=Routing(top_k=1))
    assert indices.shape[-1] == 1 and torch.equal(weights, torch.ones_like(weights))
    indices, weights = hook_values(change=Routing(forced=6))
    assert (indices == 6).any(-1).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    a, _ = hook_values(change=Routing(noise=1.0, seed=1))
    b, _ = hook_values(change=Routing(noise=1.0, seed=1))
    c, _ = hook_values(change=Routing(noise=1.0, seed=2))
    assert torch.equal(a, b) and not torch.equal(a, c)                  # seeded, and the seed matters


def test_forced_route_on_a_hand_made_case():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    weights, indices = route(logits, 2, forced=3)
    assert indices.tolist() == [[0, 3]]
    torch.testing.assert_close(weights, torch.tensor([[0.5 / 0.55, 0.05 / 0.55]]))


def test_moe_tab_load_stats_and_fallback_for_dense_models():
    *_, load, stats, effect, note, notice = moe_update()
    assert len(load.data) == 2 and torch.tensor(load.data[1].z).sum(-1).allclose(torch.ones(4))
    assert "Load-balancing loss" in stats and "active per token" in stats
    assert "no change" in effect.layout.annotations[1].text or "same" in effect.layout.annotations[1].text
    out = moe.update("smollm2-135m", TEXT, 0, -1, 2, 0, 0, [], "none")
    assert "has no experts" in out[7]


def test_the_parameter_line_follows_the_top_k_the_tab_routes_with():
    """With top-k 1 the line says one expert per token, and fewer parameters active than at the model's own top-2."""
    from core.model.transformer import active_parameters
    model = zoo.load("tiny-moe", "cpu")
    stats = {k: moe.update("tiny-moe", TEXT, 0, -1, k, 0, 0, [], "none")[4] for k in (1, 2)}
    assert f"runs 1 of {model.cfg.n_experts} experts" in stats[1] and f"runs 2 of {model.cfg.n_experts}" in stats[2]
    assert f"{active_parameters(model, 1):,} active" in stats[1] and f"{active_parameters(model):,} active" in stats[2]
    assert active_parameters(model, 1) < active_parameters(model)


@pytest.mark.parametrize("change, message", [
    (dict(disabled=[f"e{e}" for e in range(8)]), "cannot run"), (dict(disabled=["e2"], forced="e2"), "cannot run"),
    (dict(noise=-1), "noise"), (dict(noise="loud"), "noise"), (dict(forced="e99"), "cannot run")])
def test_moe_bad_settings_get_plain_messages(change, message):
    with pytest.raises(InputError, match=message):
        moe_update(**change)


def test_moe_bad_text_and_clamped_sliders():
    with pytest.raises(InputError, match="empty"):
        moe_update(text=" ")
    *_, notice, layer, position, top_k = moe_update(text="x" * 5000, layer=40, position=999, top_k=12, sliders=True)
    assert "first 64" in notice and "layer was 40" in notice and "top-k was 12" in notice
    assert "position was 999; the text is 64 tokens for tiny-moe" in notice and "tiny-moe has 8 experts" in notice
    assert [(s.maximum, s.value) for s in (layer, position, top_k)] == [(3, 3), (63, 63), (8, 8)]
    assert moe_update(text="👩‍👩‍👧 مرحبا\x00")[0].data


# --- KV cache ------------------------------------------------------------------------------------

def test_cached_and_uncached_give_identical_tokens_and_the_cache_its_size():
    """How each run's step time grows with position is measured by benchmarks/kv_cache.py, not asserted here: a
    timing test fails whenever another process loads the machine (it did in this project's CI)."""
    model = zoo.load("smollm2-135m", "cpu")
    prompt = model.tokenizer.encode("The history of the printing press")
    cached, plain = (generate(model, prompt, 48, use_cache=c) for c in (True, False))
    assert cached.new_ids == plain.new_ids
    assert len(cached.step_seconds) == len(plain.step_seconds) == 48 and min(cached.step_seconds) > 0
    c = model.cfg
    assert cached.cache_bytes == cache_bytes(c.n_layers, c.n_kv_heads, c.d_head, len(prompt) + 47)
    assert plain.cache_bytes == 0


def test_median_slope_is_robust_to_outliers():
    xs = list(range(100))
    ys = [0.001 * x + 1 for x in xs]
    ys[10], ys[60] = 500, 900                                           # two stalls (a GC pause, a noisy neighbour)
    assert median_slope(xs, ys) == pytest.approx(0.001, rel=0.05)
    with pytest.raises(ValueError):
        median_slope([1, 2], [0.1, 0.2])


def test_kv_tab_runs_live_and_ends_with_the_proof():
    outs = list(kv_cache.run("tiny-gpt-char", "ROMEO:", 40, "cpu", "fp32", Job()))
    timing, memory, summary = outs[-1]
    assert "Identical tokens in both runs: yes" in summary and "Speedup" in summary and "CPU" in summary
    assert {t.name for t in timing.data if t.name} == {"with KV cache", "without cache"}
    marker = memory.data[-1]
    cfg = zoo.load("tiny-gpt-char", "cpu").cfg
    assert marker.x[0] == 6 + 39 and marker.y[0] * 2**20 == cache_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.d_head, 6 + 39)


@pytest.mark.parametrize("args, message", [
    (("", 10, "cpu"), "empty"), (("ROMEO:", 0, "cpu"), "must be from 1 to"), (("ROMEO:", 500, "cpu"), "at most 122"),
    (("ROMEO:", "ten", "cpu"), "whole number"), (("ROMEO:", 10, "tpu"), "unknown device"),
    (("x" * 200, 10, "cpu"), "fills this model's context")])
def test_kv_tab_bad_input(args, message):
    with pytest.raises(InputError, match=message):
        list(kv_cache.run("tiny-gpt-char", *args, "fp32", Job()))


def test_kv_tab_refuses_encoders_and_can_be_stopped_early():
    with pytest.raises(InputError, match="encoder"):
        list(kv_cache.run("minilm-l6", "hello", 5, "cpu", "fp32", Job()))
    model = zoo.load("tiny-gpt-char", "cpu")
    steps = generate_steps(model, model.tokenizer.encode("ROMEO:"), 50)
    first = [len(next(steps).new_ids) for _ in range(3)]
    steps.close()                                                      # what a cancel does to the generator
    assert first == [1, 2, 3]
    assert len(generate(model, model.tokenizer.encode("ROMEO:"), 50, should_stop=lambda: True).new_ids) == 1


def test_cancel_stops_the_run_of_its_own_session_and_reports_what_ran(monkeypatch):
    monkeypatch.setattr(kv_cache, "REFRESH_SECONDS", 0.0)           # yield after every step
    ours, other = Job(), Job()  # each session's gr.State
    mine = kv_cache.run("tiny-gpt-char", "ROMEO:", 100, "cpu", "fp32", ours)
    theirs = kv_cache.run("tiny-gpt-char", "ROMEO:", 20, "cpu", "fp32", other)
    next(mine), next(theirs), next(mine)
    cancel(ours)  # the Cancel button
    rest = list(mine)
    assert len(rest) == 1 and rest[0][2].startswith("**Cancelled** (with KV cache: 3 of 100 tokens)")
    assert "Identical tokens in both runs: yes" in list(theirs)[-1][2]       # the other session ran on
