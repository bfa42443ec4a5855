"""The CUDA paths: device choice, the models and the tabs on a GPU, the KV-cache tab's synchronised timings.

Skipped where there is no CUDA (CI); run on a GPU machine with `python -m pytest -q tests/test_cuda.py`
(README: "GPUs" says where and what it gave)."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_the_default_device_is_the_gpu_and_the_page_says_so():
    from core.device import available_devices, describe, pick_device
    assert pick_device().type == "cuda" and "cuda" in available_devices()
    assert describe(pick_device()).startswith("CUDA: ")


@pytest.mark.parametrize("name", ["tiny-gpt-char", "tiny-moe", "tiny-bert-word"])
def test_a_model_on_the_gpu_gives_the_cpus_logits(name):
    from core.weights import zoo
    cpu, gpu = zoo.load(name, "cpu"), zoo.load(name, "cuda")
    assert next(gpu.parameters()).device.type == "cuda"
    ids = torch.tensor([cpu.tokenizer.encode("ROMEO: the king and queen are here")[:24]])
    with torch.no_grad():
        torch.testing.assert_close(gpu(ids.cuda()).cpu(), cpu(ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama", "mixtral"])
def test_core_matches_transformers_on_the_gpu(family):
    from conftest import tiny_hf

    from core.weights.convert import from_transformers
    hf = tiny_hf(family).cuda()
    ours = from_transformers(hf).cuda()
    ids = torch.randint(0, 101, (2, 17), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_kv_cache_tab_on_the_gpu_times_every_step_and_keeps_the_tokens():
    from core.inference.generation import generate
    from core.weights import zoo
    from explainers.page.jobs import Job
    from explainers.tabs import kv_cache
    model = zoo.load("tiny-gpt-char", "cuda")
    prompt = model.tokenizer.encode("ROMEO:")
    cached, plain = (generate(model, prompt, 32, use_cache=c) for c in (True, False))
    assert cached.new_ids == plain.new_ids and min(cached.step_seconds) > 0
    timing, memory, summary = list(kv_cache.run("tiny-gpt-char", "ROMEO:", 40, "cuda", "fp32", Job()))[-1]
    assert "Identical tokens in both runs: yes" in summary and "CUDA" in summary


def test_the_tabs_draw_from_a_model_on_the_gpu():
    from explainers.tabs import attention, lm_head
    figures = attention.update_all("tiny-gpt-char", "ROMEO: the king", 1, 2, [])
    assert figures[0].data
    stages, notice, *_ = lm_head.update("tiny-gpt-char", "ROMEO: the kin", -1, 1.0, 0, 1.0, 0, 100)
    assert stages.data and "g" in str(stages.to_dict())
