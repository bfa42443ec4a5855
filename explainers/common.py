"""Shared by all tabs: the model picker, bad-input handling and figure styling."""
from __future__ import annotations

import functools
import logging
import unicodedata

import gradio as gr

from core import zoo

log = logging.getLogger("explainer")
MAX_CHARS = 2000


def model_choices() -> list[tuple[str, str]]:
    """(label, name) for every model that can load here."""
    return [(f"{name} — {zoo.SPECS[name].title}", name) for name, problem in zoo.available().items() if problem is None]


def unavailable_note() -> str:
    missing = [f"- **{name}**: {problem}" for name, problem in zoo.available().items() if problem]
    return ("Not available here:\n" + "\n".join(missing)) if missing else ""


def get_model(name: str, device: str | None = None):
    if not name:
        raise gr.Error("Choose a model first.")
    try:
        return zoo.load(name, device)
    except (zoo.MissingSource, KeyError, ValueError) as e:
        raise gr.Error(str(e).strip("'\"")) from None


def clean_text(text: str | None, max_chars: int = MAX_CHARS) -> tuple[str, str]:
    """(text fit for a model, a notice for the user or ''). Raises gr.Error when nothing is left."""
    if text is None or not str(text).strip():
        raise gr.Error("Type some text first: the input is empty.")
    text = str(text)
    notices = []
    # control characters (NUL and friends) carry no meaning to a tokenizer and break some; keep newlines and tabs
    kept = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    if kept != text:
        notices.append(f"removed {len(text) - len(kept)} control character(s)")
    if len(kept) > max_chars:
        notices.append(f"used the first {max_chars} of {len(kept)} characters")
        kept = kept[:max_chars]
    if not kept.strip():
        raise gr.Error("The input has only control characters; type some text.")
    return kept, ("Note: " + "; ".join(notices) + ".") if notices else ""


def friendly(fn):
    """Turn any failure in a handler into a plain message instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, KeyError, zoo.MissingSource) as e:
            raise gr.Error(str(e).strip("'\"")) from None
        except Exception as e:  # a bug: log it for us, say it plainly to the user
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}). Try a shorter input or another model.") from None
    return wrapper
