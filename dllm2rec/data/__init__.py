"""Data stage: raw datasets -> items.parquet, sequences.parquet, stats.json (docs/method.md §1, docs/datasets.md)."""
