"""Tokenizers with a view for learners: ids, readable pieces and character spans.

CharTokenizer and WordTokenizer are the tutorials' pedagogical tokenizers (the tiny
models use them); HFTokenizer wraps a `transformers` tokenizer (byte-level BPE,
WordPiece, SentencePiece). All three answer `tokens(text)` with one Token per id.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


@dataclass
class Token:
    id: int
    piece: str          # readable: spaces shown as ␣, bytes that are not whole characters as <F0 9F>
    start: int          # character span of the input this token came from
    end: int
    special: bool = False
    unknown: bool = False


def visible(text: str) -> str:
    return "".join(VISIBLE.get(ch, ch) for ch in text)


class CharTokenizer:
    """One id per character of a fixed alphabet; characters outside it become `unk`."""

    kind = "character"

    def __init__(self, chars: list[str], unk: str = "?"):
        self.chars, self.unk = chars, unk
        self.index = {ch: i for i, ch in enumerate(chars)}
        self.special_ids: set[int] = set()

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(ch, self.index[self.unk]) for ch in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def readable(self, token_id: int) -> str:
        return visible(self.chars[token_id])

    def tokens(self, text: str) -> list[Token]:
        return [Token(self.index.get(ch, self.index[self.unk]), visible(ch), i, i + 1, unknown=ch not in self.index)
                for i, ch in enumerate(text)]

    def to_json(self) -> str:
        return json.dumps({"type": "char", "chars": self.chars, "unk": self.unk})


class WordTokenizer:
    """Lower-cased words and punctuation marks; the first ids are special tokens."""

    kind = "word"
    SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    PATTERN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")
    TYPED = re.compile(r"\[(?:PAD|UNK|CLS|SEP|MASK)\]|[a-z0-9']+|[^\sa-z0-9']", re.IGNORECASE)  # "[MASK]" typed

    def __init__(self, words: list[str]):
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.special_ids = {self.index[s] for s in self.SPECIALS}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.index[s] for s in self.SPECIALS)

    @classmethod
    def build(cls, text: str, max_words: int) -> WordTokenizer:
        counts: dict[str, int] = {}
        for w in cls.PATTERN.findall(text.lower()):
            counts[w] = counts.get(w, 0) + 1
        common = sorted(counts, key=lambda w: (-counts[w], w))[: max_words - len(cls.SPECIALS)]
        return cls(cls.SPECIALS + common)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [t.id for t in self.tokens(text)]

    def decode(self, ids) -> str:
        return " ".join(self.words[i] for i in ids)

    def readable(self, token_id: int) -> str:
        return self.words[token_id]

    def tokens(self, text: str) -> list[Token]:
        out = []
        for m in self.TYPED.finditer(text.lower()):
            word = m.group().upper() if m.group().startswith("[") and len(m.group()) > 1 else m.group()
            i = self.index.get(word, self.unk_id)
            out.append(Token(i, self.words[i] if i != self.unk_id else word, m.start(), m.end(),
                             special=i in self.special_ids and i != self.unk_id, unknown=i == self.unk_id))
        return out

    def to_json(self) -> str:
        return json.dumps({"type": "word", "words": self.words})


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE writes each byte as a printable character; this undoes that."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def readable_bytes(piece: str) -> str:
    """A byte-level BPE piece as text; bytes that are only part of a character shown as <F0 9F>."""
    data = bytes(_byte_decoder().get(ch, 63) for ch in piece)
    try:
        return visible(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "<" + " ".join(f"{b:02X}" for b in data) + ">"


class HFTokenizer:
    """A `transformers` fast tokenizer, with pieces made readable."""

    def __init__(self, hf_tokenizer, add_special_tokens: bool = True):
        self.hf, self.add_special_tokens = hf_tokenizer, add_special_tokens
        vocab = hf_tokenizer.get_vocab()
        self.byte_level = "Ġ" in vocab
        self.kind = "byte-level BPE" if self.byte_level else ("WordPiece" if "##s" in vocab else "SentencePiece")
        self.special_ids = set(hf_tokenizer.all_special_ids)
        # SmolLM2 names <|endoftext|> as its unk token too; only a dedicated [UNK] marks unknown input
        unk = hf_tokenizer.unk_token
        dedicated = unk and unk not in (hf_tokenizer.eos_token, hf_tokenizer.bos_token)
        self.unk_id = hf_tokenizer.unk_token_id if dedicated else None

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def readable(self, token_id: int) -> str:
        raw = self.hf.convert_ids_to_tokens(token_id)
        if token_id in self.special_ids or not self.byte_level:
            return visible(raw.replace("▁", " "))
        return readable_bytes(raw)

    def tokens(self, text: str, add_special_tokens: bool | None = None) -> list[Token]:
        """One Token per id; add_special_tokens=False reads a text that already has its own (a chat template's)."""
        add = self.add_special_tokens if add_special_tokens is None else add_special_tokens
        enc = self.hf(text, add_special_tokens=add, return_offsets_mapping=True)
        return [Token(i, self.readable(i), s, e, special=i in self.special_ids, unknown=i == self.unk_id)
                for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])]


def load_simple(text: str):
    """CharTokenizer or WordTokenizer from its to_json() text."""
    data = json.loads(text)
    return CharTokenizer(data["chars"], data["unk"]) if data["type"] == "char" else WordTokenizer(data["words"])


@lru_cache(maxsize=16)
def train_bpe(text: str, vocab_size: int):
    """A byte-level BPE learned on text: start from the 256 bytes, merge the most frequent pair, repeat.

    Returns (tokenizer, merges): merges[i] is the (left, right) pair learned i-th.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(tok.to_str())["model"]["merges"]]
    return tok, merges


def bpe_tokens(tok, text: str) -> list[Token]:
    """Tokens of a `tokenizers` byte-level BPE, with readable pieces."""
    enc = tok.encode(text)
    return [Token(i, readable_bytes(piece), s, e) for i, piece, (s, e) in zip(enc.ids, enc.tokens, enc.offsets)]


def end_of_text(tokenizer) -> set[int]:
    """The token ids that end a text (a generation stops there): the tokenizer's end-of-sequence token, if it has
    one (the project's character and word tokenizers have none)."""
    hf = getattr(tokenizer, "hf", None)
    eos = getattr(hf, "eos_token_id", None)
    return set() if eos is None else {int(eos)}
