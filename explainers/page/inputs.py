"""Reading what the widgets send: the chosen model, numbers within range, notes for the user."""
from __future__ import annotations

from core.inputs import InputError
from core.weights import zoo


def model_choices() -> list[tuple[str, str]]:
    """(label, name) for every model that can load here."""
    return [(f"{name} — {zoo.SPECS[name].title}", name) for name, problem in zoo.available().items() if problem is None]


def unavailable_note() -> str:
    missing = [f"- **{name}**: {problem}" for name, problem in zoo.available().items() if problem]
    return ("Not available here:\n" + "\n".join(missing)) if missing else ""


def get_model(name, device: str | None = None, weights: str = "fp32"):
    if not name:
        raise InputError("Choose a model first.")
    return zoo.load(name, device, weights)


def as_text(value) -> str:
    """What a text box sent, as a string (an API client may send None or a number)."""
    return "" if value is None else str(value)


def join_notes(*notes: str) -> str:
    return " ".join(n for n in notes if n)
