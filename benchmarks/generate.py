"""Core vs transformers on SmolLM2, 128 greedy new tokens with the KV cache: `python benchmarks/generate.py`.

Target: core <= 1.20x transformers' generate. Also checks that both produce the same tokens.
"""
import torch
from common import interleaved_medians, report, smollm2_pair

from core.inference.generation import generate


def main(new_tokens: int = 128, reps: int = 3) -> None:
    ours, theirs = smollm2_pair()
    prompt = ours.tokenizer.encode("The history of the printing press begins")
    ids = torch.tensor([prompt])

    def hf():
        return theirs.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               pad_token_id=0)[0, len(prompt):].tolist()

    def core():
        return generate(ours, prompt, new_tokens, use_cache=True).new_ids

    with torch.no_grad():
        same = hf() == core()
        t = interleaved_medians({"transformers generate": hf, "core generate": core}, reps)
    report(f"SmolLM2-135M, {new_tokens} greedy new tokens with KV cache, {torch.get_num_threads()} threads, "
           f"median of {reps}; identical tokens: {same}", t, new_tokens)


if __name__ == "__main__":
    main()
