"""BIGRec teacher: base model, prompts, LoRA SFT, generation + grounding, metrics (docs/method.md §2)."""
