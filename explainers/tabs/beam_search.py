"""Beam search tab: the tree of every hypothesis a beam search kept, finished or pruned, beside greedy and a sample."""
from __future__ import annotations

import math

import gradio as gr
import plotly.graph_objects as go

from core.inference.beam import EARLY_STOPPING, BeamSearch, beam_search, path
from core.inference.generation import Generation, generate
from core.inference.sampling import SamplingSettings
from core.inputs import InputError, number, text_to_tokens
from core.weights.tokenizers import end_of_text
from explainers.draw.figures import SAFE_COLOURS, figure, piece
from explainers.draw.widgets import code_panel
from explainers.page.inputs import get_model, join_notes
from explainers.page.jobs import Job, Jobs
from explainers.page.tab import View

TITLE = "Beam search"
INTRO = r"""### Beam search: keep several drafts, not one
Greedy decoding takes the most likely token at every step and can walk past a better text whose first token
looked worse. **Beam search** keeps the **B** best partial texts (the *beams*). At each step every beam is
extended by every token, scored by its summed log-probability, and the best 2B candidates are looked at: one that
ends the text is a finished **hypothesis**, the best B others go on (one forward pass for all B beams; the KV cache
rows are copied from the beams they grew from). Finished hypotheses are ranked by

$$\text{score} = \frac{\sum_t \log p(x_t \mid x_{<t})}{\text{length}^{\alpha}}$$

where the **length penalty** α > 0 favours longer texts and α < 0 shorter ones. This is the search
`transformers.generate(num_beams=B)` runs, number for number."""

MAX_WIDTH, MAX_NEW = 8, 24
FATES = {"kept": ("goes on", SAFE_COLOURS[0]), "finished": ("finished", SAFE_COLOURS[2]),
         "pruned": ("pruned", "#9ca3af")}


def _clip(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def tree_figure(search: BeamSearch, tokenizer) -> go.Figure:
    """Steps left to right, each step's candidates top (best) to bottom; a line from each to the beam it extends.
    The finished hypotheses' paths are drawn bold, the best one in orange."""
    final = {(h.step, h.node): rank for rank, h in enumerate(search.finished)}
    bold = {}
    for rank, h in reversed(list(enumerate(search.finished))):
        for a, b in zip([None, *path(search, h.step, h.node)], path(search, h.step, h.node)):
            bold[(a, b)] = rank
    edges: dict[str, dict] = {}
    for s, cands in enumerate(search.steps):
        for i, c in enumerate(cands):
            parent = (s - 1, search.kept[s - 1][c.parent]) if s else None
            rank = bold.get((parent, (s, i)))
            kind = "best" if rank == 0 else "final" if rank is not None else c.fate
            line = edges.setdefault(kind, dict(x=[], y=[]))
            line["x"] += [s - 1 if s else -1, s, None]
            line["y"] += [parent[1] if parent else 0, i, None]
    styles = {"best": ("#D55E00", 4), "final": (SAFE_COLOURS[2], 3), "kept": (SAFE_COLOURS[0], 1.5),
              "finished": (SAFE_COLOURS[2], 1), "pruned": ("#d1d5db", 1)}
    traces = [dict(type="scatter", mode="lines", x=e["x"], y=e["y"], hoverinfo="skip", showlegend=False,
                   line=dict(color=styles[k][0], width=styles[k][1])) for k, e in edges.items()]
    for fate, (label, colour) in FATES.items():
        nodes = [(s, i, c) for s, cands in enumerate(search.steps) for i, c in enumerate(cands) if c.fate == fate]
        traces.append(dict(
            type="scatter", mode="markers+text" if fate != "pruned" else "markers", name=label,
            x=[s for s, _, _ in nodes], y=[i for _, i, _ in nodes],
            text=[_clip(piece(tokenizer, c.token)) for *_, c in nodes],
            textposition="middle right", textfont=dict(size=11),
            marker=dict(size=[14 if (s, i) in final else 9 for s, i, _ in nodes], color=colour,
                        symbol=["star" if (s, i) in final else "circle" for s, i, _ in nodes]),
            customdata=[[piece(tokenizer, c.token), c.logprob, f"#{final[(s, i)] + 1}" if (s, i) in final else "-"]
                        for s, i, c in nodes],
            hovertemplate="step %{x}: %{customdata[0]}<br>summed log p %{customdata[1]:.3f}<br>final rank "
                          "%{customdata[2]}<extra></extra>"))
    traces.append(dict(type="scatter", mode="markers+text", x=[-1], y=[0], text=["prompt"], textposition="middle left",
                       marker=dict(size=12, color="#111827"), showlegend=False, hoverinfo="skip"))
    rows = max(len(c) for c in search.steps)
    return figure(traces, title=dict(text=f"Beam search, width {search.width}: every candidate each step looked at"
                                          "<br><sub>stars: the finished hypotheses; bold: their paths, the best in "
                                          "orange</sub>"),
                  xaxis=dict(title=dict(text="step (new token)"), range=[-1.6, len(search.steps) + 0.2], dtick=1,
                             zeroline=False),
                  yaxis=dict(title=dict(text="rank at that step (0 = best log p)"),
                             autorange="reversed", dtick=1, zeroline=False),
                  legend=dict(orientation="h", y=-0.15), height=max(380, 150 + 28 * rows), plot_bgcolor="#ffffff",
                  margin=dict(b=60, t=80))


def ranked_rows(search: BeamSearch, tokenizer) -> list[list]:
    """The finished hypotheses, best first: rank, text, tokens, summed log-probability, score."""
    return [[rank + 1, tokenizer.decode(h.ids), len(h.ids), round(h.logprob, 4), round(h.score, 4)]
            for rank, h in enumerate(search.finished)]


def summed_logp(g: Generation) -> float:
    """The summed log-probability the model gave a generation's tokens (before any sampling filter)."""
    return sum(math.log(p) for p in g.probs)


def comparison_rows(search: BeamSearch, greedy: Generation, sampled: Generation, seed: int, tokenizer) -> list[list]:
    """Best beam, greedy and a seeded sample of the same length limit: their texts and summed log-probabilities."""
    best, logp = search.finished[0], summed_logp
    return [[f"beam search (width {search.width}), best", tokenizer.decode(best.ids), len(best.ids), round(best.logprob, 4)],
            ["greedy (always the most likely token)", tokenizer.decode(greedy.new_ids), len(greedy.new_ids),
             round(logp(greedy), 4)],
            [f"sampled at temperature 1, seed {seed}", tokenizer.decode(sampled.new_ids), len(sampled.new_ids),
             round(logp(sampled), 4)]]


def check(model_name: str, text: str, width, n_new, length_penalty, early_stopping, seed):
    """The model, the prompt's ids and the settings, checked; InputError names the one that is wrong."""
    model = get_model(model_name)
    if not model.cfg.causal or model.unembed is None:
        raise InputError(f"Beam search continues a text token by token, so it needs a decoder such as smollm2-135m, "
                         f"tiny-gpt-char or tiny-moe; {model_name} is an encoder.")
    width = number("beam width", width, 1, MAX_WIDTH)
    n_new = number("number of new tokens", n_new, 1, MAX_NEW)
    length_penalty = number("length penalty", length_penalty, -3, 3, whole=False)
    if early_stopping not in EARLY_STOPPING:
        raise InputError(f"Early stopping must be one of {', '.join(EARLY_STOPPING)}; got {early_stopping!r}.")
    seed = number("seed", seed, 0, 2**31 - 1)
    tokens, notice = text_to_tokens(model, text, limit=model.cfg.n_ctx - n_new, keep="last")
    return model, [t.id for t in tokens], width, n_new, length_penalty, EARLY_STOPPING[early_stopping], seed, notice


def update(model_name: str, text: str, width, n_new, length_penalty, early_stopping, seed, job: Job):
    """A long job: the beam search (Cancel stops it between steps), then greedy and a seeded sample from the same
    prompt: the tree, the ranking, the comparison."""
    model, ids, width, n_new, length_penalty, early, seed, notice = check(model_name, text, width, n_new,
                                                                          length_penalty, early_stopping, seed)
    tokenizer, eos = model.tokenizer, end_of_text(model.tokenizer)
    yield gr.skip(), gr.skip(), gr.skip(), f"Searching with {width} beam{'s' if width > 1 else ''}…"
    search = beam_search(model, ids, width, n_new, length_penalty, early, eos, should_stop=job.should_stop)
    if job.should_stop():
        yield gr.skip(), gr.skip(), gr.skip(), job.why(f"after {len(search.steps)} of {n_new} steps")
        return
    greedy = generate(model, ids, n_new, stop_ids=eos)
    sampled = generate(model, ids, n_new, settings=SamplingSettings(1.0, 0, 1.0), seed=seed, stop_ids=eos)
    best, greedy_logp = search.finished[0], summed_logp(greedy)
    ends = f"an end-of-text token (id {min(eos)}) or " if eos else ""
    note = (f"Searched {len(search.steps)} steps with {width} beam{'s' if width > 1 else ''}, looking at "
            f"{sum(len(c) for c in search.steps)} candidates; it stopped because {search.stopped}. A hypothesis ends at "
            f"{ends}the limit of {n_new} new tokens. The best beam's summed log-probability is "
            f"**{best.logprob:.3f}**, greedy's **{greedy_logp:.3f}**" + (
                " (the same text)." if best.ids == greedy.new_ids else
                " (beam search found a more likely text)." if best.logprob > greedy_logp else
                " (greedy's is higher: beam search ranks by score, which divides by the length)."))
    yield (tree_figure(search, tokenizer), ranked_rows(search, tokenizer),
           comparison_rows(search, greedy, sampled, seed, tokenizer), join_notes(note, notice))


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Prompt", value="The meaning of life is")
    with gr.Row():
        width = gr.Slider(1, MAX_WIDTH, value=3, step=1, label="Beam width B")
        n_new = gr.Slider(1, MAX_NEW, value=8, step=1, label="New tokens (at most)")
        length_penalty = gr.Slider(-2, 3, value=1.0, step=0.1, label="Length penalty α")
        early = gr.Radio(list(EARLY_STOPPING), value="False", label="Early stopping")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed of the sample")
    with gr.Row():
        button = gr.Button("Search", variant="primary")
        cancel = gr.Button("Cancel")
    note = gr.Markdown()
    tree = gr.Plot()
    ranked = gr.Dataframe(headers=["rank", "text", "tokens", "summed log p", "score = log p / length^α"],
                          interactive=False, wrap=True)
    gr.Markdown("### Beside greedy decoding and a sample\nThe same prompt and length limit, decoded three ways.")
    compared = gr.Dataframe(headers=["decoding", "text", "tokens", "summed log p"], interactive=False, wrap=True)
    ex = gr.Examples([["The meaning of life is", 3, 8], ["Once upon a time", 4, 12]], [text, width, n_new])
    code_panel(beam_search, path)
    inputs = [page.model, text, width, n_new, length_penalty, early, seed]
    outputs = [tree, ranked, compared, note]
    jobs = Jobs(page, cancel, "generate")
    jobs.on([button.click, text.submit, width.release, n_new.release, length_penalty.release, early.input,
             seed.submit, ex.load_input_event], update, inputs, outputs, "beam_search", note=note)
    return View(links=dict(text=text, width=width, n=n_new, length_penalty=length_penalty, early_stopping=early,
                           seed=seed), draws=[jobs.event(update, inputs, outputs)])
