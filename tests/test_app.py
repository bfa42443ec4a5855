"""The app assembles offline and its handlers answer in plain sentences."""
import gradio as gr
import pytest

from core.inputs import InputError, clean_text
from explainers.page.inputs import get_model
from explainers.tabs import overview


def test_app_builds_offline_with_a_model_picker(demo):
    pickers = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
    assert len(pickers) == 1 and "smollm2-135m" in [c[1] for c in pickers[0].choices]


PUBLIC_API = ["/ablation", "/attention", "/attention_head", "/beam_search", "/block", "/bpe", "/branch",
              "/causal_mask", "/causality", "/chat_template", "/compare", "/contextual_embeddings", "/data_parallel",
              "/embeddings", "/facts", "/finetune", "/flow", "/instruct_reply", "/instruct_sft", "/kv_cache",
              "/kv_cache_memory", "/lm_head", "/memorise", "/moe", "/next_token", "/padding", "/patching",
              "/positions", "/preference", "/quantize", "/residual", "/scaling_ladder", "/scaling_laws", "/steering",
              "/steering_generate", "/tokenize", "/train", "/zero_memory"]


def test_the_public_api_is_the_named_endpoints_and_nothing_else(demo):
    """"Use via API" lists what each tab computes under a name that says so; page plumbing (tab clicks, links,
    fitting sliders to a model) is not listed, and is not callable where it is only the page's."""
    info = demo.get_api_info()
    assert sorted(info["named_endpoints"]) == PUBLIC_API
    assert not info["unnamed_endpoints"]
    lm_head = [p["parameter_name"] for p in info["named_endpoints"]["/lm_head"]["parameters"]]
    assert lm_head[:2] == ["model_name", "text"] and lm_head[-1] == "lecture"


def test_overview_describes_the_loaded_model(smollm2):
    facts = dict(overview.model_facts(smollm2))
    assert facts["Layers"] == "30" and facts["Key/value heads (G)"] == "3 — GQA" and facts["Width (C)"] == "576"
    assert facts["Parameters"] == f"{sum(p.numel() for p in smollm2.parameters()):,}"
    markdown, fig = overview.update_facts("smollm2-135m")
    assert "| Layers | 30 |" in markdown and fig.data[0].type == "bar"


@pytest.mark.parametrize("name", ["", "gpt5"])
def test_bad_model_names_give_a_message(name):
    with pytest.raises(InputError):
        get_model(name)


@pytest.mark.parametrize("text", [None, "", "   \n", "\x00\x01"])
def test_empty_or_control_only_text_is_refused_plainly(text):
    with pytest.raises(InputError):
        clean_text(text)


def test_long_and_odd_text_is_cleaned_with_a_notice():
    text, note = clean_text("a\x00b" + "x" * 10_000)
    assert text.startswith("ab") and len(text) == 2000 and "control" in note and "first 2000" in note
    rtl_zwj = "שלום 👩‍👩‍👧"
    assert clean_text(rtl_zwj) == (rtl_zwj, "")


def test_on_a_zero_gpu_space_the_handlers_run_inside_spaces_gpu(monkeypatch):
    """Where `spaces` is installed (a ZeroGPU Space) every model handler is decorated with spaces.GPU, booking the
    time of its queue group; here a stub stands in for the package, which is absent."""
    import sys
    import types

    calls = []

    def GPU(duration=60):
        def decorate(fn):
            def wrapper(*args, **kwargs):
                calls.append((fn.__name__, duration))
                return fn(*args, **kwargs)
            return wrapper
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    import app
    fns = {f.api_name: f.fn for f in app.build_app().fns.values() if f.api_name}
    assert "tiny-gpt-char" in fns["tokenize"]("The cat sat.", ["tiny-gpt-char"], False)
    *_, summary = list(fns["kv_cache"]("tiny-gpt-char", "ROMEO:", 4, "cpu", "fp32", None, False))[-1]
    assert ("update", 30) in calls and ("run", 120) in calls, calls
    monkeypatch.delitem(sys.modules, "spaces")
    calls.clear()
    fns = {f.api_name: f.fn for f in app.build_app().fns.values() if f.api_name}
    fns["tokenize"]("The dog sat.", ["tiny-gpt-char"], False)
    assert calls == []  # spaces absent: the handlers are called as they are
