"""Seconds per tab update on a 32-token prompt with SmolLM2: `python benchmarks/tabs.py`.

Each handler runs once to warm up, then prints the median of 5 runs, next to a plain
forward of the same prompt as the reference measured in the same run.
"""
import statistics
import time

import torch

from common import smollm2_pair  # noqa: F401  (sets the environment and sys.path)
from core import zoo
from explainers import attention, causal_mask, embeddings, lm_head, moe, tokenizer
from explainers.common import forget_answers, trace

PROMPT = ("The bank is near the river bank, and every morning the old fisherman walks there "
          "to watch the boats come in before the sun rises over the quiet grey harbour.")


def median_seconds(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        forget_answers()  # a remembered answer would time nothing
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    model = zoo.load("smollm2-135m", "cpu")
    ids = torch.tensor([model.tokenizer.encode(PROMPT)])
    name = "smollm2-135m"

    def fresh_causal():
        causal_mask._forward.cache_clear()   # make the model really run
        return causal_mask.update(name, PROMPT, 3, 2, "model's own", 3)

    def fresh(module, fn):
        def run():
            module._forward.cache_clear()
            trace.cache_clear()  # the forward the attention and LM head tabs share
            return fn()
        return run

    def fresh_lens():
        lm_head._lens.cache_clear()
        return lm_head.update_lens(name, PROMPT)

    def fresh_ablation():
        attention._ablated.cache_clear()
        return attention.update_ablation(name, PROMPT, ["L3 H2", "L10 H0"])

    cases = {
        "plain forward (reference)": lambda: model(ids),
        "tokenizer tab (SmolLM2 + MiniLM)": lambda: tokenizer.update(PROMPT, [name, "minilm-l6"]),
        "embeddings: words, PCA": lambda: embeddings.update_static(name, ["animals", "numbers"], "", "PCA", "2D", 5, "king"),
        "embeddings: contextual (cached states)": lambda: embeddings.update_contextual(name, PROMPT, 5, "bank"),
        "causal mask: new text": fresh_causal,
        "causal mask: other head (cached)": lambda: causal_mask.update(name, PROMPT, 3, 5, "model's own", 3),
        "causal mask: causality check": lambda: causal_mask.update_causality(name, PROMPT, PROMPT + " sea"),
        "attention: new text, all figures": fresh(attention, lambda: attention.update_all(name, PROMPT, 3, 2, [])),
        "attention: other head (cached)": lambda: attention.update_head(name, PROMPT, 3, 5),
        "attention: ablate two heads": fresh_ablation,
        "LM head: new text": fresh(lm_head, lambda: lm_head.update(name, PROMPT, -1, 1.0, 50, 0.9, 0, 200)),
        "LM head: sampling slider (cached)": lambda: lm_head.update(name, PROMPT, -1, 0.7, 20, 0.8, 0, 200),
        "LM head: logit lens": fresh_lens,
        "LM head: next token (cached)": lambda: lm_head.next_token(name, PROMPT, 1.0, 50, 0.9, 0, None),
        "MoE tab (tiny-moe): new routing": fresh(moe, lambda: moe.update("tiny-moe", PROMPT, 1, -1, 1, 0, 0, [], "none")),
    }
    print(f"SmolLM2-135M, {ids.shape[1]}-token prompt, {torch.get_num_threads()} threads, median of 5")
    for label, fn in cases.items():
        with torch.no_grad():
            print(f"  {label:36s} {median_seconds(fn) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
