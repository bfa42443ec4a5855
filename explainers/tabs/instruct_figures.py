"""The Instruction tuning tab's figures: the templated prompt, the reply with its alternatives, the loss mask, the
curves and the answers before and after; plain functions of what core computed."""
from __future__ import annotations

import html

import plotly.graph_objects as go

from explainers.draw.figures import SAFE_COLOURS, figure

KIND_COLOURS = {"special": "#e5e7eb", "role": "#ddd6fe", "system": "#bfdbfe", "user": "#bbf7d0", "markup": "#f9fafb",
                "generation prompt": "#fed7aa"}
KIND_NAMES = {"special": "special token", "role": "role name", "system": "system prompt (the template adds it)",
              "user": "your instruction", "markup": "layout (new lines)",
              "generation prompt": "generation prompt: the reply begins after it"}
TIGHT = "display:inline-block;padding:1px 1px;border-right:1px solid #fff;font-family:monospace;color:#111;"
CHIP = ("display:inline-block;margin:2px;padding:2px 5px;border-radius:5px;font-family:monospace;color:#111;"
        "unicode-bidi:isolate;")


def chip(text: str, colour: str, title: str, extra: str = "") -> str:
    return (f"<span title='{html.escape(title)}' style='{CHIP}background:{colour};{extra}'>"
            f"{html.escape(text)}</span>")


def legend(names: dict[str, str]) -> str:
    return " ".join(chip(label, KIND_COLOURS[k], label) for k, label in names.items())


def template_html(tokens) -> str:
    """The templated prompt as chips coloured by role (core.learning.instruct.ChatToken), laid out as its text is
    (a new line after each newline token), with where the instruction ends and where the reply begins marked."""
    last_user = max((i for i, c in enumerate(tokens) if c.kind == "user"), default=-1)
    chips = []
    for i, c in enumerate(tokens):
        key = "generation prompt" if c.part == "generation prompt" else c.kind
        border = "border:1px dashed #6b7280;" if c.kind == "special" else ""
        title = f"id {c.token.id}: {KIND_NAMES[c.kind] if key != 'generation prompt' else key}, in the {c.part}"
        chips.append(chip(c.token.piece, KIND_COLOURS[key], title, border))
        if i == last_user:
            chips.append("<span style='color:#15803d;font-size:0.8em'>◂ your text ends</span>")
        if c.token.piece.endswith("↵"):
            chips.append("<br>")
    chips.append("<span style='color:#c2410c;font-weight:bold'>▸ the model's reply starts here</span>")
    n = len(tokens)
    return (f"<div><b>The prompt the model reads</b>: {n} tokens. {legend(KIND_NAMES)}"
            f"<div style='line-height:2.1;margin-top:6px'>{''.join(chips)}</div></div>")


def probability_colour(p: float) -> str:
    """White for 0 to full blue for 1: how sure the model was of the token it wrote."""
    return f"rgba(37, 99, 235, {0.08 + 0.6 * p:.2f})"


def reply_html(tokenizer, g) -> str:
    """The reply so far as chips shaded by the probability of each chosen token; hovering one shows that step's
    five likeliest tokens with their probabilities, and a table below lists them for every step."""
    if g is None or not g.new_ids:
        return ("<div style='color:#6b7280;padding:8px'><b>The reply</b>: press <b>Reply</b> and the model answers "
                "token by token. Hover a token to see the five tokens it found likeliest at that step.</div>")
    chips, rows = [], []
    for k, (token, p, top) in enumerate(zip(g.new_ids, g.probs, g.alternatives)):
        shown = [f"{tokenizer.readable(i)!r} {q:.1%}" for i, q in top]
        title = f"step {k + 1}: {tokenizer.readable(token)!r} had p = {p:.1%}. The five likeliest:\n" + "\n".join(shown)
        special = "border:1px dashed #6b7280;" if token in tokenizer.special_ids else ""
        chips.append(chip(tokenizer.readable(token), probability_colour(p), title, special))
        rows.append(f"<tr><td>{k + 1}</td><td><b>{html.escape(tokenizer.readable(token))}</b></td>"
                    + "".join(f"<td>{html.escape(s)}</td>" for s in shown) + "</tr>")
    table = ("<details><summary>Every step's five likeliest tokens, as a table</summary><table style='font-size:0.85em;"
             "font-family:monospace'><tr><th>step</th><th>written</th>" + "".join(f"<th>{r}</th>" for r in
                                                                                  ["1st", "2nd", "3rd", "4th", "5th"])
             + "</tr>" + "".join(rows) + "</table></details>")
    return (f"<div><b>The reply</b>, greedy (the likeliest token each step), {len(g.new_ids)} tokens; darker = the model "
            "was surer. Hover a token for its step's five likeliest tokens."
            f"<div style='line-height:2.1;margin-top:6px'>{''.join(chips)}</div>{table}</div>")


def mask_html(tokenizer, examples: list[tuple[list[int], list[int]]]) -> str:
    """Training examples token by token: the prompt grey (read, never scored), the response coloured (each of its
    tokens is a target the loss counts). Token j counts when the label at position j - 1 is not -100."""
    lines = []
    for inputs, labels in examples:
        ids = inputs + [labels[-1]]
        chips = []
        for j, i in enumerate(ids):
            counted = j > 0 and labels[j - 1] != -100
            title = (f"token {j}: counted, the model learns to predict it from the tokens before" if counted
                     else f"token {j}: part of the prompt, read but not scored (label -100)")
            colour = SAFE_COLOURS[4] + "66" if counted else "#f3f4f6"
            style = "font-weight:bold;" if counted else "color:#6b7280;"
            chips.append(f"<span title='{html.escape(title)}' style='{TIGHT}background:{colour};{style}'>"
                         f"{html.escape(tokenizer.readable(i))}</span>")
            if tokenizer.readable(i).endswith("↵"):
                chips.append("<br>")
        lines.append(f"<div style='line-height:1.9;padding:4px 8px;border:1px solid #e5e7eb;border-radius:6px'>"
                     f"{''.join(chips)}</div>")
    return ("<div><b>Which tokens the loss counts</b>: grey tokens are the prompt (read, not scored); coloured ones "
            "are the response and its end marker, the only targets. One training example of each task:"
            "<div style='display:flex;flex-wrap:wrap;gap:8px;margin-top:6px'>" + "".join(lines) + "</div></div>")


def curves_figure(train: list[tuple[int, float]], heldout: list[tuple[int, float]], steps: int) -> go.Figure:
    """Response loss per step: each training batch (thin), the held-out pairs (thick), and before training."""
    line = lambda points, **kw: dict(type="scatter", x=[s for s, _ in points], y=[v for _, v in points], **kw)
    before = heldout[0][1]
    traces = [line(train, mode="lines", name="training batch", line=dict(width=1, color=SAFE_COLOURS[0])),
              line(heldout, mode="lines+markers", name="held-out pairs", line=dict(width=3, color=SAFE_COLOURS[1])),
              line([(0, before), (steps, before)], mode="lines", name=f"held-out before training ({before:.2f})",
                   line=dict(dash="dash", color="#6b7280"))]
    top = max([before] + [v for _, v in train]) * 1.1
    return figure(traces, height=340, margin=dict(t=40), legend=dict(orientation="h", y=1.12),
                  xaxis=dict(title=dict(text="step"), range=[0, steps]),
                  yaxis=dict(title=dict(text="response loss (nats per token)"), range=[0, top]))


def short(text: str | None, most: int = 28) -> str:
    if text is None:
        return "…"
    text = text.replace("\n", " / ")
    return text if len(text) <= most else text[:most] + "…"


def answers_html(rows: list[tuple[dict, str, str | None]]) -> str:
    """Held-out instructions (never trained on), the expected response, and the model's greedy answer before and
    after fine-tuning; a right answer is green."""
    cell = lambda text, right: (f"<td style='font-family:monospace;background:{'#bbf7d0' if right else '#fff'}'>"
                                f"{html.escape(short(text))}</td>")
    body = "".join(f"<tr><td>{html.escape(short(p['instruction'], 60))}</td><td style='font-family:monospace'>"
                   f"{html.escape(p['response'])}</td>{cell(before, before == p['response'])}"
                   f"{cell(after, after == p['response'])}</tr>" for p, before, after in rows)
    right = lambda k: sum(r[k] == r[0]["response"] for r in rows)
    done = all(r[2] is not None for r in rows)
    score = f" Right: {right(1)} of {len(rows)} before" + (f", {right(2)} after." if done else ".")
    return ("<div><b>Held-out instructions</b> (never trained on), answered greedily." + score +
            "<table style='font-size:0.9em'><tr><th>instruction</th><th>expected</th><th>before</th>"
            f"<th>after</th></tr>{body}</table></div>")
