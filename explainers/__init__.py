"""One module per tab; TABS is the order they appear in."""
from explainers import causal_mask, embeddings, overview, tokenizer

TABS = [overview, tokenizer, embeddings, causal_mask]
