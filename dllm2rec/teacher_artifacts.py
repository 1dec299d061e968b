"""The teacher's artifacts contract: what the teacher stage writes and the students read.

A teacher folder (``results/teacher/{dataset}/{teacher}``, see :mod:`dllm2rec.layout`) holds

* ``adapter/``: the LoRA adapter and ``teacher_sft.json`` (the config that made it, loss curve);
* ``item_embeddings.parquet``: ``item_id`` int32, ``embedding`` fixed-size list<float32> (the
  base model's embedding of every item title, the ``z_i`` of Eq. 12);
* ``ranks/{split}.parquet``: ``seq_id`` int64, ``generated`` str, ``topk_items`` list<int32>[N],
  ``topk_dist`` list<float32>[N] (squared L2, ascending), ``target_dist`` float32;
* ``generated_embeddings/{split}.parquet``: ``seq_id`` int64, ``embedding`` fixed-size
  list<float16> (the grounding embedding of the generated text; KAR and LLM-CF read it);
* ``metrics.json``: the teacher's test HR/NDCG and inference seconds (Tables 5 and 6), and its
  ``kind`` (how the tables name it: ``BIGRec``, ``SASRec (whole training split)``, ...).

A ``recommender`` teacher (:mod:`dllm2rec.teacher.recommender`) writes ranks, item embeddings
and metrics.json but no adapter and no generated embeddings; so does a ``files`` teacher
(:mod:`dllm2rec.teacher.released`), whose valid and test ranks may be missing.

Teacher rows are joined to the dataset's sequences strictly by ``seq_id``. The readers here
check every file against the dataset and raise a :class:`~dllm2rec.io.UserError` naming the file
and the fix: a sequence the file does not cover, a seq_id listed twice or unknown to the split,
ranked lists of unequal length, item ids outside 0..n-1, item-embedding rows that are not
exactly items 0..n-1. These mean the teacher was made for another dataset (or sampling).
They also refuse what would train silently to a wrong result: NaN or inf in ``topk_dist``,
``target_dist`` or any embedding, and embeddings whose width is not the width of the model that
made them (the base model's ``hidden_size``, recorded in the file's metadata by the writer and in
``resources/models/{teacher}/base.json``; the text encoder's ``dim``). A truncated or corrupt
file names the rule that rewrites it (:func:`rule_for`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from dllm2rec import layout
from dllm2rec.io import UserError, parquet_metadata, read_json, read_parquet, write_json
from dllm2rec.layout import SFT_INFO, TEACHER_FILES
from dllm2rec.teacher import coverage

PARTS = frozenset({"ranks", "item_embeddings", "generated_embeddings"})

RANKS_SCHEMA = pa.schema([
    ("seq_id", pa.int64()), ("generated", pa.string()), ("topk_items", pa.list_(pa.int32())),
    ("topk_dist", pa.list_(pa.float32())), ("target_dist", pa.float32()),
])


def path(teacher_dir, part: str, split: str | None = None) -> Path:
    """The file of ``part`` (a key of ``layout.TEACHER_FILES``) inside a teacher folder."""
    return Path(teacher_dir) / TEACHER_FILES[part].format(split=split)


# the workflow rule that writes each part (named in the messages about a bad file)
RULES = {"item_embeddings": "item_embeddings", "ranks": "teacher_gather", "generated_embeddings": "teacher_gather",
         "text_item_embeddings": "text_embeddings", "text_generated_embeddings": "text_embeddings",
         "knowledge_users": "knowledge", "knowledge_items": "knowledge",
         "knowledge_item_embeddings": "knowledge_embeddings", "knowledge_user_embeddings": "knowledge_embeddings"}


def rule_for(file) -> str | None:
    """The rule that writes the teacher file ``file`` (matched on the end of its path), or None."""
    name = Path(file).as_posix()
    for part in sorted(RULES, key=lambda p: -len(TEACHER_FILES[p])):  # text_embeddings/... before ...
        template = TEACHER_FILES[part]
        for split in ("train", "valid", "test"):
            if name.endswith(template.format(split=split)):
                return RULES[part]
    return None


def embedding_metadata(hidden_size: int, **extra) -> dict:
    """The metadata an embeddings file records: ``hidden_size``, the width of the model that made
    it (the readers refuse a file whose width differs), plus ``extra``."""
    return {**extra, "hidden_size": int(hidden_size)}


def fixed_list(matrix: np.ndarray, dtype) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=dtype)
    flat = pa.array(matrix.reshape(-1), type=pa.from_numpy_dtype(np.dtype(dtype)))
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def ranks_table(seq_ids, columns: dict) -> pa.Table:
    """The ranks table of ``seq_ids``; ``columns`` holds the other columns by name (the generator's
    result dict: generated, topk_items, topk_dist, target_dist)."""
    n = len(seq_ids)
    return pa.table({
        "seq_id": pa.array(np.asarray(seq_ids, dtype=np.int64)),
        "generated": pa.array(columns["generated"], type=pa.string()),
        "topk_items": pa.array(list(columns["topk_items"]), type=pa.list_(pa.int32())) if n else pa.array([], pa.list_(pa.int32())),
        "topk_dist": pa.array(list(columns["topk_dist"]), type=pa.list_(pa.float32())) if n else pa.array([], pa.list_(pa.float32())),
        "target_dist": pa.array(np.asarray(columns["target_dist"], dtype=np.float32)),
    }, schema=RANKS_SCHEMA)


def generated_embeddings_table(seq_ids, embeddings: np.ndarray, dtype=np.float16) -> pa.Table:
    """float16 for the teacher's own; the text encoder keeps its unit vectors in float32."""
    return pa.table({"seq_id": pa.array(np.asarray(seq_ids, dtype=np.int64)),
                     "embedding": fixed_list(embeddings, dtype)})


def item_embeddings_table(item_ids, embeddings: np.ndarray) -> pa.Table:
    return pa.table({"item_id": pa.array(np.asarray(item_ids).astype(np.int32)),
                     "embedding": fixed_list(embeddings, np.float32)})


def knowledge_table(keys, key_type: str, prompts: list[str], texts: list[str]) -> pa.Table:
    """KAR's knowledge texts (dllm2rec/teacher/knowledge.py): ``key_type`` "user" (user str) or
    "item" (item_id int32), with the prompt and the LLM's text."""
    key = pa.array(keys, pa.string()) if key_type == "user" else pa.array(np.asarray(keys, dtype=np.int32))
    return pa.table({"user" if key_type == "user" else "item_id": key, "prompt": pa.array(prompts, pa.string()),
                     "text": pa.array(texts, pa.string())})


def read_knowledge(path, key_type: str) -> tuple[list, list[str]]:
    """(keys, texts) of a :func:`knowledge_table` file."""
    table = read_parquet(path, f"KAR {key_type} knowledge", rule_for(path))
    key = "user" if key_type == "user" else "item_id"
    missing = [c for c in (key, "text") if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: no {missing} column; rerun the {rule_for(path)} rule.")
    return table.column(key).to_pylist(), [t or "" for t in table.column("text").to_pylist()]


def concat_by_seq_id(tables: list[pa.Table]) -> pa.Table:
    """Shard tables concatenated in seq_id order."""
    return pa.concat_tables(tables).sort_by("seq_id")


def seq_ids(table: pa.Table) -> np.ndarray:
    return table.column("seq_id").to_numpy()


def topk_items(table: pa.Table) -> list[list[int]]:
    return table.column("topk_items").to_pylist()


def generated_texts(table: pa.Table, path) -> list[str]:
    """The ``generated`` column of a ranks table (the teacher's raw responses)."""
    if "generated" not in table.column_names:
        raise UserError(f"{path} has no 'generated' column; rerun the teacher (teacher_gather) to write it.")
    return table.column("generated").to_pylist()


def _fix(teacher_dir: Path) -> str:
    return (f"The teacher at {teacher_dir} does not match this dataset's sequences: rerun the teacher "
            "(ranks / embeddings) for this dataset and its sampling, or point to the right teacher.")


def _rerun(path: Path) -> str:
    rule = rule_for(path)
    return (f"Delete it and rerun the rule {rule!r} (snakemake --forcerun {rule} ...)." if rule
            else "Delete it and rerun the teacher rule that writes it.")


def _check_finite(values: np.ndarray, path: Path, name: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0]) if values.ndim > 1 else int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: column {name!r} holds {int(bad.sum())} NaN/inf value(s) (first in row {row}); "
                        f"the teacher run that wrote it went wrong. {_rerun(path)}")


def _base_hidden_size(teacher_dir: Path, meta: dict) -> tuple[int, str] | None:
    """(hidden size, where it comes from) of the teacher's base model, if its base.json is found:
    the one the file's metadata names, else ``resources/models/{teacher}/base.json``."""
    for candidate in (meta.get("base"), layout.base_model(teacher_dir.name)):
        if candidate and str(candidate).endswith(".json") and Path(candidate).is_file():
            size = read_json(candidate).get("hidden_size")
            if size:
                return int(size), str(candidate)
    return None


def _check_width(width: int, path: Path, teacher_dir: Path) -> None:
    """The embeddings' width against the width of the model that made them."""
    meta = parquet_metadata(path, "teacher embeddings", rule_for(path))
    expected = []
    if meta.get("hidden_size") or meta.get("dim"):
        expected.append((int(meta.get("hidden_size") or meta["dim"]), "the width recorded in its metadata"))
    is_text = rule_for(path) in ("text_embeddings", "knowledge_embeddings")  # the text encoder's width
    if not is_text and (base := _base_hidden_size(teacher_dir, meta)):
        expected.append((base[0], f"the hidden size of the base model ({base[1]})"))
    for size, where in expected:
        if width != size:
            raise UserError(f"{path}: embeddings are {width} wide, but {where} is {size}: the file was cut or "
                            f"made by another model. {_rerun(path)}")


def _column(table: pa.Table, name: str, path: Path, teacher_dir: Path) -> pa.Array:
    if name not in table.column_names:
        raise UserError(f"{path}: missing column {name!r} (has {table.column_names}). {_fix(teacher_dir)}")
    return table.column(name).combine_chunks()


def _list_matrix(arr: pa.Array, path: Path, name: str, teacher_dir: Path, dtype) -> np.ndarray:
    """list<T> or fixed_size_list<T> column -> [rows, N] numpy array (every list the same length)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    rows = len(arr)
    if arr.null_count:
        raise UserError(f"{path}: column {name!r} has null rows. {_fix(teacher_dir)}")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        values = arr.flatten()
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        offsets = np.asarray(arr.offsets)
        sizes = np.diff(offsets)
        width = int(sizes[0]) if rows else 0
        if rows and not (sizes == width).all():
            bad = int(np.flatnonzero(sizes != width)[0])
            raise UserError(f"{path}: column {name!r} has lists of unequal length (row {bad} has {sizes[bad]}, "
                            f"row 0 has {width}). {_fix(teacher_dir)}")
        values = arr.flatten()
    else:
        raise UserError(f"{path}: column {name!r} is {arr.type}, expected a list. {_fix(teacher_dir)}")
    if values.null_count:
        raise UserError(f"{path}: column {name!r} has null values. {_fix(teacher_dir)}")
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(rows, width)


def _join(seq_ids: np.ndarray, teacher_ids: np.ndarray, path: Path, teacher_dir: Path) -> np.ndarray:
    """Row of ``teacher_ids`` for each of ``seq_ids``, or a UserError if the sets differ."""
    order = np.argsort(teacher_ids, kind="stable")
    sorted_ids = teacher_ids[order]
    dup = sorted_ids[1:] == sorted_ids[:-1]
    if dup.any():
        raise UserError(f"{path}: seq_id {int(sorted_ids[1:][dup][0])} appears more than once. {_fix(teacher_dir)}")
    pos = np.searchsorted(sorted_ids, seq_ids)
    pos_c = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == seq_ids) if len(sorted_ids) else np.zeros(len(seq_ids), bool)
    if not found.all():
        missing = seq_ids[~found]
        raise UserError(f"{path}: {len(missing)} of the split's {len(seq_ids)} sequences are missing "
                        f"(e.g. seq_id {int(missing[0])}). {_fix(teacher_dir)}")
    if len(teacher_ids) != len(seq_ids):
        extra = np.setdiff1d(teacher_ids, seq_ids)
        raise UserError(f"{path}: {len(extra)} seq_id(s) that the split does not have (e.g. {int(extra[0])}). "
                        f"{_fix(teacher_dir)}")
    return order[pos_c]


def read_ranks(path: Path, seq_ids: np.ndarray, n_items: int, teacher_dir: Path):
    """``(topk_items int64 [S, N], topk_dist float32 [S, N], target_dist float32 [S])`` for the
    sequences ``seq_ids``, in that order."""
    table = read_parquet(path, "teacher ranks", rule_for(path))
    rows = _join(np.asarray(seq_ids, dtype=np.int64), _column(table, "seq_id", path, teacher_dir).to_numpy().astype(np.int64), path, teacher_dir)
    items = _list_matrix(_column(table, "topk_items", path, teacher_dir), path, "topk_items", teacher_dir, np.int64)[rows]
    dist = _list_matrix(_column(table, "topk_dist", path, teacher_dir), path, "topk_dist", teacher_dir, np.float32)[rows]
    if items.shape != dist.shape:
        raise UserError(f"{path}: topk_items has {items.shape[1]} entries per row but topk_dist {dist.shape[1]}. {_fix(teacher_dir)}")
    if items.size and (items.min() < 0 or items.max() > n_items - 1):
        bad = int(items.max()) if items.max() > n_items - 1 else int(items.min())
        raise UserError(f"{path}: item id {bad} is outside 0..{n_items - 1} (this dataset has {n_items} items). "
                        f"{_fix(teacher_dir)}")
    _check_finite(dist, path, "topk_dist")
    target_col = _column(table, "target_dist", path, teacher_dir)
    if target_col.null_count:
        raise UserError(f"{path}: column 'target_dist' has null values. {_fix(teacher_dir)}")
    target = target_col.to_numpy(zero_copy_only=False).astype(np.float32)[rows]
    _check_finite(target, path, "target_dist")
    return np.ascontiguousarray(items), np.ascontiguousarray(dist), np.ascontiguousarray(target)


def read_generated_embeddings(path: Path, seq_ids: np.ndarray, teacher_dir: Path) -> np.ndarray:
    """float32 [S, d]: the generated text's embedding for each of ``seq_ids``, in that order."""
    table = read_parquet(path, "teacher generated embeddings", rule_for(path))
    rows = _join(np.asarray(seq_ids, dtype=np.int64), _column(table, "seq_id", path, teacher_dir).to_numpy().astype(np.int64), path, teacher_dir)
    emb = _list_matrix(_column(table, "embedding", path, teacher_dir), path, "embedding", teacher_dir, np.float32)[rows]
    _check_width(emb.shape[1], Path(path), Path(teacher_dir))
    _check_finite(emb, path, "embedding")
    return np.ascontiguousarray(emb)


def read_item_embeddings(path: Path, n_items: int, teacher_dir: Path | None = None) -> np.ndarray:
    """float32 [n_items, d]: row i is item i's title embedding (every item exactly once, finite)."""
    path = Path(path)
    teacher_dir = path.parent if teacher_dir is None else Path(teacher_dir)
    table = read_parquet(path, "teacher item embeddings", rule_for(path))
    ids = _column(table, "item_id", path, teacher_dir).to_numpy().astype(np.int64)
    if len(ids) != n_items or not np.array_equal(np.sort(ids), np.arange(n_items)):
        raise UserError(f"{path}: has {len(ids)} rows with item ids {ids.min() if len(ids) else '-'}.."
                        f"{ids.max() if len(ids) else '-'}, expected exactly items 0..{n_items - 1} once each. "
                        f"{_fix(teacher_dir)}")
    emb = _list_matrix(_column(table, "embedding", path, teacher_dir), path, "embedding", teacher_dir, np.float32)
    _check_width(emb.shape[1], path, teacher_dir)
    _check_finite(emb, path, "embedding")
    out = np.empty_like(emb)
    out[ids] = emb
    return out


# --- identity: which dataset a teacher file was made from ------------------------------------
def check_dataset(path, fingerprint: str | None, teacher_dir) -> None:
    """A teacher file made from another dataset than the one with ``fingerprint``
    (:func:`dllm2rec.dataset.fingerprint`, recorded by the writers as ``dataset_fingerprint``) is
    refused, whatever its row count; a file that records none (older, or made by hand) is not
    checked."""
    if not fingerprint:
        return
    path = Path(path)
    meta = parquet_metadata(path, "teacher file", rule_for(path))
    recorded = meta.get("dataset_fingerprint")
    if recorded and recorded != fingerprint:
        raise UserError(f"{path} was made from another dataset ({meta.get('dataset') or 'unnamed'}, fingerprint "
                        f"{recorded}) than the one being read with it (fingerprint {fingerprint}): a teacher file "
                        f"copied from another run? {_fix(Path(teacher_dir))}")


# --- coverage: a train split generated for a subset of its sequences ------------------------
def read_coverage(path) -> dict:
    """The coverage a per-sequence teacher file records in its metadata (``train_coverage``,
    ``seed``, ``n_rows``, ``n_covered``; written by ``teacher/generate.py``); ``{}`` for files that
    record none (made before coverage existed: complete)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"teacher file not found: {path}. Run the workflow rule that makes it first.")
    return dict(parquet_metadata(path, "teacher file", rule_for(path)).get("coverage") or {})


def covered_mask(path, seq_ids: np.ndarray, teacher_dir) -> np.ndarray | None:
    """bool [S] over ``seq_ids``: which sequences the file holds, or None when it declares complete
    coverage (the readers then require every sequence, as before). A file that declares partial
    coverage may leave sequences out, but every seq_id it holds must belong to ``seq_ids``."""
    path = Path(path)
    info = read_coverage(path)
    if not coverage.is_partial(info.get(coverage.KEY)):
        return None
    held = read_parquet(path, "teacher file", rule_for(path)).column("seq_id").to_numpy().astype(np.int64)
    mask = np.isin(np.asarray(seq_ids, dtype=np.int64), held)
    if int(mask.sum()) != len(held):
        raise UserError(f"{path}: {len(held) - int(mask.sum())} of its {len(held)} seq_ids are not sequences of "
                        f"this split. {_fix(Path(teacher_dir))}")
    return mask


# --- metrics.json ----------------------------------------------------------------------------
def write_metrics(out, dataset: str, teacher: str | None, test: dict, inference_seconds: float | None, n_test: int,
                  kind: str | None = None, note: str | None = None) -> None:
    """The teacher's test metrics with the run's identity (tables read it from here); ``kind``
    names the teacher in the tables (:func:`teacher_label`), ``note`` says why ``test`` is empty."""
    write_json({"dataset": dataset, "teacher": teacher, "kind": kind or "BIGRec", "test": test,
                "inference_seconds": inference_seconds, "n_test": n_test, **({"note": note} if note else {})}, out)


def teacher_label(metrics: dict) -> str:
    """The teacher's name in the tables: its metrics' ``kind`` (``BIGRec`` for files made before
    teachers had kinds)."""
    return metrics.get("kind") or "BIGRec"


def read_sft_info(adapter_dir) -> dict:
    """The record the SFT stage writes into the adapter folder (settings and the loss ``curve``)."""
    path = Path(adapter_dir) / SFT_INFO
    if not path.exists():
        raise UserError(f"{path} not found: rerun the sft rule for this adapter.")
    return read_json(path)


def read_metrics(path) -> dict:
    metrics = read_json(path)
    missing = [k for k in ("dataset", "test", "inference_seconds") if k not in metrics]
    if missing:
        raise UserError(f"{path}: teacher metrics without {missing}; it was made by an older version, "
                        "rerun the teacher_metrics rule.")
    return metrics
