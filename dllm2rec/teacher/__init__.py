"""BIGRec teacher: base model, prompts, LoRA SFT, generation + grounding, metrics (SPEC §2)."""
