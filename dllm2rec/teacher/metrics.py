"""The teacher's own test metrics (Table 5's teacher row) and inference wall time (Table 6).

The teacher's ranking is its grounded top-N list. A position is a hit when its item is the
target or shares the target's exact title (items with one title are indistinguishable to the
teacher); the 0-based position of the first hit is the rank, and a target missing from the list
is a miss at every K. HR@K / NDCG@K are then computed as for the students, by
:func:`dllm2rec.evaluate.metrics_from_ranks`.
"""
from __future__ import annotations

import numpy as np

from dllm2rec import teacher_artifacts as ta
from dllm2rec import dataset as ds
from dllm2rec.evaluate import metrics_from_ranks
from dllm2rec.io import UserError, parquet_metadata, read_parquet
from dllm2rec.teacher.prompts import item_titles


def hit_ranks(topk_items: list[list[int]], targets, titles: list[str]) -> np.ndarray:
    """0-based rank of the first equivalent-to-target item per row, or -1 (not in the list)."""
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for row, (items, target) in enumerate(zip(topk_items, targets)):
        want = titles[target]
        for pos, item in enumerate(items):
            if item == target or titles[item] == want:
                ranks[row] = pos
                break
    return ranks


def inference_seconds(meta: dict) -> float | None:
    """The teacher's time for a split, from its ranks file's metadata: a recommender's
    ``inference_seconds`` (None for imported files: unknown), or BIGRec's generation plus grounding."""
    if "inference_seconds" in meta:
        return None if meta["inference_seconds"] is None else float(meta["inference_seconds"])
    return float(meta.get("generation_seconds", 0.0) + meta.get("grounding_seconds", 0.0))


def teacher_metrics(data: str, out: str, ranks: str | None = None, teacher: str | None = None,
                    kind: str | None = None) -> None:
    """Test HR@K / NDCG@K, inference seconds and n_test -> ``out`` JSON, with the dataset's and
    the ``teacher``'s names and ``kind`` (how the tables name the teacher, e.g. ``BIGRec``). A
    teacher without test ranks (``type: files`` given train ranks only) gets empty metrics
    (``test`` {}): its table rows stay blank."""
    dataset = ds.load_dataset(data)
    if ranks in (None, "", "None"):
        ta.write_metrics(out, dataset.name, teacher, {}, None, 0, kind=kind,
                         note="no test ranks were given for this teacher")
        return
    table = read_parquet(ranks, "teacher ranks", rule=ta.rule_for(ranks))
    dataset = ds.load_dataset(data)
    test = dataset.split("test", by_seq_id=True)
    table = ta.concat_by_seq_id([table])
    if not np.array_equal(ta.seq_ids(table), ds.seq_ids(test)):
        raise UserError(f"{ranks} does not hold exactly the test sequences of {data} "
                        f"({table.num_rows} rows vs {test.num_rows}); rerun the teacher for this dataset.")
    titles = item_titles(dataset.items)  # as the teacher saw them (prompts.normalize_title)
    r = hit_ranks(ta.topk_items(table), ds.targets(test).tolist(), titles)
    ta.write_metrics(out, dataset.name, teacher, metrics_from_ranks(r), inference_seconds(parquet_metadata(ranks)),
                     int(test.num_rows), kind=kind)
