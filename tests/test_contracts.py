"""Each artifact's file names and columns are spelled only in the module that owns them
(docs/artifacts.md): paths in dllm2rec/layout.py, columns in the contract modules. The test reads
every string literal of the package (docstrings excepted) and every line of the workflow rules."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from dllm2rec import layout
from dllm2rec.data.sources import SOURCES
from dllm2rec.dataset import ITEMS_SCHEMA, SEQUENCES_SCHEMA
from dllm2rec.teacher_artifacts import RANKS_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dllm2rec"

# a teacher part's name ("ranks", "generated_embeddings") is also the key methods ask for; its
# folder is spelled with the slash
FILE_NAMES = sorted({*layout.DATASET_FILES.values(), *layout.RUN_FILES.values(), layout.SFT_INFO, layout.CHECKPOINT,
                     layout.POPULARITY,
                     "item_embeddings.parquet", "ranks/", "generated_embeddings/", "results/"})
# columns that name nothing else in the code (user, title, split, embedding ... are ordinary words)
COLUMNS = ["seq_id", "item_id", "raw_id", "history", "topk_items", "topk_dist", "target_dist", "generated"]
OWNERS = {
    "layout.py": "paths",
    "dataset.py": "columns",
    "teacher_artifacts.py": "columns",
    "student_run.py": "columns",
}
# Narrow, named exceptions: the data stage's raw readers parse *source* formats (RecBole's item_id
# header), samples.py builds the two tables that dataset.write_dataset checks against its schema,
# and the generator's result dict is keyed by the ranks columns (teacher_artifacts.ranks_table
# reads it by those names).
EXCEPTIONS = {
    "data/movielens.py": {"item_id"},
    "data/samples.py": {"seq_id", "item_id", "raw_id", "history"},
    "teacher/generate.py": {"generated", "topk_items", "topk_dist", "target_dist"},
    # so do the other kinds of teacher (a recommender's ranking, released-format files imported)
    "teacher/recommender.py": {"generated", "topk_items", "topk_dist", "target_dist"},
    "teacher/released.py": {"generated", "topk_items", "topk_dist", "target_dist"},
    # the serving API names a history entry's kind (--by) and each result's fields after the dataset's columns
    "recommend.py": {"item_id", "raw_id", "history"},
    "serve.py": {"history"},  # the HTTP API's field, as recommend's --history
}


def string_literals(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def offences(path: Path, rel: str):
    owner = OWNERS.get(rel)
    for lineno, text in string_literals(path):
        if owner != "paths":
            for name in FILE_NAMES:
                if name in text:
                    yield f"{rel}:{lineno}: file name {name!r} in {text!r}"
        if owner is None:
            for column in set(COLUMNS) - EXCEPTIONS.get(rel, set()):
                if re.fullmatch(rf"\s*{column}\s*", text):
                    yield f"{rel}:{lineno}: column {column!r}"


def test_file_names_and_columns_live_in_their_contract_modules():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += offences(path, path.relative_to(PACKAGE).as_posix())
    assert not found, "\n".join(found)


def test_workflow_rules_take_every_path_from_the_layout():
    found = []
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for name in FILE_NAMES:
                if name in code:
                    found.append(f"{path.name}:{lineno}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_grep_sees_a_misplaced_name(tmp_path):
    """The check above can fail: a stage that spells a file name or a column is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text('"""docstrings may say items.parquet"""\nPATH = "out/items.parquet"\nt.column("seq_id")\n')
    assert [o.split(": ", 1)[1] for o in offences(bad, "student/bad.py")] == [
        "file name 'items.parquet' in 'out/items.parquet'", "column 'seq_id'"]


def test_the_contract_schemas_hold_the_columns_checked_here():
    names = {f.name for schema in (ITEMS_SCHEMA, SEQUENCES_SCHEMA, RANKS_SCHEMA) for f in schema}
    assert set(COLUMNS) - {"embedding"} <= names


def test_the_schema_lists_exactly_the_data_sources():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    enum = schema["$defs"]["dataset"]["properties"]["source"]["enum"]
    assert enum == list(SOURCES)


def test_the_schema_sweeps_exactly_figure2s_parameters():
    from dllm2rec.sweeps import FIGURE2_PARAMS, sweep_params, sweep_point

    from dllm2rec.schema import config_schema

    figure2 = config_schema()["properties"]["tables"]["properties"]["figure2"]["properties"]
    assert set(figure2) - {"backbone"} == set(FIGURE2_PARAMS)
    assert sweep_point({"student": {}, "method": {}, "sweep": sweep_params("gamma_c", 0.25)}) == ("gamma_c", 0.25)
    assert sweep_point({"student": {}, "method": {"type": "dllm2rec"}}) is None and sweep_point(None) is None


def test_load_dataset_reads_and_checks_the_dataset_contract(tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import pytest

    from synthetic import write_synthetic_dataset

    from dllm2rec.dataset import load_dataset
    from dllm2rec.io import UserError

    info = write_synthetic_dataset(tmp_path / "d", n_items=30, n_sequences=100)
    ds = load_dataset(tmp_path / "d")
    assert ds.n_items == 30 and ds.name == "d"
    assert {s: ds.split(s).num_rows for s in ("train", "valid", "test")} == info["splits"]
    padded = ds.padded()
    assert padded.history.shape == (100, int(padded.lengths.max())) and (padded.history[padded.lengths < padded.history.shape[1], -1] == 30).all()

    seqs = pq.read_table(tmp_path / "d" / "sequences.parquet")
    no_valid = seqs.set_column(seqs.schema.get_field_index("split"), "split",
                               pc.replace_substring(seqs.column("split"), "valid", "train"))
    pq.write_table(no_valid, tmp_path / "d" / "sequences.parquet")
    with pytest.raises(UserError, match=r"sequences\.parquet: split 'valid' is empty; rebuild the dataset"):
        load_dataset(tmp_path / "d")
    pq.write_table(seqs.drop_columns(["target"]), tmp_path / "d" / "sequences.parquet")
    with pytest.raises(UserError, match=r"missing column\(s\) \['target'\]"):
        load_dataset(tmp_path / "d")
