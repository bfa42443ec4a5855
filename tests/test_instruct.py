"""Instruction tuning: the loss counts the response tokens only, the chat template's roles are where the template
puts them, the streamed reply's alternatives are the model's own probabilities, SFT learns and stops on Cancel,
bad settings get a plain sentence, and the shipped pairs are the generator's output in the char model's alphabet."""
import json

import pytest
import torch
import torch.nn.functional as F

from core.device import torch_threads
from core.inputs import InputError
from core.learning import instruction_data
from core.learning.instruct import (
    SFTSettings,
    chat_prompt,
    collate,
    encode_pair,
    prepare_sft,
    reply_steps,
    response_loss,
    sft_steps,
)
from core.learning.instruction_data import END, PROMPT, load_pairs
from core.learning.training import training_loss
from core.weights import zoo
from explainers.page.jobs import Job
from explainers.tabs import instruct


@pytest.fixture(autouse=True)
def threads():
    """As the app runs a job on 2 cores: two threads on cores that other work shares thrash."""
    with torch_threads(instruct.TRAIN_THREADS):
        yield


@pytest.fixture(scope="module")
def char_model():
    return zoo.load("tiny-gpt-char")


@pytest.fixture(scope="module")
def smollm2():
    return zoo.load("smollm2-135m")


def test_the_loss_mask_covers_exactly_the_response_tokens(char_model):
    tok = char_model.tokenizer
    prompt = PROMPT.format(instruction="Add 1 and 2.")             # "Instruction:\nAdd 1 and 2.\nResponse:\n"
    inputs, labels = encode_pair(tok, "Add 1 and 2.", "3")
    P, answer = len(prompt), tok.encode("3" + END)                 # one id per character: P prompt tokens
    assert inputs == tok.encode(prompt + "3" + END)[:-1] and len(labels) == len(inputs) == P + len(answer) - 1
    counted = [t for t, label in enumerate(labels) if label != -100]
    assert counted == list(range(P - 1, P - 1 + len(answer)))     # position P-1 (the last "\n") predicts "3"
    assert [labels[t] for t in counted] == answer
    x, y = collate([(inputs, labels), encode_pair(tok, "Add 12 and 3.", "15")])
    assert x.shape == y.shape == (2, len(inputs) + 2) and (y[0, -2:] == -100).all()  # padded: not scored
    assert (y[1] != -100).sum() == len("15" + END)
    # the training loss is the cross-entropy over exactly those positions
    logits = char_model(x[:1])[0]                                  # (T, V)
    expected = F.cross_entropy(logits[counted], torch.tensor(answer))
    torch.testing.assert_close(training_loss(char_model, x[:1], y[:1]), expected, rtol=1e-5, atol=1e-5)


def test_the_chat_template_puts_the_instruction_between_the_user_marker_and_its_end(smollm2):
    tok = smollm2.tokenizer
    tokens = chat_prompt(tok, "What is 2+3?")
    pieces = [tok.hf.convert_ids_to_tokens(c.token.id) for c in tokens]
    user = pieces.index("user")
    end = pieces.index("<|im_end|>", user)
    assert pieces[user - 1] == "<|im_start|>" and tokens[user].kind == "role" and tokens[user - 1].kind == "special"
    assert tokens[user + 1].kind == "markup"                       # the newline after the role name
    content = tokens[user + 2:end]
    assert {c.kind for c in content} == {"user"} and tok.decode([c.token.id for c in content]) == "What is 2+3?"
    assert not any(c.kind == "user" for c in tokens[:user] + tokens[end:])
    cue = [c for c in tokens if c.part == "generation prompt"]
    assert tok.hf.decode([c.token.id for c in cue]) == "<|im_start|>assistant\n"
    assert [c.kind for c in cue] == ["special", "role", "role", "markup"]  # "assistant" is two tokens here
    system = tok.decode([c.token.id for c in tokens if c.kind == "system"])
    assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert [c.token.id for c in tokens] == tok.hf.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                                                       add_generation_prompt=True, tokenize=True)[
                                                                           "input_ids"]


def test_the_reply_alternatives_are_a_separate_forwards_softmax(smollm2):
    ids = [c.token.id for c in chat_prompt(smollm2.tokenizer, "Name a colour.")]
    *_, g = reply_steps(smollm2, ids, 4)
    assert len(g.new_ids) == len(g.alternatives) == 4
    with torch.no_grad():
        for k, alternatives in enumerate(g.alternatives):
            probs = smollm2(torch.tensor([ids + g.new_ids[:k]]))[0, -1].softmax(-1)   # no cache: the whole text
            top = probs.topk(5)
            assert [i for i, _ in alternatives] == top.indices.tolist()
            torch.testing.assert_close(torch.tensor([p for _, p in alternatives]), top.values, rtol=0, atol=1e-4)
            assert g.new_ids[k] == top.indices[0]                                     # greedy


def test_a_model_without_a_chat_template_says_so_and_the_chat_uses_smollm2():
    chips, note = instruct.show_template("tiny-gpt-char", "Say hello.")
    assert "tiny-gpt-char** has no chat template" in note and "smollm2-135m" in note
    assert "&lt;|im_start|&gt;" in chips and "your text ends" in chips and "reply starts here" in chips


def test_the_reply_streams_tokens_with_their_alternatives_and_stops_on_cancel():
    *_, (template, reply, note) = instruct.reply("smollm2-135m", "Say hello.", 3, Job())
    assert "3 tokens" in reply and reply.count("The five likeliest") == 3 and "3-token limit" in note
    job = Job()
    answers = instruct.reply("smollm2-135m", "Say hello.", 50, job)
    next(answers)  # the prompt is drawn; no token yet
    job.stop.set()
    *_, last = answers
    assert "**Cancelled** after 1 token." in last[2]  # the step under way when Cancel came


@pytest.mark.parametrize("text, message", [("", "Type an instruction first"), ("   \n", "Type an instruction first"),
                                           ("x" * 501, "keep it to 500 or fewer"), (None, "Type an instruction")])
def test_an_empty_or_too_long_instruction_gets_a_plain_sentence(text, message):
    with pytest.raises(InputError, match=message):
        instruct.show_template("smollm2-135m", text)
    with pytest.raises(InputError, match=message):
        next(instruct.reply("smollm2-135m", text, 8, Job()))


@pytest.mark.parametrize("model, steps, lr, batch, message", [
    ("tiny-gpt-char", 0, 3e-3, 16, "number of steps must be from 1 to 1000"),
    ("tiny-gpt-char", 5000, 3e-3, 16, "number of steps must be from 1 to 1000"),
    ("smollm2-135m", 200, 3e-3, 8, "number of steps must be from 1 to 60"),
    ("tiny-gpt-char", 10, 5, 16, "learning rate must be from 1e-05 to 0.01"),
    ("tiny-gpt-char", 10, "fast", 16, "learning rate must be a number"),
    ("tiny-gpt-char", 10, 3e-3, 0, "batch size must be from 1 to 64"),
    ("gpt5", 10, 3e-3, 16, "Fine-tune one of"),
])
def test_bad_sft_settings_get_a_plain_sentence(model, steps, lr, batch, message):
    with pytest.raises(InputError, match=message):
        next(instruct.sft_live(model, steps, lr, batch, Job()))


def test_cancel_stops_sft_within_one_step(char_model):
    run = prepare_sft(char_model, load_pairs(), SFTSettings(steps=50, batch=4))
    seen = []
    for s in sft_steps(run, should_stop=lambda: len(seen) >= 3):  # as Cancel, pressed while step 3 is reported
        seen.append(s.step)
    assert seen == [1, 2, 3]


def test_sft_trains_a_copy_and_the_tab_shows_before_and_after(char_model):
    weight = char_model.embed.weight.clone()
    answers = list(instruct.sft_live("tiny-gpt-char", 6, 3e-3, 4, Job()))
    status, curves, _, table = answers[-1]
    assert "**Finished**" in status and "Held-out response loss **5.70 →" in status
    assert len(curves.data) == 3 and list(curves.data[1].x) == [0, 6]  # held-out: before, and after the last step
    assert "Right: 0 of 10 before" in table and table.count("<tr>") == 11
    mask = answers[0][2]
    firsts = {p["task"]: p for p in reversed(load_pairs()["train"])}  # one training example of each task
    assert mask.count("counted, the model learns") == sum(len(p["response"] + END) for p in firsts.values()) > 5
    assert torch.equal(char_model.embed.weight, weight)                # the zoo's shared model never trains


def test_a_cancelled_sft_says_where_it_stopped():
    job = Job()
    answers = instruct.sft_live("tiny-gpt-char", 500, 3e-3, 4, job)
    next(answers)
    job.stop.set()
    *_, last = answers
    assert "**Cancelled** after 0 steps" in last[0]
    waiting = Job()
    waiting.stop.set()
    assert [a[0] for a in instruct.sft_live("tiny-gpt-char", 10, 3e-3, 4, waiting)] == \
        ["Cancelled before the run started."]


def test_lora_on_smollm2_trains_only_the_adapter(smollm2):
    run = prepare_sft(smollm2, {k: v[:8] for k, v in load_pairs().items() if k != "origin"},
                      SFTSettings(steps=1, batch=2), instruct.LORA)
    assert run.trainable == 30 * 8 * (2 * (576 + 576) + 2 * (576 + 192))  # 30 layers, r (d_in + d_out): q, o, k, v
    *_, s = sft_steps(run)
    assert s.step == 1 and s.heldout is not None


def test_the_shipped_pairs_are_the_generators_and_fit_the_char_model(char_model):
    shipped = load_pairs()
    assert shipped == json.loads(json.dumps(instruction_data.build()))
    train, held = shipped["train"], shipped["heldout"]
    assert len(train) == 500 and len(held) == 50
    assert not {p["instruction"] for p in train} & {p["instruction"] for p in held}
    alphabet = set(char_model.tokenizer.chars)
    for p in train + held:
        assert set(p["instruction"] + p["response"]) <= alphabet, p
        assert len(instruction_data.example(p["instruction"], p["response"])) <= char_model.cfg.n_ctx


@pytest.mark.slow  # the default run: a real SFT run of about a minute
def test_the_default_sft_run_lowers_the_heldout_response_loss_by_30_percent(char_model):
    run = prepare_sft(char_model, load_pairs(), instruct.DEFAULTS["tiny-gpt-char"])
    before = response_loss(char_model, run.heldout)
    *_, last = sft_steps(run)
    assert last.step == run.settings.steps and last.heldout <= 0.7 * before, (before, last.heldout)
