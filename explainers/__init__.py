"""One module per tab; TABS is the order they appear in."""
from explainers import attention, block, causal_mask, embeddings, kv_cache, lm_head, moe, overview, residual, tokenizer

TABS = [overview, tokenizer, embeddings, causal_mask, attention, block, moe, residual, lm_head, kv_cache]
