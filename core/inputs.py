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
