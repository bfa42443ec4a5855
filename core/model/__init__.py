"""The hooked transformer: config, embeddings and positions, attention and masks, FFN and MoE, hooks, the
activation cache and the KV cache."""
