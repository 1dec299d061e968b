"""Serve a trained student: the top-K items for users' histories, without the pipeline.

Python::

    from dllm2rec.recommend import Recommender, recommend

    rec = Recommender.load("results/students/ml-100k/smollm2-135m/dros/dllm2rec/seed0/model.pt")
    rec.recommend([[49, 99, 180], [1, 2]], k=10)            # item ids, oldest first
    rec.recommend([["Star Wars (1977)", "Fargo (1996)"]], by="title", exclude_history=True)
    recommend(model_path, histories, k=10)                  # the same, loading the model each call

Command line (``python -m dllm2rec recommend``)::

    python -m dllm2rec recommend --model M/model.pt --history 49 99 180 --k 10
    python -m dllm2rec recommend --model M/model.pt --by title --history "Star Wars (1977)" "Fargo (1996)"
    python -m dllm2rec recommend --model M/model.pt --file histories.txt --out top10.json   # or .csv

Each result is one list per history, best first, of ``{"rank", "item_id", "raw_id", "title",
"score"}``: ``score`` is the student's own output for the item (its logit, higher is better,
exactly what evaluation ranks by). The scoring is the trained one: the method's item table
saved in model.pt (DLLM2Rec's enriched embeddings included) fed to the backbone, in eval mode.

Rules:

- **Histories** are oldest first, as in ``sequences.parquet``; a history longer than the
  model's ``max_len`` keeps its last ``max_len`` items (what the student was trained on).
- **Entries** are looked up with ``by``: ``item_id`` (0..n-1, the dataset's ids; digit strings
  accepted), ``raw_id`` (the source's ids, e.g. ml-100k movie ids) or ``title`` (exact title
  from ``items.parquet``). An empty history, an unknown entry or a title shared by several items
  is refused with a :class:`~dllm2rec.io.UserError` naming it.
- **Nothing is excluded by default** (the paper's full ranking does not exclude history items
  either); ``exclude_history=True`` drops the history's own items from the list, all of them,
  also those before the model's window.
- **Methods**: KAR and LLM-CF add LLM features to the sequence state at inference (KAR the
  knowledge vector of the sequence's user, LLM-CF retrieval over the teacher's train
  generations); model.pt does not hold those, so their students are refused. Every other
  method's student scores from model.pt alone.
- **Items and titles** come from the dataset folder given with ``data``, else from
  ``results/data/{dataset}/items.parquet`` with ``{dataset}`` the name recorded in the model
  (never read from the model's path): under the nearest folder above the model that holds it (a
  model inside ``results/students/...`` finds the ``results/data`` beside it), else under the
  working directory. A dataset whose content differs from the one the student was trained on
  (the fingerprint recorded in the model) is refused.
- **Model files** are read by :mod:`dllm2rec.student_run` (safetensors, no pickle: loading one
  runs no code); a model of the old pickled format is refused with the command that re-saves it.

A student can be exported with :func:`export_student` (``python -m dllm2rec export-student``) to
a ``torch.export`` program (``.pt2``; TorchScript is deprecated in this torch and ONNX needs
packages that are not installed): ``torch.export.load(path).module()(history, lengths)`` maps
``history`` [B, max_len] long (right-padded with ``n_items``) and ``lengths`` [B] long to scores
[B, n_items]. :class:`Recommender` loads a ``.pt2`` like a ``model.pt``.
"""
from __future__ import annotations

import csv
import difflib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from dllm2rec import dataset as ds
from dllm2rec import layout
from dllm2rec.io import UserError, atomic_path, read_parquet
from dllm2rec import student_run

BY = ("item_id", "raw_id", "title")  # the dataset's item columns a history entry may name
EXPORT_META = "dllm2rec.json"  # the metadata file inside an exported .pt2
MODEL = layout.RUN_FILES["model"]
ITEMS = layout.DATASET_FILES["items"]


# --- loading -------------------------------------------------------------------------------
def default_data_dir(model, dataset: str) -> Path | None:
    """The folder of ``dataset`` (the name the model records; ``layout.data_dir``) under the
    nearest folder above ``model`` that holds it, else under the working directory; None when
    neither does."""
    rel = Path(layout.data_dir(dataset))
    for root in (*Path(model).resolve().parents, Path.cwd()):
        if (root / rel).is_dir():
            return root / rel
    return None


def _check_servable(meta: dict, model: Path) -> None:
    from dllm2rec.distill.base import DistillMethod, get_method

    cls = get_method(meta["method_type"])
    if cls.adjust_state is not DistillMethod.adjust_state:
        raise UserError(
            f"{model}: method {meta['method']!r} adds teacher features to each sequence at inference "
            "(KAR: the knowledge vector of the sequence's user; LLM-CF: retrieval over the teacher's train "
            f"generations), which {MODEL} does not hold, so it cannot be served on its own. "
            "Serve a student of another method (e.g. dllm2rec or none).")


class _Scorer(torch.nn.Module):
    """history [B, max_len] (right-padded with n_items), lengths [B] -> scores [B, n_items]."""

    def __init__(self, student, item_table: torch.Tensor):
        super().__init__()
        self.student = student
        self.register_buffer("item_table", item_table.detach().clone())

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.student.scores(self.student.encode(history, lengths, self.item_table))


def _load_scorer(model: Path, device: str) -> tuple[torch.nn.Module, dict]:
    """(scorer, meta) from a model.pt or an exported .pt2; meta: n_items, max_len, backbone, method."""
    if model.suffix == ".pt2":
        if not model.exists():
            raise UserError(f"exported student not found: {model}")
        extra = {EXPORT_META: ""}
        try:
            program = torch.export.load(str(model), extra_files=extra)
        except Exception as err:  # noqa: BLE001 - truncated or not an exported program: say which file
            raise UserError(f"{model}: cannot read it as an exported program ({err.__class__.__name__}); "
                            "export it again with `python -m dllm2rec export-student`") from None
        if not extra[EXPORT_META]:
            raise UserError(f"{model}: not a student exported by `python -m dllm2rec export-student`")
        meta = json.loads(extra[EXPORT_META])
        if torch.device(meta["device"]).type != torch.device(device).type:
            raise UserError(f"{model} was exported for device {meta['device']}; serve it there, or export "
                            f"the {MODEL} again with --device {device}")
        return program.module(), meta
    student, table, m = student_run.load_student(model, device)  # the model file, read once (safetensors)
    _check_servable(m, model)
    meta = {k: m[k] for k in ("n_items", "max_len", "backbone", "method", "seed", "dataset", "dataset_fingerprint")}
    meta.update(source=str(model.resolve()), device=str(device))
    return _Scorer(student, table).to(device).eval(), meta


class Recommender:
    """A loaded student plus the dataset's items (``data``: the dataset folder they came from);
    :meth:`recommend` serves histories."""

    def __init__(self, scorer, meta: dict, items, device: str = "cpu", data=None):
        self.scorer, self.meta, self.device = scorer, meta, torch.device(device)
        self.data = None if data is None else Path(data)
        self.n_items, self.max_len = int(meta["n_items"]), int(meta["max_len"])
        ids = items.column("item_id").to_numpy()
        order = np.argsort(ids)
        raw_ids, titles = items.column("raw_id").to_pylist(), items.column("title").to_pylist()
        self.raw_ids = [raw_ids[i] for i in order]
        self.titles = [titles[i] for i in order]
        self._by_raw = {str(r): i for i, r in enumerate(self.raw_ids)}
        self._by_title: dict[str, list[int]] = {}
        for i, t in enumerate(self.titles):
            if t is not None:
                self._by_title.setdefault(t, []).append(i)

    @classmethod
    def load(cls, model, data=None, device: str = "cpu") -> "Recommender":
        """Load ``model`` (a ``model.pt`` or an exported ``.pt2``) and the items of its dataset
        (``data``: a dataset folder; default: the folder of the dataset the model records, see the module doc)."""
        model = Path(model)
        scorer, meta = _load_scorer(model, str(device))
        if data is None:
            if not meta.get("dataset"):
                raise UserError(f"{model} does not record its dataset (exported by an older version): export it "
                                "again with `python -m dllm2rec export-student`, or pass --data with its dataset's folder")
            data = default_data_dir(meta.get("source", model), meta["dataset"])
            if data is None:
                raise UserError(f"{model}: its dataset {meta['dataset']!r} is not at {layout.data_dir(meta['dataset'])} "
                                "above the model nor under the working directory: pass --data with that dataset's folder")
        path = ds.paths(data)["items"]
        items = read_parquet(path, "items table")
        if items.num_rows != int(meta["n_items"]) or sorted(items.column("item_id").to_pylist()) != list(range(items.num_rows)):
            raise UserError(f"{path} has {items.num_rows} items, the model "
                            f"{meta['n_items']}: pass --data with the dataset the student was trained on")
        recorded = meta.get("dataset_fingerprint")
        if recorded and ds.fingerprint(data) != recorded:
            raise UserError(f"{model} was trained on dataset {meta.get('dataset')!r} with fingerprint {recorded}, "
                            f"but {data} holds another one ({ds.fingerprint(data)}): pass --data with the dataset "
                            "the student was trained on, or retrain the student on this one")
        return cls(scorer, meta, items, device, data)

    # --- histories -> tensors ----------------------------------------------------------------
    def item_index(self, entry, by: str = "item_id", where: str = "") -> int:
        """The item id of one history entry (``by`` = item_id | raw_id | title)."""
        at = f"{where}: " if where else ""
        if by == "item_id":
            try:
                i = int(entry) if not isinstance(entry, (bool, float)) else None
            except (TypeError, ValueError):
                i = None
            if i is None or not 0 <= i < self.n_items:
                raise UserError(f"{at}unknown item id {entry!r}: item ids are 0..{self.n_items - 1} "
                                "(use --by raw_id or --by title for the source's ids or titles)")
            return i
        if by == "raw_id":
            if str(entry) not in self._by_raw:
                raise UserError(f"{at}unknown raw item id {entry!r} (the dataset's {ITEMS} has no such raw_id)")
            return self._by_raw[str(entry)]
        if by == "title":
            hits = self._by_title.get(str(entry), [])
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise UserError(f"{at}title {entry!r} is shared by items {hits}: give item ids instead (--by item_id)")
            close = difflib.get_close_matches(str(entry), self._by_title, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise UserError(f"{at}unknown title {entry!r} (titles must match {ITEMS} exactly){hint}")
        raise UserError(f"by must be one of {', '.join(BY)}, got {by!r}")

    def item_ids(self, histories, by: str = "item_id") -> list[list[int]]:
        """Each history's entries as item ids, whole (not cut to the model's window)."""
        rows = []
        for h, hist in enumerate(histories):
            if isinstance(hist, (str, bytes, int)):
                raise UserError(f"history {h + 1}: {hist!r} is not a list of items (pass a list of histories)")
            if not len(hist):
                raise UserError(f"history {h + 1} is empty: a student needs at least one item")
            rows.append([self.item_index(e, by, f"history {h + 1}") for e in hist])
        return rows

    def encode_histories(self, histories, by: str = "item_id") -> tuple[torch.Tensor, torch.Tensor]:
        """(history [B, max_len] right-padded with n_items, lengths [B]); the last max_len items kept."""
        return self._encode(self.item_ids(histories, by))

    def _encode(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [row[-self.max_len:] for row in ids]
        history = torch.full((len(rows), self.max_len), self.n_items, dtype=torch.long)
        for r, ids in enumerate(rows):
            history[r, :len(ids)] = torch.tensor(ids)
        lengths = torch.tensor([len(ids) for ids in rows], dtype=torch.long)
        return history, lengths

    # --- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores over all items [B, n] for encoded histories (see :meth:`encode_histories`)."""
        return self.scorer(history.to(self.device), lengths.to(self.device))

    @torch.no_grad()
    def recommend(self, histories, k: int = 10, by: str = "item_id", exclude_history: bool = False,
                  batch_size: int = 1024) -> list[list[dict]]:
        """Top-``k`` items for each history: ``[[{"rank", "item_id", "raw_id", "title", "score"}, ...], ...]``."""
        k = int(k)
        if k < 1:
            raise UserError(f"k must be a positive integer, got {k}")
        ids = self.item_ids(histories, by)
        history, lengths = self._encode(ids)
        out = []
        for start in range(0, len(history), int(batch_size)):
            h, n = history[start:start + int(batch_size)], lengths[start:start + int(batch_size)]
            whole = ids[start:start + int(batch_size)]  # the whole history, also beyond the model's window
            s = self.scores(h, n).float()
            if exclude_history:  # history items sort last, then are dropped
                seen = torch.zeros(len(h), self.n_items, dtype=torch.bool)
                for r, row in enumerate(whole):
                    seen[r, row] = True
                s = s.masked_fill(seen.to(s.device), float("-inf"))
            top = s.topk(min(k, self.n_items), dim=1)
            for hist, vals, idx in zip(whole, top.values.cpu().tolist(), top.indices.cpu().tolist()):
                drop = set(hist) if exclude_history else ()
                kept = [(v, i) for v, i in zip(vals, idx) if i not in drop]
                out.append([{"rank": r + 1, "item_id": i, "raw_id": self.raw_ids[i], "title": self.titles[i],
                             "score": v} for r, (v, i) in enumerate(kept)])
        return out


def recommend(model, histories, k: int = 10, by: str = "item_id", exclude_history: bool = False, data=None,
              device: str = "cpu") -> list[list[dict]]:
    """One-shot :meth:`Recommender.recommend`: load ``model`` (and its dataset's items), serve
    ``histories`` (a list of histories, each a list of entries, oldest first). See the module doc."""
    return Recommender.load(model, data, device).recommend(histories, k, by, exclude_history)


# --- command line -------------------------------------------------------------------------
def read_histories(path, by: str = "item_id") -> list[list]:
    """Histories from a file: ``.json`` holds a list of histories; otherwise one history per line,
    entries separated by tabs (for ``item_id``/``raw_id`` also by spaces or commas), or a line
    that is a JSON list (for ``title``: of strings; any other line is titles, so a title may start
    with ``[`` or ``{``). Blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"histories file not found: {path}")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, list) or not all(isinstance(h, list) for h in data):
            raise UserError(f"{path}: expected a JSON list of histories (lists of items)")
        return data
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and by != "title":
            try:
                hist = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{no}: not a valid JSON list ({err})") from None
        elif by == "title" and line.startswith("[") and _json_list(line) is not None:
            hist = _json_list(line)
        elif "\t" in line or by == "title":  # titles: tab-separated, any characters ("[REC] (2007)")
            hist = [e.strip() for e in line.split("\t") if e.strip()]
        else:
            hist = line.replace(",", " ").split()
        out.append(hist)
    if not out:
        raise UserError(f"{path}: no history in it (one history per line)")
    return out


def _json_list(line: str) -> list | None:
    """``line`` as a JSON list of strings, or None when it is not one (then it is titles)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _cli_histories(history, file, by: str) -> list[list]:
    if (history is None) == (file is None):
        raise UserError("give the histories with --history ITEM ... or with --file FILE (one history per line)")
    if file is not None:
        return read_histories(file, by)
    if isinstance(history, list) and history and all(isinstance(h, list) for h in history):
        return history  # --history '[[1, 2], [3]]': several histories
    return [history if isinstance(history, list) else [history]]


def write_results(histories, results, out) -> None:
    """``out``: ``.json`` (a list of {"history", "items"}) or ``.csv`` (history, rank, item_id, raw_id, title, score)."""
    out = Path(out)
    if out.suffix not in (".json", ".csv"):
        raise UserError(f"--out {out}: use a .json or .csv file name")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; it is left as it is: give a file name (e.g. {out / 'top.csv'})")
    with atomic_path(out) as tmp:
        if out.suffix == ".json":
            tmp.write_text(json.dumps([{"history": h, "items": r} for h, r in zip(histories, results)], indent=1) + "\n")
        elif out.suffix == ".csv":
            with tmp.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["history", "rank", "item_id", "raw_id", "title", "score"])
                for n, items in enumerate(results, 1):
                    w.writerows([n, x["rank"], x["item_id"], x["raw_id"], x["title"], x["score"]] for x in items)
        else:
            raise UserError(f"--out {out}: use a .json or .csv file name")


def recommend_command(model: str, history: list[str] | None = None, file: str | None = None, data: str | None = None,
                      k: int = 10, by: str = "item_id", exclude_history: bool = False, out: str | None = None,
                      device: str = "cpu", threads: int | None = None) -> None:
    """Print the top-k items of a student for each history, or write them to out (.json or .csv).
    history: the items of one history, oldest first (or one JSON list of histories); file: one
    history per line instead; by: item_id, raw_id or title; data: the dataset folder (default:
    the folder of the dataset the model records)."""
    if threads is not None:
        if int(threads) < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))
    if int(k) < 1:
        raise UserError(f"--k must be a positive integer, got {k}")
    if by not in BY:
        raise UserError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    if not isinstance(exclude_history, bool):
        exclude_history = str(exclude_history).lower() in ("1", "true", "yes")
    if isinstance(history, list) and len(history) == 1 and isinstance(history[0], list):
        history = history[0]  # --history '[[3, 7], [5]]' (several histories) or '[3, 7]' (one)
    if isinstance(history, list) and not [h for h in history if str(h).strip()]:
        raise UserError("--history is empty: give at least one item (e.g. --history 49 99 180)")
    if file is not None:
        try:
            Path(file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"--file {file}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
        except OSError as err:
            raise UserError(f"--file {file}: cannot read it ({err.strerror})") from None
    histories = _cli_histories(history, file, by)
    rec = Recommender.load(model, data, device)
    results = rec.recommend(histories, int(k), by, exclude_history)
    if out is not None:
        write_results(histories, results, out)
        print(f"wrote the top-{k} of {len(results)} histories to {out}")
        return
    for n, (hist, items) in enumerate(zip(histories, results), 1):
        print(f"history {n}: {' | '.join(map(str, hist))}")
        print(f"  {'rank':>4}  {'item_id':>7}  {'score':>9}  title")
        for x in items:
            print(f"  {x['rank']:>4}  {x['item_id']:>7}  {x['score']:>9.4f}  {x['title'] or x['raw_id']}")


# --- export ---------------------------------------------------------------------------------
def export_student(model: str, out: str, device: str = "cpu") -> None:
    """Export a student's scoring (item table + backbone) to a ``torch.export`` program ``out``
    (``.pt2``): ``torch.export.load(out).module()(history, lengths) -> scores``, any batch size;
    ``history`` [B, max_len] right-padded with ``n_items``, on the ``device`` it was exported
    for. Its metadata (n_items, max_len, backbone, method, device, source model) is stored in the
    file (``dllm2rec.json``)."""
    model, out = Path(model), Path(out)
    if out.suffix != ".pt2":
        raise UserError(f"--out {out}: the exported program is a .pt2 file")
    scorer, meta = _load_scorer(model, device)
    example = (torch.full((2, meta["max_len"]), 0, dtype=torch.long, device=device),
               torch.full((2,), meta["max_len"], dtype=torch.long, device=device))
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        # nn.GRU re-assigns its flat weights while traced; the exported program is still exact (tested)
        warnings.filterwarnings("ignore", message=".*_flat_weights.*were assigned during export")
        program = torch.export.export(scorer, example, dynamic_shapes=({0: batch}, {0: batch}))
    with atomic_path(out) as tmp:
        torch.export.save(program, str(tmp), extra_files={EXPORT_META: json.dumps(meta)})
    print(f"exported {model} to {out}")
