"""Embeddings tab: token vectors in 2D/3D, how context changes them, and how positions are encoded."""
from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch

from core.analysis.embeddings import cosine_by_layer, nearest_tokens, rope_scores, word_vectors
from core.analysis.projection import METHODS, outliers, project, umap_ready
from core.inputs import InputError, clean_text, fitted, text_to_tokens
from core.model.cache import ActivationCache
from core.model.positional import sinusoidal_table
from explainers.activations import run
from explainers.draw.figures import figure, label_spots, placeholder, scale
from explainers.draw.widgets import FittedSlider, code_panel, fit_layer
from explainers.page.inputs import as_text, get_model, join_notes
from explainers.page.tab import View

TITLE = "Embeddings"
INTRO = """### Embeddings: a vector for every token
The first layer of a model is a table with one learned row per token id. Tokens used in
similar ways end up with similar rows, which we can see by projecting the vectors to 2D or 3D
(**PCA** keeps the widest directions; **t-SNE** and **UMAP** keep neighbourhoods) and by
**cosine similarity** cos(a, b) = a·b / (|a||b|). Inside the model each position's vector is
then rewritten layer by layer using its context, so the same word gets different vectors."""

PRESETS = {
    "animals": "cat, dog, horse, cow, lion, tiger, bird, fish, mouse, wolf",
    "numbers": "one, two, three, four, five, six, seven, eight, nine, ten",
    "countries": "France, Germany, Italy, Spain, China, Japan, India, Brazil, Egypt, Canada",
    "verbs": "run, walk, jump, swim, eat, drink, sleep, write, read, sing",
}


def parse_groups(preset_names: list[str], custom: str) -> list[tuple[str, str]]:
    """[(word, group)] from the ticked presets and a comma-separated custom list."""
    pairs = [(w.strip(), name) for name in preset_names for w in PRESETS[name].split(",")]
    pairs += [(w.strip(), "typed") for w in (custom or "").split(",") if w.strip()]
    seen, out = set(), []
    for word, group in pairs:
        if word not in seen:
            seen.add(word)
            out.append((word, group))
    return out


def scatter_figure(points: np.ndarray, labels: list[str], groups: list[str], title: str) -> go.Figure:
    """The words as points, one trace per group. In 2D a label goes where it overlaps no other label or point
    (countries crowd together); a label with no free spot is left to the hover, and the title says how many."""
    spots = label_spots(points, labels) if points.shape[1] == 2 else [None] * len(labels)
    traces = []
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        xyz = points[idx]
        trace = dict(mode="markers+text", name=group, x=xyz[:, 0], y=xyz[:, 1], customdata=[labels[i] for i in idx],
                     hovertemplate="%{customdata}<extra>" + group + "</extra>")
        if points.shape[1] == 3:
            traces.append(dict(trace, type="scatter3d", z=xyz[:, 2], text=trace["customdata"], marker=dict(size=5)))
        else:
            traces.append(dict(trace, type="scatter", marker=dict(size=10), text=[labels[i] if spots[i] else ""
                                                                                 for i in idx],
                               textposition=[spots[i] or "top center" for i in idx]))
    hidden = sum(spot is None for spot in spots) if points.shape[1] == 2 else 0
    title += f"<br><sub>{hidden} label{'s' * (hidden > 1)} would overlap: hover to read</sub>" if hidden else ""
    return figure(traces, title=dict(text=title), height=520,
                  legend=dict(title=dict(text="group")))


def update_static(model_name: str, presets: list[str], custom: str, method: str, dims: str, neighbours, query: str,
                  progress=gr.Progress()):
    model = get_model(model_name)
    unknown = [p for p in presets or [] if p not in PRESETS]
    if unknown:
        raise InputError(f"There is no word group '{unknown[0]}'; choose among {', '.join(PRESETS)}.")
    pairs = parse_groups(presets or [], as_text(custom)[:2000])
    if len(pairs) < 3:
        raise InputError("Pick at least one preset group or type three or more comma-separated words.")
    neighbours, _ = fitted("neighbours", neighbours, 2, 50)
    if len(pairs) > 300:
        raise InputError("At most 300 words at once, please.")
    if method not in METHODS:
        raise InputError(f"Choose a projection among {', '.join(METHODS)}.")
    if method == "UMAP" and not umap_ready():
        progress(0, desc="UMAP is compiling its code the first time it runs (about 15 s)")
    words = [w for w, _ in pairs]
    with torch.no_grad():
        vectors, counts = word_vectors(model, words)
    labels = [w if n == 1 else f"{w} ({n} tokens)" for w, n in zip(words, counts)]
    points = project(vectors.numpy(), method, 3 if dims == "3D" else 2, neighbours)
    fig = scatter_figure(points, labels, [g for _, g in pairs], f"{model_name}: input embeddings, {method}")
    return fig, neighbours_table(model, query)


def neighbours_table(model, query: str) -> list[list]:
    query = as_text(query).strip()
    if not query:
        return []
    with torch.no_grad():
        vector, _ = word_vectors(model, [query[:100]])
        ids = {t.id for t in model.tokenizer.tokens(query[:100])} | {t.id for t in model.tokenizer.tokens(" " + query[:100])}
        near = nearest_tokens(model, vector[0], 10, exclude=ids)
    return [[model.tokenizer.readable(i), round(s, 3)] for i, s in near]


def contextual_figures(states: torch.Tensor, pieces: list[str], layer: int, pair: tuple[int, int] | None):
    """The hidden states of one layer in 2D (PCA), the cosine of two occurrences across layers, and a note. A token
    whose stream is far longer than the rest (the first token's massive activation) is left out of the PCA's fit
    and drawn at the edge, marked, so the others are not squeezed onto one line."""
    X = states[layer].float().numpy()
    far = outliers(X)
    fit_on = ~far if far.any() and (~far).sum() >= 3 else None
    points = project(X, "PCA", 2, fit_on=fit_on)
    labels, note = [f"{i}:{p}" for i, p in enumerate(pieces)], ""
    if fit_on is not None:
        lo, hi = points[fit_on].min(0), points[fit_on].max(0)
        edge = (hi - lo) * 0.15 + 1e-6
        points = np.clip(points, lo - edge, hi + edge)                  # the outliers pinned to the frame's edge
        lengths = np.linalg.norm(X, axis=-1)
        for i in np.flatnonzero(far):
            labels[i] += f" (‖x‖ = {lengths[i]:,.0f}, off the scale)"
        typical = float(np.median(lengths))
        named = ", ".join(f"{i}:{pieces[i]}" for i in np.flatnonzero(far))
        note = (f"{named}: {'its stream is' if far.sum() == 1 else 'their streams are up to'} "
                f"{lengths[far].max() / typical:,.0f} times longer than the typical token's ({typical:,.1f}). This is "
                "the *attention sink*: many heads park their attention on the first token, and the model gives its "
                "stream a few huge dimensions (massive activations). It is left out of the PCA and drawn at the edge, "
                "so the other tokens keep their spread.")
    fig = scatter_figure(points, labels, ["token"] * len(pieces),
                         f"layer {layer} ({'the embeddings' if layer == 0 else f'after block {layer - 1}'}), PCA")
    if fit_on is not None:  # a pinned point's long label reads inwards, not off the frame
        middle = points[:, 0].mean()
        fig.data[0].textposition = ["top center" if fit else "bottom right" if x < middle else "bottom left"
                                    for fit, x in zip(fit_on, points[:, 0])]
    if not pair:
        return fig, figure([]), note
    sims = cosine_by_layer(states, *pair)
    title = f"cosine similarity of<br>'{pieces[pair[0]]}' (#{pair[0]}) and '{pieces[pair[1]]}' (#{pair[1]})"
    line = figure([dict(type="scatter", x=list(range(len(sims))), y=sims, mode="lines+markers")], title=dict(text=title),
                  xaxis=dict(title=dict(text="layer (0 = embeddings)")), height=360, margin=dict(t=80),
                  yaxis=dict(title=dict(text="cosine"), range=[min(0, min(sims)) - 0.05, 1.05]))
    return fig, line, note


def occurrence_tokens(tokens, text: str, word: str) -> tuple[int, int] | None:
    """Indices of the tokens that end the first two occurrences of word (its last piece, for split words)."""
    lowered, target, ends, start = text.lower(), word.lower(), [], 0
    while target and len(ends) < 2 and (found := lowered.find(target, start)) >= 0:
        last_char = found + len(target) - 1
        hit = next((i for i, t in enumerate(tokens) if t.start <= last_char < t.end), None)
        if hit is not None:
            ends.append(hit)
        start = found + len(target)
    return (ends[0], ends[1]) if len(ends) == 2 and ends[0] != ends[1] else None


def update_contextual(model_name: str, text: str, layer, word: str):
    """The word's two vectors layer by layer, a note, then the layer slider fitted to the model."""
    model = get_model(model_name)
    tokens, notice = text_to_tokens(model, text)
    if len(tokens) < 3:
        raise InputError("Type a sentence of at least three tokens.")
    states = run(model_name, tuple(t.id for t in tokens)).cache.accumulated_resid()      # (L + 1, T, C)
    layer_fit = fit_layer(model, layer, embeddings=True)
    pieces = [t.piece for t in tokens]
    word = as_text(word).strip()
    pair = occurrence_tokens(tokens, clean_text(text)[0], word)  # token offsets are into the cleaned text
    missing = "" if pair or not word else f"'{word}' does not occur twice in the text."
    fig, line, sink = contextual_figures(states, pieces, layer_fit.value, pair)
    return fig, line, join_notes(notice, layer_fit.note, missing, sink), layer_fit.slider


def heatmap(z, title: str, x_title: str, y_title: str, colorscale="RdBu", zmid=0.0) -> go.Figure:
    return figure([dict(type="heatmap", z=z, colorscale=scale(colorscale), zmid=zmid)], title=dict(text=title),
                  xaxis=dict(title=dict(text=x_title)), yaxis=dict(title=dict(text=y_title)), height=380,
                  margin=dict(t=70))


def update_positional(model_name: str):
    model = get_model(model_name)
    cfg = model.cfg
    sinus = heatmap(sinusoidal_table(64, 128).T.numpy(), "sinusoidal table<br>PE[pos, 2i] = sin(pos / 10000^(2i/C))",
                    "position", "dimension")
    if cfg.positions == "learned":
        table = model.pos_embed.weight[: min(cfg.n_ctx, 128)].detach().cpu().T.numpy()
        learned = heatmap(table, f"{model_name}:<br>learned table, positions 0-{table.shape[1] - 1}",
                          "position", "dimension")
    else:  # short lines: the panel is a third of the page, or less beside the lesson
        how = {"rope": "it rotates q and k<br>by each position's angle<br>in every layer (the RoPE panel)",
               "alibi": "ALiBi subtracts a slope<br>times the distance<br>from the attention scores",
               "sinusoidal": "it adds the fixed<br>sinusoidal table (left)"}.get(cfg.positions, "")
        learned = placeholder(f"Nothing to draw here:<br>{how}.", 380, f"{model_name}:<br>no learned position table")
    rope = rope_scores(cfg.d_head if cfg.positions == "rope" else 64, cfg.rope_theta, 32)
    rope_fig = heatmap(rope.numpy(), "RoPE: q·k, query at m, key at n<br>(constant along each diagonal)",
                       "key position n", "query position m")
    return sinus, learned, rope_fig


def build(page) -> View:
    gr.Markdown(INTRO)
    with gr.Row():
        presets = gr.CheckboxGroup(list(PRESETS), value=["animals", "numbers", "countries"], label="Word groups")
        custom = gr.Textbox(label="Your words (comma-separated)", placeholder="king, queen, prince")
    with gr.Row():
        method = gr.Radio(list(METHODS), value="PCA", label="Projection")
        dims = gr.Radio(["2D", "3D"], value="2D", label="Dimensions")
        neighbours = gr.Slider(2, 50, value=5, step=1, label="t-SNE perplexity / UMAP neighbours")
        query = gr.Textbox(label="Nearest neighbours of", value="king")
    with gr.Row():
        static_plot = gr.Plot(scale=2)  # the wider: its labels need the room
        near = gr.Dataframe(headers=["token", "cosine"], label="Nearest tokens in the whole vocabulary", interactive=False,
                            scale=1)
    gr.Markdown("### Contextual embeddings\nThe same word at two places: how similar are its vectors, layer by layer?")
    with gr.Row():
        text = gr.Textbox(label="Sentence", value="The bank is near the river bank.")
        word = gr.Textbox(label="Word that occurs twice", value="bank")
        layer = FittedSlider(0, 64, value=0, step=1, label="Layer (0 = embeddings)")
    context_note = gr.Markdown()
    with gr.Row():
        context_plot, cosine_plot = gr.Plot(), gr.Plot()
    ex = gr.Examples([["The bank is near the river bank.", "bank"],
                      ["Your journey starts with one step, one step at a time.", "step"]], [text, word])
    gr.Markdown("### Where is each token? Positional information")
    with gr.Row():  # three abreast, or two and one beside the lesson's sidebar, where a third is too narrow to read
        sinus, learned, rope = (gr.Plot(min_width=340) for _ in range(3))
    code_panel(word_vectors, project, nearest_tokens, ActivationCache.accumulated_resid, cosine_by_layer,
               sinusoidal_table, rope_scores)
    static_inputs = [page.model, presets, custom, method, dims, neighbours, query]
    context_inputs = [page.model, text, layer, word]
    page.on([presets.change, method.change, dims.change, neighbours.release, custom.submit, query.submit],
            update_static, static_inputs, [static_plot, near], api="embeddings")
    context_outputs = [context_plot, cosine_plot, context_note, layer]
    page.on([text.submit, word.submit, layer.release, ex.load_input_event], update_contextual, context_inputs,
            context_outputs, api="contextual_embeddings")
    return View(links=dict(groups=presets, words=custom, projection=method, dims=dims, neighbours=neighbours,
                           query=query, text=text, word=word, layer=layer),
                draws=[page.event(update_static, static_inputs, [static_plot, near]),
                       page.event(update_contextual, context_inputs, context_outputs),
                       page.event(update_positional, page.model, [sinus, learned, rope], api="positions")],
                page_text=False)  # its sentence goes with its word
