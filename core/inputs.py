"""Bad input, recognised where it is met: text a model cannot read, settings it cannot use.

`InputError` is the one exception that means "the user asked for something that cannot be
done"; its message is a plain sentence for them. Anything else raised is a bug.
"""
from __future__ import annotations

import unicodedata

MAX_CHARS = 2000  # longer texts are cut here, with a notice: no figure can show more, and tokenizing stays quick


class InputError(ValueError):
    """Bad input; the message is a sentence the user can act on."""


def strip_controls(text: str) -> str:
    """Without control characters (NUL and friends carry no meaning to a tokenizer and break some); newlines
    and tabs stay."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def clean_text(text, max_chars: int = MAX_CHARS) -> tuple[str, str]:
    """(text fit for a model, a notice for the user or ''). Raises InputError when nothing is left."""
    if text is None or not str(text).strip():
        raise InputError("Type some text first: the input is empty.")
    text = str(text)
    notices = []
    kept = strip_controls(text)
    if kept != text:
        notices.append(f"removed {len(text) - len(kept)} control character(s)")
    if len(kept) > max_chars:
        notices.append(f"used the first {max_chars} of {len(kept)} characters")
        kept = kept[:max_chars]
    if not kept.strip():
        raise InputError("The input has only control characters; type some text.")
    return kept, ("Note: " + "; ".join(notices) + ".") if notices else ""


def text_to_tokens(model, text, limit: int | None = None, keep: str = "first") -> tuple[list, str]:
    """A text as the model's tokens (core.weights.tokenizers.Token), at most `limit` of them and never more than its
    context: the first ones, or the last ones (keep="last", where a prediction is read at the end).
    Returns (tokens, a notice of what was cleaned or cut, or '')."""
    text, notice = clean_text(text)
    tokens = model.tokenizer.tokens(text)
    if not tokens:
        raise InputError("The model's tokenizer found no tokens in this text; try some words.")
    limit = min(limit or model.cfg.n_ctx, model.cfg.n_ctx)
    if len(tokens) > limit:
        cut = f"Showing the {keep} {limit} of {len(tokens)} tokens"
        notice = " ".join(n for n in (notice, cut + (" (the model's context)." if limit == model.cfg.n_ctx else ".")) if n)
        tokens = tokens[:limit] if keep == "first" else tokens[-limit:]
    return tokens, notice


def number(name: str, value, low: float, high: float, whole: bool = True) -> int | float:
    """A setting's value as a number from low to high (an int when whole), or InputError naming the setting and its
    range: the one check of every numeric setting a widget or an API client sends."""
    span = f"from {_plain(low)} to {_plain(high)}"
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):  # None, text, a list
        raise InputError(f"The {name} must be a {'whole ' if whole else ''}number {span}.") from None
    if not low <= x <= high:  # NaN fails too
        raise InputError(f"The {name} must be {span}; {value!r} is outside that range.")
    if whole and x != int(x):
        raise InputError(f"The {name} must be a whole number {span}; got {value!r}.")
    return int(x) if whole else x


def _plain(x: float) -> str:
    """1000000 as "1000000" (not 1e+06), 0.0001 as "0.0001"."""
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"


def fitted(name: str, value, low: int, high: int, allowed: str = "") -> tuple[int, str]:
    """A whole-number setting whose range depends on the model or the text (a layer, a head, a position), moved
    into it with a note when it is outside (a link made for a bigger model, a slider left where another model or a
    longer text put it): (value, note or ''). `allowed` says where the range comes from ("minilm-l6 has 6 layers,
    0 to 5"). Not a number at all is refused, as `number` refuses it."""
    try:
        asked = int(float(value))
    except (TypeError, ValueError, OverflowError):  # None, text, NaN, infinity
        raise InputError(f"The {name} must be a whole number from {low} to {high}.") from None
    kept = min(max(asked, low), high)
    if kept == asked:
        return kept, ""
    return kept, f"The {name} was {asked}; {allowed or f'this model allows {low} to {high}'}, so {kept} is shown."
