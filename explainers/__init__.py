"""One module per tab; TABS is the order they appear in."""
from explainers import attention, causal_mask, embeddings, kv_cache, lm_head, moe, overview, tokenizer

TABS = [overview, tokenizer, embeddings, causal_mask, attention, lm_head, moe, kv_cache]
