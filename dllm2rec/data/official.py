"""The official DLLM2Rec exchange format (the authors' DROS-style files), both directions.

A folder holds
* ``train_data.df``: pandas pickle, columns ``seq`` (list of ``seq_size`` ids, the history oldest
  first, right-padded with the padding id n), ``len_seq`` (int), ``next`` (the target, int);
* ``val_data.csv``, ``test_data.csv``: the same columns as CSV; ``seq`` written as ``"[1, 2, ...]"``
  and ``next`` as a float (``16713.0``), as the released files are (on import, any split may also
  be a pickle or CSV spelled ``Val_data.df``, ``val_data.df``, ``Test_data.csv``, ...: SPELLINGS);
* ``data_statis.df``: pandas pickle, one row, ``seq_size`` and ``item_num`` (= n); optional on
  import (derived from the files when absent, and said so; ``data_statis.csv`` is read too);

Pickles are read by :func:`read_pickle_safely`, which admits only the globals a DataFrame of ints
and lists needs (:data:`PICKLE_ALLOWED`), so a payload in a downloaded release never runs;
:func:`convert_official` (``--trust-pickle``) converts a trusted folder that needs more to CSV.
* ``id2name.txt`` (optional): ``id::name`` per line (``name<TAB>id`` and ``id<TAB>name`` are read too).

The official files carry no users or timestamps: an import uses the row order (train, then
valid, then test) as the timestamp and as the seq_id, and a user named after the row.
"""
from __future__ import annotations

import ast
import csv
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from dllm2rec.data.lines import Report, iter_lines, open_binary
from dllm2rec.data.raw import usable_title
from dllm2rec.data.samples import SPLITS, SampleSet
from dllm2rec.dataset import histories, load_dataset, targets
from dllm2rec.io import UserError, atomic_path

FILES = {"train": "train_data.df", "valid": "val_data.csv", "test": "test_data.csv"}
STATIS = ("data_statis.df", "data_statis.csv")


# ----------------------------------------------------------------------------------------- import
def _tab_order(path: Path, report: Report) -> str:
    """``"name_id"`` when the file's tab lines are ``name<TAB>id`` (some line has a number only on
    the right), else ``"id_name"``: decided once per file, so a name that is a number (``5<TAB>1984``)
    is read the same way round as the file's other lines."""
    with open_binary(path) as fh:
        for _, text in iter_lines(fh, str(path), Report()):
            if "::" in text or "\t" not in text:
                continue
            left, right = text.split("\t", 1)[0].strip(), text.rsplit("\t", 1)[1].strip()
            if right.isdigit() and not left.isdigit():
                return "name_id"
            if left.isdigit() and not right.isdigit():
                return "id_name"
    return "id_name"


def read_id2name(path: Path, report: Report) -> dict[str, str]:
    """raw id -> name from ``id::name``, ``name<TAB>id`` or ``id<TAB>name`` lines (first wins; the
    tab order is the file's, :func:`_tab_order`)."""
    names: dict[str, str] = {}
    order = None
    with open_binary(path) as fh:
        for lineno, text in iter_lines(fh, str(path), report):
            raw_id = name = None
            if "::" in text and text.split("::", 1)[0].strip():
                raw_id, name = text.split("::", 1)
            elif "\t" in text:
                order = order or _tab_order(path, report)
                if order == "name_id":
                    name, raw_id = text.rsplit("\t", 1)
                else:
                    raw_id, name = text.split("\t", 1)
            if raw_id is None or not raw_id.strip():
                report.drop("malformed_title_lines", f"{path}:{lineno}")
                continue
            raw_id = raw_id.strip()
            if raw_id in names:
                report.drop("duplicate_title_records", f"{path}:{lineno}")
                continue
            names[raw_id] = name
    return names


def _int(value, where: str, what: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {what} {value!r} is not a number. Re-export the file.") from None
    if not math.isfinite(f) or not f.is_integer():
        raise UserError(f"{where}: {what} {value!r} is not an integer id. Re-export the file.")
    return int(f)


def _seq(value, where: str) -> list:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise UserError(f"{where}: seq {value[:60]!r} is not a list like \"[1, 2, 3]\". "
                            f"Re-export the file.") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{where}: seq must be a list of item ids, got {type(value).__name__}. Re-export the file.")
    return list(value)


# Accepted names of each split file, in order of preference: the released DLLM2Rec files
# (train_data.df, val_data.csv, test_data.csv) and the capitalised pickles of the LLaRA family
# (Val_data.df, Test_data.df); the format follows the suffix (.df = pandas pickle, .csv = CSV).
SPELLINGS = {split: [f"{stem}{ext}" for ext in ((".df", ".csv") if split == "train" else (".csv", ".df"))
                     for stem in (base, base.capitalize())]
             for split, base in (("train", "train_data"), ("valid", "val_data"), ("test", "test_data"))}


def split_file(directory: Path, split: str) -> Path:
    """The file of ``split`` in an official folder, under any accepted spelling."""
    for name in SPELLINGS[split]:
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"official dataset folder {directory}: no {split} file ({' / '.join(SPELLINGS[split])}) "
                    f"found. The folder needs a train, a validation and a test file (docs/datasets.md).")


# --- pickles, read without running code --------------------------------------------------------
# The globals a pickled pandas DataFrame of ints, floats and lists of ints refers to (pandas 1.x to
# 3.x, numpy 1.x and 2.x, pickle protocols 2 to 5; docs/datasets.md). A pickle naming any other one
# is refused before anything in it is built: a pickle can call any global it names, and that is
# how a payload runs code.
PICKLE_ALLOWED = {
    "builtins": {"slice", "bytearray"},
    "__builtin__": {"slice", "bytearray"},  # protocol 2 spells builtins so
    "_codecs": {"encode"},  # protocol 2 stores bytes as _codecs.encode(text, "latin1")
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
    "pandas": {"DataFrame", "Index", "RangeIndex", "StringDtype"},
    "pandas.core.frame": {"DataFrame"},
    "pandas.core.indexes.base": {"Index", "_new_Index"},
    "pandas.core.indexes.range": {"RangeIndex"},
    "pandas.core.indexes.numeric": {"Int64Index", "UInt64Index", "Float64Index"},
    "pandas.core.internals.managers": {"BlockManager"},
    "pandas.core.internals.blocks": {"new_block"},
    "pandas._libs.internals": {"_unpickle_block"},
    # pandas 3 stores string column names as Arrow-backed strings
    "pandas.arrays": {"ArrowStringArray"},
    "pandas.core.arrays.string_": {"StringDtype"},
    "pandas.core.arrays.string_arrow": {"ArrowStringArray"},
    "pyarrow.lib": {"_restore_array", "py_buffer", "type_for_alias"},
}


class RefusedPickle(Exception):
    """A pickle names a global outside :data:`PICKLE_ALLOWED`."""


def read_pickle_safely(path: Path):
    """The object in a pandas pickle, unpickled with only :data:`PICKLE_ALLOWED`'s globals
    (through pandas' own compatibility unpickler, which maps the names older pandas wrote)."""
    from pandas.compat.pickle_compat import Unpickler

    class Restricted(Unpickler):
        def find_class(self, module, name):
            if name not in PICKLE_ALLOWED.get(module, ()):
                raise RefusedPickle(f"{module}.{name}")
            return super().find_class(module, name)

    with open(path, "rb") as fh:
        return Restricted(fh).load()


def _read_df(path: Path):
    try:
        return read_pickle_safely(path)
    except RefusedPickle as err:
        raise UserError(
            f"{path}: not loaded: the pickle calls {err}, which a DataFrame of ints and lists does not need, so it "
            f"could run code. If you trust the file, convert the folder to CSV once with `python -m dllm2rec "
            f"convert-official --trust-pickle {path.parent} --out DIR` and point paths.dir at DIR.") from None
    except Exception as err:  # noqa: BLE001 - truncated or not a pickle: say which file
        raise UserError(f"{path}: not a readable pandas pickle ({err.__class__.__name__}: {str(err)[:160]}). "
                        f"Re-export {path.name}.") from None


def _rows(path: Path):
    """Yield (where, seq, len_seq, next) for each row of one split file, in file order."""
    if path.suffix == ".df":
        df = _read_df(path)
        if not isinstance(df, pd.DataFrame):
            raise UserError(f"{path}: holds a {type(df).__name__}, not a pandas DataFrame. Re-export {path.name}.")
        missing = {"seq", "len_seq", "next"} - set(df.columns)
        if missing:
            raise UserError(f"{path}: columns {sorted(missing)} missing (need seq, len_seq, next).")
        for i, (s, n, t) in enumerate(zip(df["seq"].tolist(), df["len_seq"].tolist(), df["next"].tolist())):
            yield f"{path}: row {i}", s, n, t
        return
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"seq", "len_seq", "next"} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{path}:1: columns {sorted(missing)} missing (need seq,len_seq,next).")
            for i, row in enumerate(reader):
                yield f"{path}:{i + 2}", row["seq"], row["len_seq"], row["next"]
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err}). Re-export the file.") from None


def read_statis(directory: Path) -> tuple[int, int] | None:
    """(seq_size, item_num) from data_statis.df (or its CSV spelling data_statis.csv), or None
    when the folder has neither."""
    statis_path = next((directory / f for f in STATIS if (directory / f).is_file()), None)
    if statis_path is None:
        return None
    statis = _read_df(statis_path) if statis_path.suffix == ".df" else None
    try:
        if statis is None:
            statis = pd.read_csv(statis_path)
        seq_size, n = int(statis["seq_size"].iloc[0]), int(statis["item_num"].iloc[0])
    except Exception as err:  # noqa: BLE001
        raise UserError(f"{statis_path}: need a table with columns seq_size and item_num ({err}).") from None
    if n < 1 or seq_size < 1:
        raise UserError(f"{statis_path}: item_num {n} and seq_size {seq_size} must be positive.")
    return seq_size, n


def derive_statis(directory: Path, rows: list) -> tuple[int, int]:
    """(seq_size, item_num) when data_statis.df is absent: seq_size is the longest ``seq``; the
    padding id (the value after ``len_seq`` in every padded row) is item_num, as in the files this
    format comes from; with no padded row at all, item_num is the largest id + 1."""
    seq_size = max((len(seq) for _, seq, _, _, _ in rows), default=0)
    pads: set[int] = set()
    real = -1
    for where, seq, length, nxt, _ in rows:
        pads.update(_int(v, where, "padding") for v in seq[length:])
        real = max(real, nxt)
    if len(pads) > 1:
        raise UserError(f"official dataset folder {directory}: no data_statis.df, and the padding ids differ "
                        f"({sorted(pads)[:5]}), so item_num cannot be derived. Add data_statis.df "
                        f"(one row: seq_size, item_num).")
    if pads:
        n = pads.pop()
        for where, seq, length, nxt, _ in rows:
            real = max([real, *(v for v in (_int(x, where, "seq item") for x in seq[:length]) if v != n)])
        if n <= real:
            raise UserError(f"official dataset folder {directory}: no data_statis.df, and the padding id {n} is "
                            f"not above every item id (largest {real}), so item_num cannot be derived. "
                            f"Add data_statis.df (one row: seq_size, item_num).")
    else:
        for where, seq, length, _, _ in rows:
            real = max([real, *(_int(x, where, "seq item") for x in seq[:length])])
        n = real + 1
    if n < 1 or seq_size < 1:
        raise UserError(f"official dataset folder {directory}: no data_statis.df and no rows to derive it from.")
    return seq_size, n


def read_official(params: dict, name: str, max_history: int):
    """Items (order, titles), samples with their fixed split, a report, base stats, seq_size and
    source_info (the files read, and whether the statistics were derived)."""
    paths = params.get("paths") or {}
    if not paths.get("dir"):
        raise UserError(f"dataset {name!r} (source 'official') needs datasets.{name}.paths.dir: the folder with "
                        f"train_data.df, val_data.csv, test_data.csv (data_statis.df optional). "
                        f"See docs/datasets.md.")
    directory = Path(paths["dir"]).expanduser()
    if not directory.is_dir():
        raise UserError(f"dataset {name!r}: paths.dir {directory} is not a folder. Point it at the folder that "
                        f"holds the official files.")
    report = Report()
    files = {split: split_file(directory, split) for split in SPLITS}
    raw = []  # (where, seq, len_seq, next, split index)
    for k, split in enumerate(SPLITS):
        for where, s, length, nxt in _rows(files[split]):
            seq = _seq(s, where)
            length = _int(length, where, "len_seq")
            if not 0 <= length <= len(seq):
                raise UserError(f"{where}: len_seq {length} is outside 0..{len(seq)} (the length of seq).")
            raw.append((where, seq, length, _int(nxt, where, "next"), k))
    info = {"dir": str(directory), "files": {split: files[split].name for split in SPLITS}}
    statis = read_statis(directory)
    if statis is None:
        statis = derive_statis(directory, raw)
        info["data_statis"] = "derived: seq_size = longest seq, item_num = the padding id (or largest id + 1)"
        report.set("data_statis_derived", 1)
        print(f"[data {name}] {directory}: no data_statis.df; derived seq_size {statis[0]}, "
              f"item_num {statis[1]} from the files", file=sys.stderr)
    seq_size, n = statis
    pool: list[int] = []
    lo, hi, target, labels = [], [], [], []
    for where, seq, length, nxt, k in raw:
        hist = [_int(v, where, "seq item") for v in seq[:length]]
        if hist and all(v == n for v in hist):
            # a first interaction written as len_seq >= 1 with only padding (the LLaRA family's way)
            report.drop("padding_only_histories", where)
            hist = []
        if any(not 0 <= v < n for v in hist) or not 0 <= nxt < n:
            raise UserError(f"{where}: an item id is outside 0..{n - 1} (item_num {n}"
                            f"{' derived from the files' if 'data_statis' in info else ' in data_statis.df'}). "
                            f"The files do not belong together; re-export them.")
        if any(_int(v, where, "padding") != n for v in seq[length:]) or len(seq) != seq_size:
            report.drop("rows_with_nonstandard_padding", where)
        if not hist:
            report.drop("empty_history_skipped", where)
            continue
        if len(hist) > max_history:
            report.drop("histories_truncated", where)
            hist = hist[-max_history:]
        lo.append(len(pool))
        pool.extend(hist)
        hi.append(len(pool))
        target.append(nxt)
        labels.append(k)
    titles = None
    if paths.get("titles") or (directory / "id2name.txt").exists():
        tpath = Path(paths.get("titles") or directory / "id2name.txt").expanduser()
        if not tpath.exists():
            raise UserError(f"dataset {name!r}: paths.titles not found: {tpath}.")
        info["titles"] = str(tpath)
        names = read_id2name(tpath, report)
        titles = {}
        for raw_id, title in names.items():
            if not raw_id.isdigit() or int(raw_id) >= n:
                report.drop("titles_for_unknown_ids", f"{tpath}: id {raw_id}")
                continue
            title = usable_title(title)
            if title is not None:
                titles[str(int(raw_id))] = title
        missing = [i for i in range(n) if str(i) not in titles]
        if missing:
            raise UserError(f"dataset {name!r}: {tpath} names {n - len(missing)} of the {n} items; no usable name "
                            f"for id(s) {', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}. "
                            f"A partly titled dataset cannot feed the teacher. Fix: add the missing 'id::name' "
                            f"lines, or point paths.titles at a complete file.")
    rows = len(target)
    samples = SampleSet(pool=np.asarray(pool, dtype=np.int32), lo=np.asarray(lo, dtype=np.int64),
                        hi=np.asarray(hi, dtype=np.int64), target=np.asarray(target, dtype=np.int32),
                        timestamp=np.arange(rows, dtype=np.int64),
                        user=pa.array([str(i) for i in range(rows)], pa.string()),
                        split=np.asarray(labels, dtype=np.int8))
    order = [str(i) for i in range(n)]
    base = {"users": None, "items": n, "interactions": None}
    return order, titles, samples, report, base, seq_size, info


# ----------------------------------------------------------------------------------------- export
def export_official(data: str, out: str) -> None:
    """Write the dataset in ``data`` (items/sequences.parquet) as an official-format folder ``out``."""
    dataset = load_dataset(data)
    n = dataset.n_items
    seq_size = dataset.seq_size()

    def frame(split: str, next_dtype) -> pd.DataFrame:
        part = dataset.split(split, by_seq_id=True)
        hist = [list(map(int, h)) for h in histories(part)]
        return pd.DataFrame({
            "seq": [h + [n] * (seq_size - len(h)) for h in hist],
            "len_seq": np.asarray([len(h) for h in hist], dtype=np.int64),
            "next": targets(part).astype(next_dtype),
        })

    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        frame("train", np.int64).to_pickle(tmp / FILES["train"])
        frame("valid", np.float64).to_csv(tmp / FILES["valid"], index=False)
        frame("test", np.float64).to_csv(tmp / FILES["test"], index=False)
        pd.DataFrame({"seq_size": [seq_size], "item_num": [n]}).to_pickle(tmp / "data_statis.df")
        titled = [(i, t) for i, t in enumerate(dataset.titles()) if t is not None]
        if titled:
            with open(tmp / "id2name.txt", "w", encoding="utf-8", newline="\n") as fh:
                fh.writelines(f"{i}::{' '.join(str(t).splitlines())}\n" for i, t in titled)


def convert_official(trust_pickle: str, out: str) -> None:
    """``python -m dllm2rec convert-official --trust-pickle DIR --out OUT``: copy an official folder
    whose pickles :func:`read_pickle_safely` refuses to ``OUT`` with every ``.df`` file as CSV
    (``seq`` as ``"[1, 2, 3]"``). It unpickles without restriction, so only for files you trust."""
    src = Path(trust_pickle)
    if not src.is_dir():
        raise UserError(f"convert-official: {src} is not a folder")
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if not f.is_file():
                continue
            if f.suffix != ".df":
                shutil.copy2(f, tmp / f.name)
                continue
            df = pd.read_pickle(f)  # trusted by the user's own word (--trust-pickle)
            if "seq" in df.columns:
                df = df.assign(seq=[list(map(int, np.asarray(v).tolist())) for v in df["seq"]])
            df.to_csv(tmp / f"{f.stem}.csv", index=False)
    print(f"converted {src} to {out}: the .df files as CSV; point paths.dir at it")
