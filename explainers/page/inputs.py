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


def clamp_setting(name: str, value, low: int, high: int) -> tuple[int, str]:
    """(value as an int within [low, high], a notice if it had to move). Non-numbers are refused."""
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # None, text, NaN, infinity
        raise InputError(f"The {name} must be a number between {low} and {high}.") from None
    clamped = min(max(number, low), high)
    if clamped == number:
        return clamped, ""
    return clamped, f"The {name} was {number}; this model allows {low} to {high}, so {clamped} is shown."


def as_text(value) -> str:
    """What a text box sent, as a string (an API client may send None or a number)."""
    return "" if value is None else str(value)


def join_notes(*notes: str) -> str:
    return " ".join(n for n in notes if n)
