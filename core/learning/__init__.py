"""Changing the weights: the corpus and batches, training from scratch, evaluation, fine-tuning (full and LoRA)."""
