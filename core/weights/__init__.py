"""Where weights come from: the zoo of named models, conversion from transformers, GGUF blocks, tokenizers."""
