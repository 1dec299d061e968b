"""Data stage: raw datasets -> items.parquet, sequences.parquet, stats.json (SPEC §1, docs/datasets.md)."""
