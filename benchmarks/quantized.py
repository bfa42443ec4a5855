"""fp32 against int8 weights on SmolLM2, 64 greedy new tokens: `python benchmarks/quantized.py [--threads N]`.

In one run: transformers' generate (fp32), core fp32 and core int8 (core.inference.int8.Int8Linear), interleaved; then
the share of greedy tokens that int8 writes as fp32 does (position by position, on three prompts), the
same with the fp32 tokens fed in (teacher forcing: does int8 pick the same next token?), and the mean next-token
KL(fp32 || int8) on held-out text. Targets (issue #17): int8 decode >= 1.8x transformers fp32, >= 90% identical
greedy tokens, mean KL < 0.02.
"""
import argparse

import torch
from common import interleaved_medians, smollm2_pair

from core.analysis import quantization as quant
from core.inference.generation import generate
from core.learning.data import corpus_split
from core.weights import zoo

PROMPTS = ["The history of the printing press begins", "Once upon a time", "The capital of France is"]


def main(new_tokens: int = 64, reps: int = 3, threads: int = 2) -> None:
    ours, theirs = smollm2_pair(threads)
    int8 = zoo.load("smollm2-135m", "cpu", weights="int8")
    prompt = ours.tokenizer.encode(PROMPTS[0])
    ids = torch.tensor([prompt])

    def hf():
        return theirs.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               pad_token_id=0)[0, len(prompt):].tolist()

    with torch.no_grad():
        t = interleaved_medians({"transformers fp32": hf, "core fp32": lambda: generate(ours, prompt, new_tokens),
                                 "core int8": lambda: generate(int8, prompt, new_tokens)}, reps)
        same, forced = [], []
        for text in PROMPTS:
            p = ours.tokenizer.encode(text)
            a, b = generate(ours, p, new_tokens).new_ids, generate(int8, p, new_tokens).new_ids
            same.append(sum(x == y for x, y in zip(a, b)) / new_tokens)
            full = torch.tensor([p + a])                                     # the fp32 text, fed to both
            forced.append(quant.top1_agreement(ours(full)[0, len(p) - 1:-1], int8(full)[0, len(p) - 1:-1]))
        held_out = torch.tensor([ours.tokenizer.encode(corpus_split()[1][:4000])[:512]])
        kl = quant.next_token_kl(ours(held_out), int8(held_out)).mean().item()
        hf_same = hf() == generate(ours, prompt, new_tokens).new_ids
    ref = t["transformers fp32"]
    print(f"SmolLM2-135M, {new_tokens} greedy new tokens with KV cache, {torch.get_num_threads()} threads, "
          f"median of {reps}; transformers and core fp32 write the same tokens: {hf_same}")
    for name, seconds in t.items():
        print(f"  {name:18s} {seconds:7.2f} s ({new_tokens / seconds:5.1f} tok/s)   speed vs transformers fp32 "
              f"{ref / seconds:5.2f}x")
    print(f"  int8 greedy tokens identical to core fp32, position by position: "
          f"{', '.join(f'{s:.0%}' for s in same)} (mean {sum(same) / len(same):.0%})")
    print(f"  int8 top-1 on the fp32 tokens (teacher forcing): {', '.join(f'{s:.0%}' for s in forced)} "
          f"(mean {sum(forced) / len(forced):.0%})")
    print(f"  mean next-token KL(fp32 || int8) on {held_out.shape[1]} held-out tokens: {kl:.4f} nats")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    main(reps=args.reps, threads=args.threads)
