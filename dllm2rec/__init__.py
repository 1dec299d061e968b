"""dllm2rec: distil an LLM-based sequential recommender (BIGRec) into conventional students (DLLM2Rec)."""

__version__ = "0.1.0"
