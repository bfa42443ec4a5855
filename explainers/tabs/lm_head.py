"""LM head tab: hidden state -> logits -> temperature -> top-k -> top-p -> a drawn token; branches; logit lens."""
from __future__ import annotations

import gradio as gr
import torch

from core.analysis.lens import logit_lens
from core.inference.generation import branch, generate_steps
from core.inference.sampling import SamplingSettings, draw, sample, stages
from core.inputs import InputError, fitted, number, text_to_tokens
from core.model.transformer import Unembed
from explainers.activations import prediction_position, run
from explainers.draw.figures import piece, placeholder
from explainers.draw.widgets import Fit, FittedSlider, code_panel, fit_position
from explainers.page.inputs import get_model, join_notes
from explainers.page.tab import View
from explainers.tabs.lm_head_figures import branch_rows, lab_figure, lens_figure, stage_counts, stages_figure, tree_figure

TITLE = "LM head & sampling"
INTRO = r"""### From the last hidden state to the next token
The final vector of a position is multiplied by the unembedding matrix: one score (**logit**) per
vocabulary entry. Sampling then reshapes that list before drawing one token:

$$p_i = \text{softmax}\big(\text{filter}_{\text{top-}p}(\text{filter}_{\text{top-}k}(z / T))\big)_i$$

**Temperature** T divides the logits (T < 1 sharpens, T > 1 flattens, T = 0 always takes the
most likely token). **Top-k** keeps the k highest. **Top-p** keeps the fewest tokens whose
probability adds up to p. Grey bars are the tokens a stage removed."""

CANDIDATES = 10   # the tokens a branch can start from: the ten most likely at the prediction point
MAX_BRANCH = 40   # greedy tokens after the forced one
LENS_TOKENS = 32  # the lens reads the last 32 tokens at most: wider heatmaps stop being readable


def check_settings(model, temperature, top_k, top_p, seed) -> tuple[SamplingSettings, int, str]:
    """The widgets' sampling settings, checked; top-k above the vocabulary keeps every token, with a note."""
    temperature = number("temperature", temperature, 0, 10, whole=False)  # 0 = always the most likely token
    top_p = number("top-p", top_p, 0, 1, whole=False)
    if top_p == 0:
        raise InputError("The top-p must be above 0: with p = 0 no token could be drawn. Use 1 to switch it off.")
    V = model.cfg.vocab_size
    top_k, note = fitted("top-k", top_k, 0, V)
    if note:
        note = f"Top-k was above this model's vocabulary of {V:,} tokens, so every token is kept." if top_k == V else note
    seed, note_seed = fitted("seed", seed, 0, 2**31 - 1)
    return SamplingSettings(temperature, top_k, top_p), seed, join_notes(note, note_seed)


def no_head(model_name: str) -> str:
    """Why a model without an output head has nothing to show here ('' when it has one)."""
    if get_model(model_name).unembed is not None:
        return ""
    return (f"**{model_name} has no output head** (it gives sentence embeddings), so it predicts no tokens. Pick a "
            "decoder such as smollm2-135m, or tiny-bert-word to fill in [MASK].")


def _prepare(model_name: str, text: str):
    """The model, the text's token ids (the last ones, where the prediction is read) and a notice."""
    model = get_model(model_name)
    if no_head(model_name):
        raise InputError(no_head(model_name).replace("**", ""))
    tokens, notice = text_to_tokens(model, text, keep="last")
    return model, [t.id for t in tokens], notice


def _position(model, ids, position) -> tuple[int, Fit]:
    """The position read (-1 means the model's own prediction point), and the setting fitted to the text."""
    fitted_position = fit_position(model, ids, position)
    return (prediction_position(model, ids) if fitted_position.value == -1 else fitted_position.value), fitted_position


def update(model_name: str, text: str, position, temperature, top_k, top_p, seed, n_draws):
    """The stages from logits to probabilities, a note, the sampling lab, then the position slider fitted to the
    text."""
    if no_head(model_name):  # said on the tab, not as an error: this runs whenever the model changes
        return None, no_head(model_name), None, "", gr.skip()
    model, ids, notice = _prepare(model_name, text)
    settings, seed, note = check_settings(model, temperature, top_k, top_p, seed)
    n_draws, note_n = fitted("number of draws", n_draws, 1, 100_000)
    pos, position = _position(model, ids, position)
    st = stages(run(model_name, tuple(ids)).logits(pos), settings)
    counts = draw(st["probs"], n_draws, seed)
    tv = 0.5 * (counts.float() / n_draws - st["probs"]).abs().sum().item()
    current = model.tokenizer.readable(ids[pos])
    head = f"Predicting the token after position {pos} ({current!r})" if model.cfg.causal else \
        f"Predicting the word at position {pos} ({current!r})"
    lab_note = (f"{n_draws:,} seeded draws. Total variation between frequencies and probabilities: **{tv:.3f}** "
                "(it shrinks like 1/√N as N grows).")
    return (stages_figure(st, model.tokenizer),
            join_notes(f"{head}. {stage_counts(st)}", notice, position.note, note, note_n),
            lab_figure(st["probs"], counts, model.tokenizer), lab_note, position.slider)


def update_lens(model_name: str, text: str):
    """The logit lens over the last LENS_TOKENS positions of the forward the LM head reads."""
    if no_head(model_name):
        return None
    model, ids, _ = _prepare(model_name, text)
    stream = run(model_name, tuple(ids)).cache.accumulated_resid()[:, -LENS_TOKENS:]    # (L+1, T, C)
    first = len(ids) - stream.shape[1]
    labels = [f"{first + i}:{piece(model.tokenizer, t)}" for i, t in enumerate(ids[first:])]
    return lens_figure(logit_lens(model, stream), model.tokenizer, labels)


def next_token(model_name: str, text: str, temperature, top_k, top_p, seed, state):
    """Draw one token with the current settings and append it (or fill the [MASK] for a masked LM)."""
    model, ids, notice = _prepare(model_name, text)
    settings, seed, _ = check_settings(model, temperature, top_k, top_p, seed)
    state = state if isinstance(state, dict) and state.get("text") == text and state.get("model") == model_name else \
        {"model": model_name, "ids": ids, "rows": []}
    ids = list(state["ids"])
    if model.cfg.causal:
        if len(ids) >= model.cfg.n_ctx:
            raise InputError(f"The context is full ({model.cfg.n_ctx} tokens); shorten the text to go on.")
        pos = len(ids) - 1
    else:
        mask_id = getattr(model.tokenizer, "mask_id", None)
        if mask_id not in ids:
            raise InputError("A masked language model fills in blanks: type [MASK] where a word should go.")
        pos = ids.index(mask_id)
    logits = run(model_name, tuple(ids)).logits(pos)
    st = stages(logits, settings)
    step = len(state["rows"])
    token = int(sample(logits, settings, torch.Generator().manual_seed(seed + step)))  # seed + step: reproducible
    top = st["probs"].topk(5)
    candidates = ", ".join(f"{piece(model.tokenizer, int(i))} {p:.0%}" for p, i in zip(top.values, top.indices)
                           if p > 0)
    if model.cfg.causal:
        ids.append(token)
    else:
        ids[pos] = token
    new_text = model.tokenizer.decode(ids)
    rows = state["rows"] + [[step + 1, piece(model.tokenizer, token), f"{st['probs'][token].item():.1%}",
                             candidates]]
    return new_text, rows, {"model": model_name, "text": new_text, "ids": ids, "rows": rows}


def _candidates(model_name: str, ids: list[int], pos: int) -> torch.return_types.topk:
    """The CANDIDATES most likely next tokens after position pos (softmax of the logits, no sampling filter)."""
    return run(model_name, tuple(ids)).logits(pos).softmax(-1).topk(CANDIDATES)


def branch_choices(model_name: str, text: str, position):
    """The branch picker filled with this point's candidates (token and probability), the most likely chosen."""
    if no_head(model_name):  # runs whenever the model changes: the tab already says why there is nothing
        return gr.Dropdown(choices=[], value=None)
    model, ids, _ = _prepare(model_name, text)
    if not model.cfg.causal:
        return gr.Dropdown(choices=[], value=None)
    top = _candidates(model_name, ids, _position(model, ids, position)[0])
    choices = [(f"{piece(model.tokenizer, i)}  ({p:.1%})", i) for p, i in zip(top.values.tolist(), top.indices.tolist())]
    return gr.Dropdown(choices=choices, value=choices[0][1])


def add_branch(model_name: str, text: str, position, candidate, length, state):
    """Force a candidate at the tab's position and let the model go on greedily; keep it beside the text's other
    branches (a branch from the same candidate replaces the old one). No candidate: the most likely one."""
    model = get_model(model_name)
    if not model.cfg.causal or model.unembed is None:
        raise InputError(f"Branching continues a text token by token, so it needs a decoder such as smollm2-135m, "
                         f"tiny-gpt-char or tiny-moe; {model_name} is an encoder.")
    model, ids, notice = _prepare(model_name, text)
    pos, _ = _position(model, ids, position)
    n, note = fitted("branch length", length, 1, MAX_BRANCH)
    root = ids[:pos + 1]
    room = model.cfg.n_ctx - len(root) - 1
    if room < 1:
        raise InputError(f"The text fills this model's context of {model.cfg.n_ctx} tokens: no room for a branch. "
                         "Shorten it or pick an earlier position.")
    if n > room:
        n, note = room, f"Only {room} tokens fit in the context after the forced one, so the branch has {room}."
    top = _candidates(model_name, ids, pos).indices.tolist()
    try:
        token = top[0] if candidate in (None, "") else int(candidate)
    except (TypeError, ValueError):
        raise InputError("Pick the token to force from the list of candidates.") from None
    if token not in top:
        raise InputError(f"Token {token} is not one of the {CANDIDATES} candidates at this point; pick one from the list.")
    g = branch(model, root, token, n)
    if not (isinstance(state, dict) and state.get("model") == model_name and state.get("root") == root):
        state = {"model": model_name, "root": root, "branches": []}  # another text or model: a new tree
    branches = [b for b in state["branches"] if b["ids"][0] != token] + [{"ids": g.new_ids, "probs": g.probs}]
    branches.sort(key=lambda b: -b["probs"][0])  # as the candidates are listed: most likely first
    tokenizer = model.tokenizer
    return (tree_figure(branches, tokenizer, tokenizer.decode(root)), branch_rows(branches, tokenizer),
            {**state, "branches": branches}, join_notes(notice, note))


NO_BRANCH = "Pick a candidate and press <b>Branch</b>: each branch grows here, its tokens in boxes, as a tree."


def clear_branches():
    """Empty tree (saying what will grow there), table, state and note."""
    return placeholder(NO_BRANCH, 200), None, None, ""


def build(page) -> View:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text", value="The cat sat on the")
    with gr.Row():  # a slider narrower than min_width wraps to the next line (beside the lesson) instead of losing its ends
        temperature = gr.Slider(0, 3, value=1.0, step=0.05, label="Temperature (0 = greedy)", min_width=220)
        top_k = gr.Number(value=50, precision=0, label="Top-k (0 = off)", minimum=0, min_width=140)
        top_p = gr.Slider(0.01, 1, value=0.9, step=0.01, label="Top-p (1 = off)", min_width=220)
        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, min_width=140)
        position = FittedSlider(-1, 127, value=-1, step=1, label="Position (−1 = where the model predicts)",
                                min_width=220)
    ex = gr.Examples([["The cat sat on the", 1.0, 50, 0.9], ["The capital of France is", 0.7, 20, 0.95],
                      ["Once upon a time", 0.0, 0, 1.0]], [text, temperature, top_k, top_p])
    notice = gr.Markdown()
    stages_plot = gr.Plot()
    with gr.Row():
        step_button = gr.Button("Next token: draw one and append it", variant="primary")
        reset_button = gr.Button("Clear the steps")
    steps = gr.Dataframe(headers=["step", "drawn token", "its probability", "top candidates"],
                         interactive=False, wrap=True)
    state = gr.State(None)
    gr.Markdown("### Branches: what if the model had picked another token?\nForce one of the candidates at the "
                "prediction point; the model then goes on greedily (always its most likely token). Each branch is kept, "
                "so you can compare them.")
    with gr.Row():
        candidate = gr.Dropdown(choices=[], value=None, label="Candidate to force (token, probability at T=1, unfiltered)")
        length = gr.Slider(1, MAX_BRANCH, value=12, step=1, label="Branch length N (greedy tokens after it)")
    with gr.Row():
        branch_button = gr.Button("Branch", variant="primary")
        clear_button = gr.Button("Clear branches")
    branch_note = gr.Markdown()
    tree_plot = gr.Plot(placeholder(NO_BRANCH, 200))
    branch_table = gr.Dataframe(headers=["forced token", "its probability", "the branch's text",
                                         "probability of the whole branch"], interactive=False, wrap=True,
                                column_widths=["14%", "12%", "56%", "18%"])
    branch_state = gr.State(None)
    gr.Markdown("### Sampling lab\nDraw many tokens with the same settings: the frequencies approach the "
                "probabilities.")
    n_draws = gr.Slider(10, 5000, value=200, step=10, label="Number of draws N")
    lab_note = gr.Markdown()
    lab_plot = gr.Plot()
    gr.Markdown("### Logit lens\nRead the residual stream after every block through the final norm and the "
                "unembedding, as if the model stopped there. The last row is the model's own prediction.")
    lens_plot = gr.Plot()
    code_panel(Unembed.forward, stages, sample, draw, branch, generate_steps, logit_lens)
    inputs = [page.model, text, position, temperature, top_k, top_p, seed, n_draws]
    outputs = [stages_plot, notice, lab_plot, lab_note, position]
    point = [page.model, text, position]
    drawn = page.event(update, inputs, outputs)
    lens = page.event(update_lens, [page.model, text], lens_plot)
    candidates = page.event(branch_choices, point, candidate, remember=False)
    page.on([temperature.release, top_p.release, top_k.submit, seed.submit, n_draws.release], update, inputs, outputs)
    page.on([position.release], update, inputs, outputs, then=[candidates])
    # the lens and the candidates follow a new text once the update has taken it: an empty text gets one message
    page.on([text.submit, ex.load_input_event], update, inputs, outputs, api="lm_head", then=[lens, candidates])
    page.on([step_button.click], next_token, [page.model, text, temperature, top_k, top_p, seed, state],
            [text, steps, state], remember=False, api="next_token", then=[drawn, lens, candidates])
    reset_button.click(lambda: (None, None), None, [steps, state], queue=False, api_visibility="private")
    page.on([branch_button.click], add_branch, [*point, candidate, length, branch_state],
            [tree_plot, branch_table, branch_state, branch_note], remember=False, api="branch")
    clear_button.click(clear_branches, None, [tree_plot, branch_table, branch_state, branch_note], queue=False,
                       api_visibility="private")
    return View(links=dict(text=text, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, position=position,
                           draws=n_draws, branch_length=length),
                draws=[drawn, lens, candidates])
