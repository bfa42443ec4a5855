"""Core vs transformers on SmolLM2, one 128-token forward: `python benchmarks/forward.py`.

Targets: hooks off <= 1.10x transformers; every hook cached <= 1.5x.
"""
import torch
from common import interleaved_medians, smollm2_pair


def main(T: int = 128, reps: int = 15) -> None:
    ours, theirs = smollm2_pair()
    ids = torch.randint(0, ours.cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = interleaved_medians({
            "transformers": lambda: theirs(ids).logits,
            "core, hooks off": lambda: ours(ids),
            "core, every hook cached": lambda: ours.run_with_cache(ids),
        }, reps)
    ref = t["transformers"]
    print(f"SmolLM2-135M, {T}-token forward, {torch.get_num_threads()} threads, median of {reps}")
    for name, seconds in t.items():
        print(f"  {name:26s} {seconds * 1000:8.1f} ms   ratio {seconds / ref:5.2f}")


if __name__ == "__main__":
    main()
