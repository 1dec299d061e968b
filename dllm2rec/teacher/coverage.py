"""Teacher coverage: which training sequences the teacher generates for.

``teachers.<name>.generation.train_coverage`` is ``all`` (the paper setting and the default),
an integer count of training sequences, or a fraction in (0, 1]; ``train_coverage_seed``
seeds the subset. Only the train split is ever subsetted: valid and test are generated in full
(the teacher's metrics and the methods that use the teacher at inference need them). The
students distil only on the covered rows (docs/teacher.md, "Teacher coverage").

Standard library only at import time: ``workflow/rules/config.smk`` validates the key with
:func:`parse_coverage` while Snakemake builds the DAG.
"""
from __future__ import annotations

from dllm2rec.io import UserError

ALL = "all"
KEY = "train_coverage"
SEED_KEY = "train_coverage_seed"


def parse_coverage(value, where: str = f"generation.{KEY}"):
    """``"all"``, an int >= 1 or a float in (0, 1]; anything else is a UserError naming ``where``."""
    if value is None or value == ALL:
        return ALL
    if isinstance(value, bool):
        pass
    elif isinstance(value, int) and value >= 1:
        return value
    elif isinstance(value, float) and 0.0 < value <= 1.0:
        return value
    raise UserError(f"{where} must be `all`, a number of training sequences (an integer >= 1) or a "
                    f"fraction in (0, 1] (e.g. 0.25); got {value!r}")


def is_partial(value) -> bool:
    """False for ``all`` (and absent); True for a count or a fraction, even one that covers every row
    (the count is only known against a dataset: see :func:`covered_count`)."""
    return parse_coverage(value) != ALL


def covered_count(n_rows: int, value, where: str = f"generation.{KEY}") -> int:
    """How many of ``n_rows`` training sequences ``value`` covers (a fraction is rounded, at least 1)."""
    value = parse_coverage(value, where)
    if value == ALL:
        return n_rows
    if isinstance(value, int):
        if value > n_rows:
            raise UserError(f"{where} = {value}, but the training split has only {n_rows} sequences: "
                            "lower it, or use `all`.")
        return value
    return min(n_rows, max(1, round(value * n_rows)))


def covered_positions(n_rows: int, value, seed: int = 0, where: str = f"generation.{KEY}"):
    """Sorted row positions (numpy int64) of the covered sequences among ``n_rows`` train rows in
    seq_id order: every row for ``all``, else a seeded random subset of :func:`covered_count` rows."""
    import numpy as np

    count = covered_count(n_rows, value, where)
    if count == n_rows:
        return np.arange(n_rows, dtype=np.int64)
    chosen = np.random.default_rng(int(seed)).permutation(n_rows)[:count]
    return np.sort(chosen).astype(np.int64)
