"""The tabs in their chapters: CHAPTERS is the order the page shows them, TABS the same tabs in one list."""
from explainers.tabs import attention, beam_search, block, causal_mask, embeddings, kv_cache, lm_head, moe  # noqa: I001
from explainers.tabs import compare, finetune, overview, patching, quantization, residual, steering, tokenizer
from explainers.tabs import instruct, parallel, preference, scaling, training

CHAPTERS = [  # (title, its tabs); a chapter with no tabs is not drawn
    ("The whole model", [overview]),
    ("Text to tokens", [tokenizer, embeddings]),
    ("Inside a block", [causal_mask, attention, block, moe, residual]),
    ("Out to text", [lm_head, beam_search, compare]),
    ("Learning", [training, finetune, instruct, preference, scaling, parallel]),
    ("Beyond", [kv_cache, patching, steering, quantization]),
]
TABS = [module for _, modules in CHAPTERS for module in modules]


def tab_id(module) -> str:
    """A tab's id, in deep links and in the page: its module's name (`?tab=attention`)."""
    return module.__name__.rsplit(".", 1)[-1]
