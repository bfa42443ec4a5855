"""Beam search equals transformers' (sequences and scores), for widths 1, 2 and 4, length penalties and the three
early-stopping rules, with and without an end-of-text token; its recorded tree is consistent with its result."""
import pytest
import torch

from core.inference.beam import beam_search
from core.inference.generation import generate
from core.inputs import InputError
from explainers.page.jobs import Job

PROMPT = [5, 17, 42, 8, 99]
PROMPTS = [PROMPT, [3, 14, 15, 92, 65], [27, 18, 28, 18, 28], [61, 80, 33, 98, 87]]


def clear_cut(search, noise: float = 1e-5) -> bool:
    """No two candidates of a step, nor two finished scores, within float noise of each other. Core's logits and
    transformers' differ by ~1e-6, so the two may order a near-tie either way and their searches part there: such
    a search tests the rounding, not the algorithm."""
    scores = [h.score for h in search.finished]
    return all(a.logprob - b.logprob > noise for step in search.steps for a, b in zip(step, step[1:])) and \
        all(a - b > noise for a, b in zip(scores, scores[1:]))


def clear_search(model, width, n, length_penalty, early_stopping=False, with_end=False):
    """(prompt, end token ids or None, our search) for the first prompt of PROMPTS whose search is clear cut. The
    end token is one the unconstrained search writes early, so hypotheses finish at several lengths."""
    for prompt in PROMPTS:
        eos = [beam_search(model, prompt, width, n).finished[0].ids[1]] if with_end else None
        ours = beam_search(model, prompt, width, n, length_penalty, early_stopping, eos or ())
        if clear_cut(ours):
            return prompt, eos, ours
    pytest.fail("every prompt's search has a near-tie")


def hf_beams(hf, prompt, width, n, length_penalty, early_stopping, eos):
    """transformers' finished beams: (new tokens, score), best first, the fill after an end token cut off."""
    hf.generation_config.eos_token_id = eos
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), num_beams=width, max_new_tokens=n, do_sample=False,
                          eos_token_id=eos, pad_token_id=0, length_penalty=length_penalty,
                          early_stopping=early_stopping, num_return_sequences=width, return_dict_in_generate=True,
                          output_scores=True)
    beams = []
    for seq, score in zip(out.sequences, out.sequences_scores):
        new = seq[len(prompt):].tolist()
        if eos and eos[0] in new:
            new = new[:new.index(eos[0]) + 1]
        beams.append((new, float(score)))
    return beams


def assert_same(ours, theirs):
    assert [h.ids for h in ours.finished] == [ids for ids, _ in theirs]
    assert [h.score for h in ours.finished] == pytest.approx([s for _, s in theirs], abs=1e-4)


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beams_equal_transformers_without_an_end_token(decoder_pair, width, length_penalty):
    _, model, hf = decoder_pair
    prompt, _, ours = clear_search(model, width, 10, length_penalty)
    assert_same(ours, hf_beams(hf, prompt, width, 10, length_penalty, False, None))
    assert all(len(h.ids) == 10 for h in ours.finished)


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, -1.0, 2.0])
def test_beams_equal_transformers_with_an_end_token(decoder_pair, early_stopping, length_penalty):
    _, model, hf = decoder_pair
    prompt, eos, ours = clear_search(model, 4, 10, length_penalty, early_stopping, with_end=True)
    assert_same(ours, hf_beams(hf, prompt, 4, 10, length_penalty, early_stopping, eos))
    assert any(c.fate == "finished" for step in ours.steps[:-1] for c in step)  # one ended before the length limit


def test_width_one_is_greedy(decoder_pair):
    _, model, hf = decoder_pair
    ours = beam_search(model, PROMPT, 1, 12)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        ref = hf.generate(torch.tensor([PROMPT]), num_beams=1, max_new_tokens=12, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
    assert ours.finished[0].ids == generate(model, PROMPT, 12).new_ids == ref[0, len(PROMPT):].tolist()


def test_smollm2_beams_equal_transformers(smollm2, smollm2_hf):
    prompt = smollm2.tokenizer.encode("The capital of France is")
    for width, length_penalty in [(2, 1.0), (4, 1.0), (4, 0.0)]:
        ours = beam_search(smollm2, prompt, width, 8, length_penalty, False, [2])
        assert_same(ours, hf_beams(smollm2_hf, prompt, width, 8, length_penalty, False, [2]))


def test_the_tree_is_the_search(decoder_pair):
    """Every step looks at 2 x width candidates, best first; the kept ones are the best that did not end; each
    finished hypothesis is a path through the tree whose log-probabilities add up."""
    _, model, _ = decoder_pair
    eos = [beam_search(model, PROMPT, 3, 8).finished[0].ids[1]]
    out = beam_search(model, PROMPT, 3, 8, 1.0, "never", eos)
    assert out.stopped == "it reached the length limit" and out.kept[-1] == []   # at the limit every candidate ends
    for cands, kept in zip(out.steps[:-1], out.kept):
        assert len(cands) == 6 and [c.logprob for c in cands] == sorted((c.logprob for c in cands), reverse=True)
        assert kept == [i for i, c in enumerate(cands) if c.token not in eos][:3]
    with torch.no_grad():
        for h in out.finished:
            logp = model(torch.tensor([PROMPT + h.ids]))[0].log_softmax(-1)
            total = sum(logp[len(PROMPT) - 1 + i, t].item() for i, t in enumerate(h.ids))
            assert h.logprob == pytest.approx(total, abs=1e-4)
            assert h.score == pytest.approx(h.logprob / len(h.ids), abs=1e-6)


def test_beam_search_refuses_an_encoder_and_a_full_context(minilm, decoder_pair):
    with pytest.raises(InputError, match="decoder"):
        beam_search(minilm, [101, 102], 2, 4)
    _, model, _ = decoder_pair
    with pytest.raises(InputError, match="context"):
        beam_search(model, PROMPT, 2, model.cfg.n_ctx)


@pytest.mark.parametrize("width", [0, 100])
def test_the_tab_refuses_a_beam_width_out_of_range_plainly(width):
    from explainers.tabs import beam_search as tab
    with pytest.raises(InputError, match=f"The beam width must be from 1 to 8; {width} is outside that range"):
        next(tab.update("tiny-gpt-char", "ROMEO:", width, 4, 1.0, "False", 0, Job()))


def test_the_tab_draws_the_tree_the_ranking_and_the_comparison():
    from explainers.tabs import beam_search as tab
    *_, (tree, ranked, compared, note) = tab.update("tiny-gpt-char", "ROMEO:", 3, 6, 1.0, "False", 0, Job())
    assert len(ranked) == 3 and [r[0] for r in ranked] == [1, 2, 3] and len(compared) == 3
    assert sorted(r[4] for r in ranked) == [r[4] for r in ranked][::-1]        # best score first
    assert compared[0][3] == ranked[0][3] and "summed log-probability" in note
    assert {t.name for t in tree.data} >= {"goes on", "pruned"}


def test_cancel_stops_the_search_between_steps():
    from explainers.tabs import beam_search as tab
    job = Job()
    runs = tab.update("tiny-gpt-char", "ROMEO:", 3, 6, 1.0, "False", 0, job)
    assert next(runs)[-1] == "Searching with 3 beams…"
    job.stop.set()
    assert list(runs)[-1][-1] == "**Cancelled** after 1 of 6 steps."


def test_the_tab_draws_on_screen_with_a_job_of_its_own_and_the_lecture_flag_last():
    """A View's draw sends no job (explainers.page.jobs.running(own=True)), so the session's lecture flag is the
    last input and styles the figures."""
    import inspect

    from explainers.page.jobs import running
    from explainers.page.serving import handler
    from explainers.tabs import beam_search as tab
    draw = handler(running(tab.update, "generate", own=True), remember=False)
    assert list(inspect.signature(draw).parameters)[-2:] == ["seed", "lecture"]
    *_, (plain, *_) = draw("tiny-gpt-char", "ROMEO:", 2, 3, 1.0, "False", 0, False)
    *_, (lecture, *_) = draw("tiny-gpt-char", "ROMEO:", 2, 3, 1.0, "False", 0, True)
    assert plain.layout.font.size is None and lecture.layout.font.size > 12
