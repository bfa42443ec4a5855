"""Models by their Hugging Face hub id (`Qwen/Qwen2.5-0.5B-Instruct`), checked before any weight is downloaded.

`check` reads the config alone (a few kB) and refuses, in one plain sentence, a model this server may not load
(EXPLAINER_ALLOWED_MODELS, EXPLAINER_MAX_PARAMS), one it cannot reach (the hub offline and the model not in the
local cache; gated), a malformed config, an architecture core.weights.convert has no converter for, or a model
too large for the memory free. Its size comes from the config: the model is built on PyTorch's "meta" device,
which has shapes and no storage. `fetch` then downloads the weights and tokenizer (with progress bars) and
`convert` turns them into a HookedTransformer; core.weights.zoo caches the conversion.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
import transformers
from huggingface_hub import errors, hf_hub_download, snapshot_download
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

from core.inputs import InputError
from core.model.transformer import HookedTransformer
from core.weights.convert import CONVERTERS, from_transformers, read
from core.weights.tokenizers import HFTokenizer

ALLOWED = "EXPLAINER_ALLOWED_MODELS"  # "Qwen/*,google/gemma-3-270m-it": fnmatch patterns; unset: any id; empty: none
MAX_PARAMS = "EXPLAINER_MAX_PARAMS"   # "1.5B", "500M" or "2e9": larger models are refused; unset: memory decides
CONVERSION_PEAK = 2                   # transformers' fp32 copy and ours are both in memory while it converts
FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]  # config, weights, tokenizer; no .bin, .gguf

# Each architecture's transformers class and the tokenizer class transformers picks for it, imported here once: a
# request thread may not be the first to import a transformers name (see core.weights.zoo). A converter added to
# CONVERTERS joins by itself.
CLASSES = {arch: getattr(transformers, arch) for arch in CONVERTERS}
TOKENIZERS = [getattr(transformers, name) for name in {TOKENIZER_MAPPING_NAMES.get(c.config_class.model_type)
                                                       for c in CLASSES.values()} if name]


class HubRefused(InputError):
    """A model named by its hub id cannot be loaded here; the message says why, in one sentence."""


@dataclass(frozen=True)
class HubModel:
    """What the config says about a model on the hub, before any weight is downloaded."""
    repo: str            # "Qwen/Qwen2.5-0.5B-Instruct"
    commit: str          # the snapshot the config came from: the conversion cached for it is this model's
    architecture: str    # a key of CONVERTERS, e.g. "Qwen2ForCausalLM"
    n_params: int

    @property
    def family(self) -> str:
        """"Qwen2" for Qwen2ForCausalLM: what the model picker groups by."""
        return family(self.architecture)

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.n_params


def family(architecture: str) -> str:
    return re.sub(r"(ForCausalLM|LMHeadModel|ForMaskedLM|Model)$", "", architecture) or architecture


def is_hub_id(name) -> bool:
    """"org/name": what the hub's model ids look like (letters, digits, '-', '_', '.')."""
    return isinstance(name, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and ".." not in name


def count(n: float) -> str:
    """494M, 1.5B, 14.3B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB"


def max_params() -> float | None:
    """The server's cap on parameters (EXPLAINER_MAX_PARAMS), or None. ValueError when it is not a number."""
    raw = os.environ.get(MAX_PARAMS, "").strip()
    if not raw:
        return None
    match = re.fullmatch(r"([\d.]+(?:e\d+)?)\s*([KMB]?)", raw, re.IGNORECASE)
    if not match:
        raise ValueError(f"{MAX_PARAMS}={raw!r} is not a number of parameters (e.g. 1.5B, 500M or 2e9)")
    return float(match[1]) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[match[2].upper()]


def allowed(repo: str) -> bool:
    patterns = os.environ.get(ALLOWED)
    return patterns is None or any(fnmatch.fnmatch(repo, p.strip()) for p in patterns.split(",") if p.strip())


def free_memory() -> int:
    """Bytes of memory the machine can give a new model now."""
    return psutil.virtual_memory().available


def _config_file(repo: str) -> Path:
    """config.json of the repo's latest snapshot, from the hub or, offline, from the local cache."""
    try:
        return Path(hf_hub_download(repo, "config.json"))
    except errors.GatedRepoError:
        raise HubRefused(f"{repo} is gated: its licence must be accepted on huggingface.co, and this server given "
                         "a token (HF_TOKEN) of an account that did.") from None
    except errors.RepositoryNotFoundError:
        raise HubRefused(f"There is no model {repo} on the Hugging Face hub (or it is private).") from None
    except errors.LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE=1 or no network), and not in the local cache
        raise HubRefused(f"{repo} is not in this server's Hugging Face cache, and the Hugging Face hub is not "
                         "reachable from here.") from None
    except errors.EntryNotFoundError:
        raise HubRefused(f"{repo} has no config.json: it is not a model transformers can load.") from None
    except errors.HfHubHTTPError as e:
        raise HubRefused(f"The Hugging Face hub did not give {repo}'s config (HTTP "
                         f"{getattr(e.response, 'status_code', 'error')}); try again later.") from None


def _architecture(repo: str, path: Path) -> str:
    """The class the config names, if core.weights.convert has a converter for it."""
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HubRefused(f"{repo}'s config.json is not valid JSON.") from None
    names = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise HubRefused(f"{repo}'s config.json names no architecture (its \"architectures\" list is missing).")
    if names[0] not in CONVERTERS:
        raise HubRefused(f"{repo} is a {names[0]}, which this app cannot convert yet; it converts "
                         f"{', '.join(sorted(CONVERTERS))}.")
    return names[0]


def _size(repo: str, architecture: str, folder: Path) -> int:
    """Parameters of the model the config describes, counted on the meta device; its converter is tried there too,
    so a variant it refuses (a RoPE scaling it lacks) is refused before the download."""
    model_class = CLASSES[architecture]
    try:
        config = model_class.config_class.from_pretrained(folder)
        with torch.device("meta"):
            model = model_class(config)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError, RuntimeError,
            errors.StrictDataclassError) as e:  # transformers checks a config's fields as it reads them
        raise HubRefused(f"{repo}'s config.json does not describe a model transformers can build "
                         f"({' '.join(str(e).split())[:160]}).") from None
    try:
        read(model)
    except (ValueError, KeyError) as e:
        raise HubRefused(f"{repo} is a {architecture} this app cannot convert: {str(e)[:160]}.") from None
    except NotImplementedError:
        pass  # an operation with no meta kernel (BERT's tied-decoder check): the conversion itself will check
    return sum(p.numel() for p in model.parameters())


def check(repo: str) -> HubModel:
    """What the config says, once the model may, can and will fit to be loaded here; HubRefused otherwise."""
    if not is_hub_id(repo):
        raise HubRefused(f"{str(repo)[:80]!r} is not a Hugging Face hub id (ORG/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct).")
    if not allowed(repo):
        patterns = os.environ.get(ALLOWED, "").strip()
        raise HubRefused(f"This server does not load {repo}: its owner allows only {patterns}." if patterns else
                         "This server does not load models by their hub id: choose one of the listed models.")
    path = _config_file(repo)
    architecture = _architecture(repo, path)
    n_params = _size(repo, architecture, path.parent)
    model = HubModel(repo, path.parent.name, architecture, n_params)
    cap = max_params()
    if cap is not None and n_params > cap:
        raise HubRefused(f"{repo} has {count(n_params)} parameters; this server loads models of at most {count(cap)}.")
    need, free = CONVERSION_PEAK * model.fp32_bytes, free_memory()
    if need > free:
        raise HubRefused(f"{repo} is too large for this machine: {count(n_params)} parameters are "
                         f"{gigabytes(model.fp32_bytes)} in fp32, about twice that while it converts, and "
                         f"{gigabytes(free)} of memory is free.")
    return model


def fetch(model: HubModel) -> Path:
    """The snapshot's folder with its config, weights and tokenizer, downloaded where missing (tqdm bars show the
    progress; the page follows them)."""
    try:
        return Path(snapshot_download(model.repo, revision=model.commit, allow_patterns=FILES))
    except OSError as e:  # the hub's errors are OSErrors: offline, unreachable, gated
        raise HubRefused(f"{model.repo}'s weights could not be downloaded ({type(e).__name__}); try again later.") \
            from None


def convert(model: HubModel, folder: Path) -> HookedTransformer:
    """The downloaded model as a HookedTransformer in fp32, with its tokenizer."""
    try:
        hf = CLASSES[model.architecture].from_pretrained(folder, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    except OSError as e:  # no safetensors weights, or no tokenizer files
        raise HubRefused(f"{model.repo} could not be read: {str(e).splitlines()[0][:160]}") from None
    ours = from_transformers(hf)
    ours.tokenizer = HFTokenizer(tokenizer)
    return ours
