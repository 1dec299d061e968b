"""Small synthetic datasets and teacher artifacts in the artifact contract's exact schema.

``write_synthetic_dataset(dir, ...)`` writes ``items.parquet`` and ``sequences.parquet`` with a
planted next-item rule: each sequence is a chain where the next item is ``succ[previous]`` with
probability ``p_rule`` (else uniform), ``succ`` a fixed random permutation. Rows are in timestamp
order and split 80/10/10 chronologically; seq_ids are not row numbers (so joins must use seq_id).

``write_synthetic_teacher(dir, data_dir, ...)`` writes ``ranks/{split}.parquet``,
``item_embeddings.parquet`` and ``generated_embeddings/{split}.parquet`` for that dataset. With
probability ``quality`` a row's rank-1 item is ``succ[last history item]`` (the rule); the other
N-1 items are random. Ranks rows are shuffled (joins must use seq_id). Reusable by any test:
``from synthetic import write_synthetic_dataset, write_synthetic_teacher`` (tests/ is on sys.path).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dllm2rec.dataset import fingerprint as dataset_fingerprint
from dllm2rec import teacher_artifacts as ta
from dllm2rec.io import write_parquet


def _write(table: pa.Table, path: Path, metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata is not None:  # as the package's writers record it (dllm2rec.io.write_parquet)
        table = table.replace_schema_metadata({b"dllm2rec": json.dumps(metadata).encode()})
    pq.write_table(table, path)


def successor(n_items: int, seed: int = 0) -> np.ndarray:
    """The planted rule: next item = succ[item] (a fixed random permutation)."""
    return np.random.default_rng(seed + 1000).permutation(n_items).astype(np.int64)


def write_synthetic_dataset(dir, n_items: int = 60, n_sequences: int = 1000, max_history: int = 10,
                            p_rule: float = 0.8, min_history: int = 1, seed: int = 0) -> dict:
    """Write {dir}/items.parquet and {dir}/sequences.parquet; returns {"succ", "n_items", "splits"}."""
    dir = Path(dir)
    rng = np.random.default_rng(seed)
    succ = successor(n_items, seed)
    histories, targets = [], []
    for _ in range(n_sequences):
        length = int(rng.integers(min_history, max_history + 1))
        chain = [int(rng.integers(n_items))]
        for _ in range(length):
            chain.append(int(succ[chain[-1]]) if rng.random() < p_rule else int(rng.integers(n_items)))
        histories.append(chain[:-1])
        targets.append(chain[-1])
    n_train, n_valid = int(0.8 * n_sequences), int(0.1 * n_sequences)
    split = ["train"] * n_train + ["valid"] * n_valid + ["test"] * (n_sequences - n_train - n_valid)
    seq_id = np.arange(n_sequences, dtype=np.int64) * 7 + 3
    _write(pa.table({
        "item_id": pa.array(np.arange(n_items), pa.int32()),
        "raw_id": pa.array([f"i{i}" for i in range(n_items)], pa.string()),
        "title": pa.array([f"Item number {i}" for i in range(n_items)], pa.string()),
    }), dir / "items.parquet")
    _write(pa.table({
        "seq_id": pa.array(seq_id, pa.int64()),
        "user": pa.array([f"u{i % 97}" for i in range(n_sequences)], pa.string()),
        "history": pa.array(histories, pa.list_(pa.int32())),
        "target": pa.array(targets, pa.int32()),
        "timestamp": pa.array(1_000_000 + np.arange(n_sequences, dtype=np.int64) * 60, pa.int64()),
        "split": pa.array(split, pa.string()),
    }), dir / "sequences.parquet")
    return {"succ": succ, "n_items": n_items, "splits": {s: split.count(s) for s in ("train", "valid", "test")}}


def write_synthetic_teacher(dir, data_dir, topn: int = 20, width: int = 16, quality: float = 1.0,
                            seed: int = 0, rule_seed: int = 0) -> None:
    """Write the teacher artifacts for the dataset in ``data_dir`` (see the module doc).
    ``rule_seed`` must be the dataset's ``seed`` for the teacher to know its rule."""
    dir, data_dir = Path(dir), Path(data_dir)
    rng = np.random.default_rng(seed + 7)
    n_items = pq.read_table(data_dir / "items.parquet").num_rows
    succ = successor(n_items, rule_seed)
    seqs = pq.read_table(data_dir / "sequences.parquet").to_pydict()
    identity = {"dataset_fingerprint": dataset_fingerprint(data_dir)}  # as the teacher's writers record it
    by_split: dict[str, list[int]] = {}
    for row, s in enumerate(seqs["split"]):
        by_split.setdefault(s, []).append(row)
    for split, rows in by_split.items():
        rows = list(rng.permutation(rows))  # shuffled: joins must go by seq_id
        items, dists, tdist = [], [], []
        for r in rows:
            first = int(succ[seqs["history"][r][-1]]) if rng.random() < quality else int(rng.integers(n_items))
            others = rng.permutation(np.delete(np.arange(n_items), first))[: topn - 1]
            lst = np.concatenate([[first], others]).astype(np.int32)
            d = np.sort(rng.uniform(5.0, 20.0, topn)).astype(np.float32)
            target = seqs["target"][r]
            hit = np.flatnonzero(lst == target)
            items.append(lst)
            dists.append(d)
            tdist.append(float(d[hit[0]]) if len(hit) else float(rng.uniform(20.0, 30.0)))
        _write(pa.table({
            "seq_id": pa.array([seqs["seq_id"][r] for r in rows], pa.int64()),
            "generated": pa.array([f'"Item number {int(x[0])}"' for x in items], pa.string()),
            "topk_items": pa.array(items, pa.list_(pa.int32())),
            "topk_dist": pa.array(dists, pa.list_(pa.float32())),
            "target_dist": pa.array(tdist, pa.float32()),
        }), dir / "ranks" / f"{split}.parquet", identity)
        gen = rng.normal(size=(len(rows), width)).astype(np.float16)
        _write(pa.table({
            "seq_id": pa.array([seqs["seq_id"][r] for r in rows], pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(gen.reshape(-1), pa.float16()), width),
        }), dir / "generated_embeddings" / f"{split}.parquet", identity)
    emb = rng.normal(size=(n_items, width)).astype(np.float32)
    order = rng.permutation(n_items)  # rows not in item order: joins must use item_id
    _write(pa.table({
        "item_id": pa.array(order, pa.int32()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb[order].reshape(-1), pa.float32()), width),
    }), dir / "item_embeddings.parquet", identity)
    write_synthetic_knowledge(dir, data_dir, width, seed)


def write_synthetic_knowledge(dir, data_dir, width: int = 16, seed: int = 0) -> None:
    """KAR's knowledge vectors (dllm2rec/teacher/knowledge.py): one random unit vector per item,
    and per sequence the vector of its user (the same for every sequence of one user)."""
    dir, rng = Path(dir), np.random.default_rng(seed + 11)
    n_items = pq.read_table(data_dir / "items.parquet").num_rows
    seqs = pq.read_table(data_dir / "sequences.parquet").to_pydict()
    item_vec = rng.normal(size=(n_items, width)).astype(np.float32)
    item_vec /= np.linalg.norm(item_vec, axis=1, keepdims=True)
    meta = {"dim": width}
    path = ta.path(dir, "knowledge_item_embeddings")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(ta.item_embeddings_table(np.arange(n_items), item_vec), path, metadata=meta)
    users = sorted(set(seqs["user"]))
    user_vec = dict(zip(users, rng.normal(size=(len(users), width)).astype(np.float32)))
    for split in ("train", "valid", "test"):
        rows = [r for r, s in enumerate(seqs["split"]) if s == split]
        emb = np.stack([user_vec[seqs["user"][r]] for r in rows]) if rows else np.zeros((0, width), np.float32)
        path = ta.path(dir, "knowledge_user_embeddings", split)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(ta.generated_embeddings_table([seqs["seq_id"][r] for r in rows], emb, np.float32), path,
                      metadata=meta)
