"""Reading what the widgets send: the chosen model, numbers within range, notes for the user."""
from __future__ import annotations

import os

from core.inputs import InputError
from core.weights import hub, zoo


def _by_family() -> list[tuple[str, zoo.Spec, str | None]]:
    """(name, spec, what is missing or None) for every model of the zoo, grouped by family: the families in the
    order the zoo first names each, the models of one family in the zoo's order."""
    specs = zoo.SPECS  # one reading: a model kept or loaded by name meanwhile replaces the dict, never changes it
    families = list(dict.fromkeys(spec.family for spec in specs.values()))
    named = sorted(specs.items(), key=lambda item: families.index(item[1].family))
    return [(name, spec, spec.missing()) for name, spec in named]


def model_choices() -> list[tuple[str, str]]:
    """(label, name) for every model that can load here."""
    return [(f"{name} — {spec.title}", name) for name, spec, problem in _by_family() if problem is None]


def unavailable_note() -> str:
    missing = [f"- **{name}** — {spec.title}: {problem}" for name, spec, problem in _by_family() if problem]
    return ("Not available here:\n" + "\n".join(missing)) if missing else ""


def by_name_note() -> str:
    """What the model picker says about typing a hub id into it, on this server."""
    if os.environ.get(hub.ALLOWED, None) == "":
        return "Loading other models by their hub id is switched off on this server."
    if zoo.hub_offline():
        return ("Or type a Hugging Face hub id (ORG/NAME): the hub is offline here, so only a model already in this "
                "server's Hugging Face cache loads.")
    limits = [f"this server allows {os.environ[hub.ALLOWED]}" if os.environ.get(hub.ALLOWED) else "",
              f"up to {hub.count(hub.max_params())} parameters" if hub.max_params() else ""]
    return "Or type a Hugging Face hub id (ORG/NAME), e.g. Qwen/Qwen2.5-0.5B-Instruct" + \
        "".join(f"; {limit}" for limit in limits if limit) + "."


def get_model(name, device: str | None = None, weights: str = "fp32"):
    if not name:
        raise InputError("Choose a model first.")
    return zoo.load(name, device, weights)


def as_text(value) -> str:
    """What a text box sent, as a string (an API client may send None or a number)."""
    return "" if value is None else str(value)


def join_notes(*notes: str) -> str:
    return " ".join(n for n in notes if n)
