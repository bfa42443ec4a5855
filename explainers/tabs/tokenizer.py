"""Tokenizer tab: the same text through every tokenizer, and how BPE learns its merges."""
from __future__ import annotations

import html

import gradio as gr

from core.inputs import InputError, clean_text, number
from core.learning.data import CORPUS
from core.weights.tokenizers import bpe_tokens, train_bpe
from explainers.draw.figures import chips_html
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model, model_choices
from explainers.page.tab import View

TITLE = "Tokenizer"
INTRO = """### Tokens: the units a model reads
A model never sees characters or words, only **token ids**: integers that index rows of its
embedding matrix. A tokenizer cuts text into pieces from a fixed vocabulary. Character-level
tokenizers need few ids but long sequences; word-level ones are short but meet unknown words;
**byte-pair encoding (BPE)** starts from the 256 bytes and repeatedly merges the most frequent
adjacent pair, so common words become one token and anything else still splits into bytes.
`␣` marks a space, `↵` a newline, `<F0 9F>` bytes that are only part of a character."""

EXAMPLES = [["The cat sat on the mat."], ["summarization"], ["rand_xyz"], ["Your journey starts with one step"],
            ["naïve café 👩‍👩‍👧 日本語 مرحبا"], ["def add(a, b):\n    return a + b"]]
BPE_TEXT_CHARS = 200_000   # BPE trains on the first 200k characters of the corpus (under a second)
BPE_LADDER = [256, 300, 500, 1000, 2000]
BPE_INPUT_CHARS = 500      # the ladder shows the text once per vocabulary size


def compute_tokenization(tokenizer, text: str) -> dict:
    tokens = tokenizer.tokens(text)
    decoded = tokenizer.decode([t.id for t in tokens])
    return {"tokens": tokens, "count": len(tokens), "chars_per_token": len(text) / max(1, len(tokens)),
            "round_trip": decoded == text, "decoded": decoded, "unknown": sum(t.unknown for t in tokens),
            "kind": getattr(tokenizer, "kind", "")}


def tokenization_html(name: str, result: dict) -> str:
    trip = "✓ decodes back to the input" if result["round_trip"] else \
        f"✗ decodes to <code>{html.escape(result['decoded'][:200])}</code>"
    unknown = f" · <b style='color:#dc2626'>{result['unknown']} unknown</b>" if result["unknown"] else ""
    return (f"<h4 style='margin:12px 0 2px'>{html.escape(name)} <small>({result['kind']})</small></h4>"
            f"<div>{result['count']} tokens · {result['chars_per_token']:.2f} characters per token{unknown} · {trip}</div>"
            + chips_html(result["tokens"]))


def update(text: str, names: list[str]):
    text, notice = clean_text(text)
    if not names:
        raise InputError("Tick at least one tokenizer.")
    parts = [tokenization_html(name, compute_tokenization(get_model(name).tokenizer, text)) for name in names]
    return (f"<p><i>{html.escape(notice)}</i></p>" if notice else "") + "".join(parts)


def compute_bpe(text: str, vocab_size: int) -> dict:
    """Merges learned for vocab_size, and the text's tokens at each size of the ladder."""
    corpus = CORPUS.read_text()[:BPE_TEXT_CHARS]
    _, merges = train_bpe(corpus, vocab_size)
    ladder = sorted(set(BPE_LADDER + [vocab_size]))
    return {"merges": merges, "segmentations": {n: bpe_tokens(train_bpe(corpus, n)[0], text) for n in ladder}}


def update_bpe(text: str, vocab_size):
    text, notice = clean_text(text, max_chars=BPE_INPUT_CHARS)
    vocab_size = number("vocabulary size", vocab_size, 256, 5000)  # 256: the bytes alone, no merge yet
    result = compute_bpe(text, vocab_size)
    rows = [[i + 1, a.replace("Ġ", "␣"), b.replace("Ġ", "␣"), (a + b).replace("Ġ", "␣")]
            for i, (a, b) in enumerate(result["merges"][:40])]
    ladder = "".join(f"<div><b>{n} tokens in the vocabulary</b> ({n - 256} merges): {len(toks)} tokens"
                     f"{chips_html(toks, show_ids=False)}</div>" for n, toks in result["segmentations"].items())
    summary = f"{len(result['merges'])} merges learned; the first {len(rows)} are listed." + (f" {notice}" if notice else "")
    return rows, ladder, summary


def build(page) -> View:
    names = [name for _, name in model_choices()]
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value=EXAMPLES[0][0], lines=2,
                      info="Shift+Enter runs it; Enter starts a new line.")
    chosen = gr.CheckboxGroup(names, value=names, label="Tokenizers")
    out = gr.HTML()
    ex = gr.Examples(EXAMPLES, [text])
    gr.Markdown("### How BPE learns its vocabulary\nTrained live on Shakespeare (the first 200,000 characters) "
                "with the `tokenizers` library. Slide the vocabulary size and watch words fuse into tokens.")
    vocab = gr.Slider(256, 5000, value=500, step=1, label="BPE vocabulary size (256 bytes + merges)")
    summary = gr.Markdown()
    with gr.Row():
        merges = gr.Dataframe(headers=["#", "left", "right", "merged"], label="First merges", interactive=False)
        ladder = gr.HTML()
    code_panel(bpe_tokens, train_bpe)
    bpe_outputs = [merges, ladder, summary]
    # the BPE panel follows a new text only once its tokens are shown: an empty text gets one message, not two
    bpe = page.event(update_bpe, [text, vocab], bpe_outputs)
    page.on([text.submit, ex.load_input_event], update, [text, chosen], out, then=[bpe])
    page.on([chosen.change], update, [text, chosen], out, api="tokenize")
    page.on([vocab.release], update_bpe, [text, vocab], bpe_outputs, api="bpe")
    return View(links=dict(text=text, tokenizers=chosen, vocab=vocab),
                draws=[page.event(update, [text, chosen], out), bpe])
