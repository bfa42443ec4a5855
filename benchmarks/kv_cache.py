"""KV cache speedup on SmolLM2: `python benchmarks/kv_cache.py [--tokens 64 256 512] [--device cpu]`.

For each length, the same greedy generation runs with the cache and without it (each step
rerunning the whole sequence); the cached run is the reference, so the ratio is the speedup.
A warm-up generation runs first; on a GPU every step is synchronised (core.device.timed).
Each step unembeds only the position it samples from; the last line times one uncached step
of each length both ways (only the last position, every position), interleaved in one run:
what unembedding every position used to add to the run without a cache.
"""
import argparse
from functools import partial

import torch
from common import interleaved_medians, zoo

from core.device import describe, pick_device
from core.inference.generation import generate, median_slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model = zoo.load("smollm2-135m", str(device))
    prompt = model.tokenizer.encode("The history of the printing press begins")
    generate(model, prompt, 4, use_cache=True)
    generate(model, prompt, 4, use_cache=False)  # warm-up, both paths
    print(f"SmolLM2-135M on {describe(device)}, prompt {len(prompt)} tokens, greedy")
    print(f"{'new tokens':>10} {'cached s':>9} {'uncached s':>11} {'speedup':>8} {'same':>5} "
          f"{'cached ms/pos':>14} {'uncached ms/pos':>16}")
    for n in args.tokens:
        cached = generate(model, prompt, n, use_cache=True)
        plain = generate(model, prompt, n, use_cache=False)
        positions = list(range(len(prompt) + 1, len(prompt) + n))
        slopes = [median_slope(positions, g.step_seconds[1:]) * 1000 for g in (cached, plain)]
        c, u = sum(cached.step_seconds), sum(plain.step_seconds)
        print(f"{n:>10} {c:9.2f} {u:11.2f} {u / c:7.2f}x {str(cached.new_ids == plain.new_ids):>5} "
              f"{slopes[0]:+14.4f} {slopes[1]:+16.4f}", flush=True)
    for n in args.tokens:
        ids = torch.tensor([(prompt * n)[: len(prompt) + n]], device=device)
        with torch.no_grad():
            t = interleaved_medians({"last": partial(model, ids, last_only=True), "all": partial(model, ids)}, 7)
        print(f"one uncached step at {ids.shape[1]} positions: last position only {t['last'] * 1000:.1f} ms, "
              f"every position {t['all'] * 1000:.1f} ms ({t['all'] / t['last']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
