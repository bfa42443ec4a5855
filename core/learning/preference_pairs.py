"""The preference pairs the DPO tab learns from: `python -m core.learning.preference_pairs` writes
assets/data/preference_pairs.json (seeded: the same file every time).

The rater we stand in for prefers the gentler line. Every pair is two real lines of the Shakespeare corpus that
open with the same word: the prompt is that word, and the two responses are the rest of each line.

    chosen     speaks of love, sweetness, joy, heaven, peace ...    ("And" + " with no less nobility of love")
    rejected   speaks of death, blood, fear, the grave, poison ...  ("And" + " with thy bloody and invisible hand")

A line counts as gentle if it has a GENTLE word and no GRIM word, and grim the other way round. Both responses are
text the model already knows how to write, so the run only has to move its preference between them, as RLHF moves
a model that can already write. The DPO paper's first experiment is the same kind of preference (positive film
reviews over negative ones, rated by a sentiment classifier instead of people).

The held-out pairs are lines no training pair uses; the sample prompts open lines of the corpus's last tenth
(which tiny-gpt-char never trained on) that are neither gentle nor grim.
"""
from __future__ import annotations

import functools
import json
import random
import re
from collections import defaultdict

from core.paths import ASSETS, CORPUS, DATA

PAIRS = DATA / "preference_pairs.json"
GENTLE = frozenset({
    "love", "loves", "loved", "lov'd", "loving", "lovely", "sweet", "sweetest", "joy", "joys", "fair", "fairest",
    "gentle", "happy", "merry", "heaven", "heavens", "grace", "gracious", "hope", "peace", "dear", "dearest",
    "kind", "smile", "smiles", "bless", "blessed", "blessing", "music", "delight", "beauty", "beauteous"
})
GRIM = frozenset({
    "death", "dead", "die", "dies", "died", "dying", "blood", "bloody", "kill", "kill'd", "killed", "murder",
    "murder'd", "murderous", "grave", "graves", "hell", "poison", "sword", "swords", "woe", "dagger", "daggers",
    "slain", "slay", "tomb", "curse", "cursed", "hate", "hateful", "fear", "fears", "tears", "weep", "grief"
})
TRAIN_PAIRS, HELDOUT_PAIRS, SAMPLE_PROMPTS = 640, 96, 8
SEED = 0


def words(line: str) -> set[str]:
    return set(re.findall(r"[a-z']+", line.lower()))


def mood(line: str) -> str | None:
    """'gentle', 'grim', or None for a line with neither kind of word, or both."""
    w = words(line)
    gentle, grim = bool(w & GENTLE), bool(w & GRIM)
    return "gentle" if gentle and not grim else "grim" if grim and not gentle else None


def verse_lines(text: str, alphabet: set[str]) -> list[str]:
    """Lines of speech 25 to 70 characters long, in the model's alphabet: no stage directions or speaker names."""
    lines = (line.strip() for line in text.split("\n"))
    return [line for line in lines if 25 <= len(line) <= 70 and line[0].isupper() and not line.isupper()
            and not line.startswith("[") and " " in line and set(line) <= alphabet]


def split_line(line: str) -> tuple[str, str]:
    """'And with thy bloody hand' -> ('And', ' with thy bloody hand\n'): the prompt and the response."""
    first, rest = line.split(" ", 1)
    return first, f" {rest}\n"


def make_pairs(text: str, alphabet: set[str], seed: int = SEED) -> dict:
    """Pairs of a gentle and a grim line that open with the same word, each line used once, shuffled with the seed;
    the first HELDOUT_PAIRS are held out, the next TRAIN_PAIRS train."""
    rng = random.Random(seed)
    by_opening = defaultdict(lambda: {"gentle": [], "grim": []})
    for line in dict.fromkeys(verse_lines(text, alphabet)):       # each distinct line once, in corpus order
        if mood(line):
            by_opening[line.split(" ", 1)[0]][mood(line)].append(line)
    pairs = []
    for kinds in by_opening.values():
        gentle, grim = rng.sample(kinds["gentle"], len(kinds["gentle"])), rng.sample(kinds["grim"], len(kinds["grim"]))
        for good, bad in zip(gentle, grim):
            prompt, chosen = split_line(good)
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": split_line(bad)[1]})
    rng.shuffle(pairs)
    if len(pairs) < HELDOUT_PAIRS + TRAIN_PAIRS:
        raise ValueError(f"only {len(pairs)} pairs in the corpus")
    tail = text[int(len(text) * 0.9):]                                # the part tiny-gpt-char never trained on
    used = {p["prompt"] + p[k].rstrip("\n") for p in pairs for k in ("chosen", "rejected")}
    neutral = [line for line in verse_lines(tail, alphabet) if mood(line) is None and line not in used]
    openings = list(dict.fromkeys(" ".join(line.split()[:2]) + " " for line in neutral))  # the model writes on
    return {"preference": "the gentler line: chosen responses speak of love, joy, heaven, peace; rejected ones of "
                          "death, blood, fear, the grave",
            "gentle_words": sorted(GENTLE), "grim_words": sorted(GRIM),
            "heldout": pairs[:HELDOUT_PAIRS], "train": pairs[HELDOUT_PAIRS:HELDOUT_PAIRS + TRAIN_PAIRS],
            "sample_prompts": rng.sample(openings, SAMPLE_PROMPTS)}


@functools.cache
def load_pairs() -> dict:
    """The shipped pairs, read once: treat as read-only."""
    return json.loads(PAIRS.read_text())


def main() -> None:
    alphabet = set(json.loads((ASSETS / "tiny-gpt-char" / "tokenizer.json").read_text())["chars"])
    data = make_pairs(CORPUS.read_text(), alphabet)
    PAIRS.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")
    print(f"{len(data['train'])} training pairs, {len(data['heldout'])} held-out pairs, "
          f"{len(data['sample_prompts'])} sample prompts -> {PAIRS}")


if __name__ == "__main__":
    main()
