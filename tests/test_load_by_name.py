"""A model named by its hub id, offline: a folder laid out as huggingface_hub's cache (what a download leaves) holds
a random transformers model of each family core.weights.convert knows, with a character tokenizer. It loads through
the zoo, the model picker and `app.py --model`, equals transformers' logits, caches its conversion and draws in
every tab; what cannot be loaded is refused in one plain sentence, and the server goes on serving."""
import hashlib
import inspect
import json
import types

import gradio as gr
import huggingface_hub.constants
import pytest
import torch
import transformers
from conftest import VOCAB, _randomise, assert_close
from huggingface_hub import errors
from tokenizers import Tokenizer
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

import app
from core.weights import hub, zoo
from core.weights.convert import CONVERTERS
from explainers.page.inputs import by_name_note, model_choices
from explainers.page.links import restore
from explainers.tabs import moe

SPECIALS = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]  # with SPECIALS: 101 = VOCAB ids

# A small config of each architecture a converter may read (widths a multiple of 32, the quantization tab's group).
# An architecture is tested here once core.weights.convert has a converter for it; a new one joins with a line.
DECODER = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64,
               vocab_size=VOCAB, max_position_embeddings=64)
BERT = dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64, vocab_size=VOCAB,
            max_position_embeddings=64)
TINY = {
    "GPT2LMHeadModel": dict(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, n_positions=64, bos_token_id=0,
                            eos_token_id=0),
    "LlamaForCausalLM": DECODER,
    "MixtralForCausalLM": {**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2},
    "GraniteMoeForCausalLM": {**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2, "embedding_multiplier": 12.0,
                              "residual_multiplier": 0.22, "logits_scaling": 6.0},
    "BertModel": BERT,
    "BertForMaskedLM": BERT,
    "Qwen2ForCausalLM": DECODER,
    "Qwen3ForCausalLM": {**DECODER, "head_dim": 8},
    "MistralForCausalLM": DECODER,
    "Gemma2ForCausalLM": {**DECODER, "head_dim": 8},
    "Gemma3ForCausalLM": {**DECODER, "head_dim": 8},
    "Phi3ForCausalLM": {**DECODER, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0},
    "Olmo2ForCausalLM": {**DECODER, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0},
    "Qwen2MoeForCausalLM": {**DECODER, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                            "shared_expert_intermediate_size": 64},
}


def tiny(architecture: str):
    """A small random transformers model of the architecture (every weight perturbed, so a wrong mapping shows)."""
    model_class = getattr(transformers, architecture)
    torch.manual_seed(0)
    return _randomise(model_class(model_class.config_class(**TINY[architecture])))


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: BPE with no merges splits the text into characters."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    assert len(vocab) == VOCAB
    chars = Tokenizer(BPE(vocab, merges=[], unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=chars, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def in_hub_cache(repo: str, hf=None, config: str | None = None):
    """Save a model where huggingface_hub keeps a download of `repo`: models--ORG--NAME/snapshots/<commit>/ with its
    files, and refs/main naming that commit. `config`: a config.json text of its own instead of hf's."""
    folder = huggingface_hub.constants.HF_HUB_CACHE / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    if hf is not None:
        hf.save_pretrained(snapshot)
        char_tokenizer().save_pretrained(snapshot)
    if config is not None:
        (snapshot / "config.json").write_text(config)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, request):
    """An empty hub cache and conversion cache; the zoo as it was afterwards, the models added here dropped.
    SmolLM2 is loaded first, from the real cache: some tabs show it beside the chosen model."""
    if zoo.available()["smollm2-135m"] is None:
        request.getfixturevalue("smollm2")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", tmp_path / "hub")
    monkeypatch.setenv("EXPLAINER_CACHE", str(tmp_path / "converted"))
    monkeypatch.setattr(moe, "SAMPLE_CHARS", 2_000)  # the MoE tab's corpus load, on a short sample
    for variable in (hub.ALLOWED, hub.MAX_PARAMS):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(zoo, "SPECS", zoo.SPECS)  # add_hub_model replaces it; this puts the old one back
    monkeypatch.setattr(zoo, "_locks", dict(zoo._locks))
    monkeypatch.setattr(zoo, "_loaded", dict(zoo._loaded))
    yield tmp_path
    moe.corpus_load.cache_clear()  # tiny-moe's, on the short sample


def model_widgets(demo) -> list:
    """The page's widgets that choose models: the picker, and a tab's own (the compare tab's two, the tokenizer
    tab's list): each has the zoo's names for choices."""
    def names(component):
        return {c[1] if isinstance(c, (tuple, list)) else c for c in getattr(component, "choices", None) or []}
    return [c for c in demo.blocks.values() if isinstance(c, (gr.Dropdown, gr.CheckboxGroup)) and names(c)
            and names(c) <= set(zoo.SPECS)]


def draw_every_tab(demo, name: str) -> dict[str, list]:
    """Each tab's drawing of the model, as the page runs it when the tab comes on screen: its View's draws in turn,
    the widgets at their defaults and the models chosen at `name`, each draw's widget updates (sliders fitted to
    the model) passed on to the next. A tab that refuses the model (beam search needs a decoder) ends with the
    sentence it shows, as the page's chain of draws stops there; a bug raises."""
    drawn = {}
    for tab, view in [(tab, view) for tab, view in demo.views.views.items() if view.draws]:
        values = {c._id: name if isinstance(c, gr.Dropdown) and not c.multiselect else [name] for c in model_widgets(demo)}
        drawn[tab] = []
        for draw in view.draws:
            try:
                result = draw["fn"](*[values.get(c._id, c.value) for c in draw["inputs"]])
                result = list(result)[-1] if inspect.isgenerator(result) else result
            except gr.Error as refused:
                assert not refused.message.startswith("Something went wrong"), (tab, refused.message)
                drawn[tab].append(refused)
                break
            outputs = draw["outputs"] if isinstance(draw["outputs"], list) else [draw["outputs"]]
            for component, value in zip(outputs, result if len(outputs) > 1 else [result]):
                update = value.constructor_args if isinstance(value, gr.components.Component) else {"value": value}
                if "value" in update:
                    values[component._id] = update["value"]
            drawn[tab].append(result)
    return drawn


def refusals(drawn: dict[str, list]) -> dict[str, str]:
    return {tab: results[-1].message for tab, results in drawn.items() if isinstance(results[-1], gr.Error)}


def with_tiny(architecture: str):
    if architecture not in TINY:
        pytest.skip(f"no small config of {architecture} in TINY yet")
    return tiny(architecture)


@pytest.mark.parametrize("architecture", sorted(CONVERTERS))
def test_a_model_by_its_hub_id_loads_equals_transformers_and_its_conversion_is_cached(hub_cache, architecture, ids):
    hf = with_tiny(architecture)
    repo = f"test-org/tiny-{architecture}"
    in_hub_cache(repo, hf)
    model = zoo.load(repo, "cpu")
    assert model.name == repo and zoo.SPECS[repo].family == hub.family(architecture)
    assert model.tokenizer.encode("Hi!") == [len(SPECIALS) + CHARS.index(c) for c in "Hi!"]
    with torch.no_grad():
        out = hf(ids)
        assert_close(model(ids), out.logits if hasattr(out, "logits") else out.last_hidden_state)
    assert (hub_cache / "converted" / "hub" / repo.replace("/", "--") / "stamp.json").exists()

    def never(*args, **kwargs):
        raise AssertionError("the second load converted again")
    zoo._loaded.pop((repo, "cpu", "fp32"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub, "convert", never)
        again = zoo.load(repo, "cpu")  # a second start: the cached conversion is read
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))
    assert repo in [name for _, name in model_choices()]


# Every tab on every family is the slow tier's; the fast tier draws every tab on one family.
@pytest.mark.parametrize("architecture", [a if a == "LlamaForCausalLM" else pytest.param(a, marks=pytest.mark.slow)
                                          for a in sorted(CONVERTERS)])
def test_a_model_by_its_hub_id_draws_in_every_tab(hub_cache, demo, architecture):
    repo = f"test-org/tiny-{architecture}"
    in_hub_cache(repo, with_tiny(architecture))
    drawn = draw_every_tab(demo, repo)
    assert set(drawn) == {tab for tab, view in demo.views.views.items() if view.draws}
    if zoo.load(repo).cfg.causal:
        assert refusals(drawn) == {}
    else:  # as for any encoder: the tabs that continue a text say they need a decoder
        assert refusals(drawn) and all("needs a decoder" in sentence for sentence in refusals(drawn).values())


def pick(demo, name):
    """The model picker's handler, as the page calls it when `name` is chosen or typed in on tiny-gpt-char."""
    views = demo.views
    return views.switched(name, "tiny-gpt-char", None, 1, {})


def test_a_hub_id_typed_into_the_picker_loads_it_and_the_tabs_draw_it(hub_cache, demo):
    repo = "test-org/typed-in"
    in_hub_cache(repo, tiny("LlamaForCausalLM"))
    views = demo.views
    updates = pick(demo, repo)
    picker = updates[views.w["model"]]
    assert picker.constructor_args["value"] == repo and repo in [name for _, name in picker.constructor_args["choices"]]
    assert updates[views.shown] == repo and updates[views.w["note"]] == "" and views.generation in updates
    assert updates[views.requests["overview"]][0] == updates[views.generation]  # the tab on screen draws
    assert (repo, "cpu", "fp32") in zoo._loaded  # loaded in the picker's handler, where its progress shows
    assert pick(demo, "OPENAI-COMMUNITY/gpt2")[views.w["note"]].startswith("gpt2 is not available")  # the entry's id
    view = restore(f"?tab=overview&model={repo}", views.links, {"chapter-1": ["overview"]}, "tiny-gpt-char")
    assert (view.model, view.note) == (repo, "")
    assert app.parse_args(["--model", repo]).model == repo


def test_the_picker_says_where_the_hub_is_offline_and_what_the_server_allows(monkeypatch, demo):
    picker = demo.page.model
    assert picker.info == by_name_note() and "the hub is offline here" in picker.info and picker.allow_custom_value
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv(hub.ALLOWED, "Qwen/*")
    monkeypatch.setenv(hub.MAX_PARAMS, "1.5B")
    assert by_name_note() == ("Or type a Hugging Face hub id (ORG/NAME), e.g. Qwen/Qwen2.5-0.5B-Instruct; this server "
                              "allows Qwen/*; up to 1.5B parameters.")
    monkeypatch.setenv(hub.ALLOWED, "")
    assert by_name_note() == "Loading other models by their hub id is switched off on this server."


QWEN_05B = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=896, intermediate_size=4864,
                num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                tie_word_embeddings=True)  # Qwen2.5-0.5B's shape: 494M parameters, 2.0 GB in fp32


@pytest.mark.parametrize("repo, config, setting, sentence", [
    ("test-org/falcon", {"architectures": ["FalconForCausalLM"], "model_type": "falcon"}, None,
     "test-org/falcon is a FalconForCausalLM, which this app cannot convert yet; it converts " +
     ", ".join(sorted(CONVERTERS)) + "."),
    ("test-org/big", QWEN_05B, None, "test-org/big is too large for this machine: 494M parameters are 2.0 GB in fp32, "
                                     "about twice that while it converts, and 1.5 GB of memory is free."),
    ("test-org/big", QWEN_05B, (hub.MAX_PARAMS, "100M"),
     "test-org/big has 494M parameters; this server loads models of at most 100M."),
    ("test-org/broken", '{"architectures": ["LlamaForCausalLM"', None, "test-org/broken's config.json is not valid JSON."),
    ("test-org/broken", {"model_type": "llama"}, None,
     "test-org/broken's config.json names no architecture (its \"architectures\" list is missing)."),
    ("test-org/broken", {**QWEN_05B, "hidden_size": "wide"}, None,
     "test-org/broken's config.json does not describe a model transformers can build (Validation error for field "
     "'hidden_size': TypeError: Field 'hidden_size' expected int, got str (value: 'wide'))."),
    ("test-org/llama", {**QWEN_05B, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}, None,
     "test-org/llama is a LlamaForCausalLM this app cannot convert: RoPE scaling 'linear' is not supported."),
    ("test-org/llama", QWEN_05B, (hub.ALLOWED, "Qwen/*, google/gemma-3-270m-it"),
     "This server does not load test-org/llama: its owner allows only Qwen/*, google/gemma-3-270m-it."),
    ("nobody/nowhere", None, None, "nobody/nowhere is not in this server's Hugging Face cache, and the Hugging Face "
                                   "hub is not reachable from here."),
])
def test_what_cannot_be_loaded_is_refused_in_one_sentence_before_any_download_and_the_server_goes_on(
        hub_cache, demo, monkeypatch, capsys, repo, config, setting, sentence):
    """The config alone is in the cache (no weights): each refusal comes from it. The picker shows the sentence and
    stays on the model shown; a link names it; `app.py --model` exits with it; then the zoo serves another model."""
    if config is not None:
        in_hub_cache(repo, config=config if isinstance(config, str) else json.dumps(config))
    if setting:
        monkeypatch.setenv(*setting)
    monkeypatch.setattr(hub, "free_memory", lambda: 1.5e9)
    monkeypatch.setattr(hub, "fetch", lambda model: pytest.fail("a refused model was downloaded"))
    views = demo.views
    updates = pick(demo, repo)
    assert updates[views.w["note"]] == sentence and updates[views.w["model"]] == "tiny-gpt-char"
    assert views.generation not in updates  # nothing redraws
    assert sentence.rstrip(".") in restore(f"?model={repo}", views.links, {"c": ["overview"]}, "tiny-gpt-char").note
    with pytest.raises(SystemExit):
        app.parse_args(["--model", repo])
    assert sentence in capsys.readouterr().err
    assert repo not in zoo.SPECS and zoo.load("tiny-gpt-char").name == "tiny-gpt-char"
    assert pick(demo, "tiny-moe")[views.shown] == "tiny-moe"


def test_a_gated_model_says_so(hub_cache, demo, monkeypatch):
    def gated(repo, filename):
        raise errors.GatedRepoError(f"Access to model {repo} is restricted.",
                                    response=types.SimpleNamespace(headers={}, status_code=401, request=None))
    monkeypatch.setattr(hub, "hf_hub_download", gated)
    note = pick(demo, "google/gemma-3-270m-it-copy")[demo.views.w["note"]]
    assert note == ("google/gemma-3-270m-it-copy is gated: its licence must be accepted on huggingface.co, and this "
                    "server given a token (HF_TOKEN) of an account that did.")


def test_hub_ids_and_the_size_cap_are_read_plainly(monkeypatch):
    assert hub.is_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and hub.is_hub_id("google/gemma-3-270m-it")
    assert not any(hub.is_hub_id(n) for n in ["gpt2", "a/b/c", "../x", "a/..", "", None, "a b/c"])
    for raw, cap in [("1.5B", 1.5e9), ("500m", 5e8), ("2e9", 2e9), ("", None)]:
        monkeypatch.setenv(hub.MAX_PARAMS, raw)
        assert hub.max_params() == cap
    monkeypatch.setenv(hub.MAX_PARAMS, "lots")
    with pytest.raises(SystemExit):
        app.parse_args([])
