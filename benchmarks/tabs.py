"""Seconds per tab update on a 32-token prompt with SmolLM2: `python benchmarks/tabs.py`.

Each handler (the plain function, without the answer cache Gradio calls it through) runs once to
warm up, then prints the median of 5 runs and its ratio to a plain forward of the same prompt, the
reference measured in the same run. "new text" drops the recorded forwards first. Targets: a new
text in the flow, Block or Residual stream view costs at most 1.5 forwards; another layer or position
reuses the recorded forward; the activation-patching sweep of the residual stream (30 layers x 14
positions) takes under 10 s.
"""
import statistics
import time

import torch
from common import smollm2_pair  # noqa: F401  (sets the environment and sys.path)

from core.weights import zoo
from explainers.activations import forget_runs
from explainers.page.jobs import Job
from explainers.tabs import attention, block, causal_mask, embeddings, lm_head, moe, overview, patching, residual, tokenizer

PROMPT = ("The bank is near the river bank, and every morning the old fisherman walks there "
          "to watch the boats come in before the sun rises over the quiet grey harbour.")


def median_seconds(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    model = zoo.load("smollm2-135m", "cpu")
    ids = torch.tensor([model.tokenizer.encode(PROMPT)])
    name = "smollm2-135m"

    def fresh(fn):
        """fn after dropping every recorded forward: the model really runs, as for a new text."""
        def run():
            forget_runs()
            return fn()
        return run

    cases = {
        "plain forward (reference)": lambda: model(ids),
        "tokenizer tab (SmolLM2 + MiniLM)": lambda: tokenizer.update(PROMPT, [name, "minilm-l6"]),
        "embeddings: words, PCA": lambda: embeddings.update_static(name, ["animals", "numbers"], "", "PCA", "2D", 5, "king"),
        "embeddings: contextual (cached states)": lambda: embeddings.update_contextual(name, PROMPT, 5, "bank"),
        "causal mask: new text": fresh(lambda: causal_mask.update(name, PROMPT, 3, 2, "model's own", 3)),
        "causal mask: other head (cached)": lambda: causal_mask.update(name, PROMPT, 3, 5, "model's own", 3),
        "causal mask: causality check": lambda: causal_mask.update_causality(name, PROMPT, PROMPT + " sea"),
        "attention: new text, all figures": fresh(lambda: attention.update_all(name, PROMPT, 3, 2, [])),
        "attention: other head (cached)": lambda: attention.update_head(name, PROMPT, 3, 5),
        "attention: ablate two heads": fresh(lambda: attention.update_ablation(name, PROMPT, ["L3 H2", "L10 H0"])),
        "LM head: new text": fresh(lambda: lm_head.update(name, PROMPT, -1, 1.0, 50, 0.9, 0, 200)),
        "LM head: sampling slider (cached)": lambda: lm_head.update(name, PROMPT, -1, 0.7, 20, 0.8, 0, 200),
        "LM head: logit lens (cached forward)": lambda: lm_head.update_lens(name, PROMPT),
        "LM head: next token (cached)": lambda: lm_head.next_token(name, PROMPT, 1.0, 50, 0.9, 0, None),
        "MoE tab (tiny-moe): new routing": fresh(lambda: moe.update("tiny-moe", PROMPT, 1, -1, 1, 0, 0, [], "none")),
        "overview flow: new text": fresh(lambda: overview.update_flow(name, PROMPT)),
        "block: new text": fresh(lambda: block.update(name, PROMPT, 3, -1, block.NORMS[1])),
        "block: other layer and position (cached)": lambda: block.update(name, PROMPT, 20, 5, block.NORMS[0]),
        "residual stream: new text": fresh(lambda: residual.update(name, PROMPT, -1, "")),
        "residual stream: other position (cached)": lambda: residual.update(name, PROMPT, 7, ""),
        "patching: residual sweep, 30 x 14": lambda: list(patching.update(name, *patching.PRESETS[1], ["residual stream"],
                                                                          Job())),
    }
    print(f"SmolLM2-135M, {ids.shape[1]}-token prompt, {torch.get_num_threads()} threads, median of 5")
    reference = None
    for label, fn in cases.items():
        with torch.no_grad():
            seconds = median_seconds(fn)
        reference = reference or seconds
        print(f"  {label:42s} {seconds * 1000:8.1f} ms  {seconds / reference:5.2f} x forward")


if __name__ == "__main__":
    main()
