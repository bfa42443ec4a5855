"""Using a trained model: sampling, generation (greedy, sampled, branches, with or without a KV cache), int8."""
