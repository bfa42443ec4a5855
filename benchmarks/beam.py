"""Core's beam search vs transformers' on SmolLM2: `python benchmarks/beam.py`.

Four beams, 32 new tokens (no end token, so both run every step), one batched forward per step over the beams with
the KV cache. Target: core within 1.20x of transformers.generate(num_beams=4). Also checks both find the same
beams with the same scores.
"""
import torch
from common import interleaved_medians, report, smollm2_pair

from core.inference.beam import beam_search


def main(width: int = 4, new_tokens: int = 32, reps: int = 3) -> None:
    ours, theirs = smollm2_pair()
    prompt = ours.tokenizer.encode("The history of the printing press begins")
    ids = torch.tensor([prompt])
    theirs.generation_config.eos_token_id = None

    def hf():
        out = theirs.generate(ids, num_beams=width, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                              pad_token_id=0, num_return_sequences=width, return_dict_in_generate=True,
                              output_scores=True)
        return [s[len(prompt):].tolist() for s in out.sequences], out.sequences_scores.tolist()

    def core():
        out = beam_search(ours, prompt, width, new_tokens)
        return [h.ids for h in out.finished], [h.score for h in out.finished]

    with torch.no_grad():
        (hf_ids, hf_scores), (our_ids, our_scores) = hf(), core()
        same = hf_ids == our_ids and max(abs(a - b) for a, b in zip(hf_scores, our_scores)) < 1e-4
        t = interleaved_medians({"transformers beams": hf, "core beam_search": core}, reps)
    report(f"SmolLM2-135M, beam search width {width}, {new_tokens} new tokens, {torch.get_num_threads()} threads, "
           f"median of {reps}; same beams and scores: {same}", t, new_tokens, "tok/s per beam")


if __name__ == "__main__":
    main()
