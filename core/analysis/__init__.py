"""Looking inside a forward: the anatomy of a block, embeddings, the logit lens, activation patching,
projections to 2D and 3D, quantization error."""
