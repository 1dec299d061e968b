"""Hyperparameter search on validation: the grid points of a method and the choice among them.

A method's config entry may carry ``search: {key: [values, ...]}``. Each key is one of the
method's options (its dataclass in :mod:`dllm2rec.distill.spec`) or one of the student keys in
:data:`STUDENT_KEYS` (``lr``, ``weight_decay``, ...); a key that is both (KAR's ``dropout``) is the
method's option, and ``student.<key>`` names the student key explicitly. Every combination of
the listed values is a **grid point**: a run named ``<method>@<key>=<value>,...`` (keys in the
order written, values as ``{:g}``), e.g. ``dllm2rec@lambda_d=0.3,weight_decay=1e-06``, with its
own run folder. The workflow (``workflow/rules/config.smk``) adds each point as a method that
extends the searched one, and records ``{"method": <searched method>, "values": {...}}`` under
``params.search`` of the point's ``metrics.json``.

The ``selection`` rule (:func:`select`) picks, per dataset x backbone x searched method, the
point with the best **validation** NDCG@20 averaged over seeds (ties: the first point in grid
order); test metrics are written beside it for reading only. The tables then read the chosen
point's runs as the searched method (:func:`table_method`). ``selection.csv`` columns:
:data:`COLUMNS`.

Standard library only (and :mod:`dllm2rec.evaluate`'s metric names, which import no more):
Snakemake imports it while it builds the DAG.
"""
from __future__ import annotations

import csv
import io
import itertools
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass

from dllm2rec.evaluate import SELECT_METRIC, TABLE_METRICS

# student keys a grid may vary (config `student.<key>`; each changes training, not only speed)
STUDENT_KEYS = ("lr", "weight_decay", "dropout", "hidden", "batch_size")
STUDENT_PREFIX = "student."
SELECT_ON = ("valid", SELECT_METRIC)  # the validation metric the choice maximises
MEAN_COLUMNS = [f"{split}_{k}" for split in ("valid", "test") for k in TABLE_METRICS]  # valid_HR@20, ...
COLUMNS = ["dataset", "backbone", "method", "point", "values", "seeds", *MEAN_COLUMNS, "chosen"]
_NAME_OK = re.compile(r"^[A-Za-z0-9_.@=,+-]+$")


class SearchError(ValueError):
    """A bad ``search`` entry; the message names ``methods.<name>.search.<key>`` and the fix."""


@dataclass(frozen=True)
class Point:
    """One grid point: its run name, the searched method, and the values it sets."""

    name: str
    method: str
    values: dict  # {key as written: value}
    method_options: dict  # {option: value} put into the method's entry
    student: dict  # {student key: value} put into the student config


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


def point_name(method: str, values: dict) -> str:
    """``dllm2rec@lambda_d=0.3,weight_decay=1e-06``."""
    return f"{method}@" + ",".join(f"{k}={format_value(v)}" for k, v in values.items())


def classify(key: str, options: dict) -> tuple[str, str]:
    """("method" | "student", the option or student key) for a search key; ``options``: the
    method's option names."""
    if key.startswith(STUDENT_PREFIX):
        return "student", key[len(STUDENT_PREFIX):]
    if key in options:
        return "method", key
    return "student", key


def grid_points(name: str, search: dict, options: dict) -> list[Point]:
    """Every combination of ``search`` (the ``methods.<name>.search`` entry) as a :class:`Point`,
    in grid order (the first key varies slowest). ``options``: {option name: type} of the
    method's dataclass. Keys and values are checked here (a SearchError names the key)."""
    where = f"methods.{name}.search"
    if not isinstance(search, dict) or not search:
        raise SearchError(f"{where} must map option or student keys to lists of values, e.g. "
                          "{lambda_d: [0.1, 0.5], weight_decay: [0, 1.0e-6]}")
    for key, values in search.items():
        kind, target = classify(key, options)
        if kind == "student" and target not in STUDENT_KEYS:
            raise SearchError(
                f"{where}.{key}: not an option of this method ({', '.join(options) or 'it has none'}) nor a "
                f"student key that a search may vary ({', '.join(STUDENT_KEYS)}).")
        if not isinstance(values, list) or not values:
            raise SearchError(f"{where}.{key} must be a non-empty list of values; got {values!r}")
        if kind == "student" and any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values):
            raise SearchError(f"{where}.{key}: student.{target} takes numbers >= 0; got {values!r} "
                              "(write 1.0e-4, not 1e-4: YAML reads 1e-4 as a string)")
        if len({format_value(v) for v in values}) != len(values):
            raise SearchError(f"{where}.{key} lists a value twice (as written in run names: "
                              f"{[format_value(v) for v in values]})")
    points = []
    for combo in itertools.product(*search.values()):
        values = dict(zip(search, combo))
        method_options, student = {}, {}
        for key, value in values.items():
            kind, target = classify(key, options)
            (method_options if kind == "method" else student)[target] = value
        pname = point_name(name, values)
        if not _NAME_OK.match(pname):
            raise SearchError(f"{where}: the run name {pname!r} has characters a path cannot carry; "
                              "use plain numbers, words or true/false as values")
        points.append(Point(pname, name, values, method_options, student))
    return points


def table_method(identity: dict) -> str:
    """The method a run counts as in the tables: the searched method for a grid point (from its
    ``params.search``), else the run's own method."""
    search = (identity.get("params") or {}).get("search") or {}
    return search.get("method") or identity["method"]


# --- the choice -------------------------------------------------------------------------------
def select(students, out: str, html: str | None = None) -> None:
    """``selection.csv`` from the grid points' ``metrics.json`` (``students``): one row per
    dataset x backbone x method x point with its mean validation and test HR@20 / NDCG@20 over
    seeds, ``chosen`` = 1 on the point with the best mean validation NDCG@20 (ties: the first
    given). Test metrics are reported, never used. ``html``: the same rows as the report's page."""
    from dllm2rec import render, student_run
    from dllm2rec.io import UserError, atomic_path

    paths = [students] if isinstance(students, str) else list(students)
    groups = defaultdict(dict)  # (dataset, backbone, method) -> {point: [metrics]}
    for path in paths:
        m = student_run.read_metrics(path)
        search = (m.get("params") or {}).get("search")
        if not search:
            raise UserError(f"{path}: not a grid point (its params have no `search`); the selection reads only "
                            "the runs of methods with a `search` grid")
        if "valid" not in m:
            raise UserError(f"{path}: no validation metrics; rerun the student rule for it")
        groups[m["dataset"], m["backbone"], search["method"]].setdefault(m["method"], []).append((path, m))
    rows = [COLUMNS]
    for (d, b, method), points in groups.items():
        seed_sets = {p: sorted(m["seed"] for _, m in runs) for p, runs in points.items()}
        if len({tuple(s) for s in seed_sets.values()}) > 1:
            raise UserError(f"selection of {method} on {d}/{b}: the points were run with different seeds "
                            f"({seed_sets}); every point needs the same seeds")
        split, metric = SELECT_ON
        score = {p: statistics.fmean(m[split][metric] for _, m in runs) for p, runs in points.items()}
        best = max(points, key=lambda p: score[p])  # max keeps the first of equal scores
        for p, runs in points.items():
            mean = {f"{s}_{k}": statistics.fmean(m[s][k] for _, m in runs)
                    for s in ("valid", "test") for k in TABLE_METRICS}
            values = runs[0][1]["params"]["search"]["values"]
            rows.append([d, b, method, p, ",".join(f"{k}={format_value(v)}" for k, v in values.items()),
                         " ".join(map(str, seed_sets[p])), *(f"{mean[c]:.6f}" for c in MEAN_COLUMNS),
                         int(p == best)])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())
    if html:
        cells = [[*r[:6], *(render.num(float(v)) for v in r[6:10]), "yes" if r[10] else ""] for r in rows[1:]]
        with atomic_path(html) as tmp:
            tmp.write_text(render.html_page("Hyperparameter selection on validation", COLUMNS, cells))


def read_choice(path) -> dict:
    """{(dataset, backbone, method): chosen point} from ``selection.csv``."""
    with open(path, newline="") as f:
        return {(r["dataset"], r["backbone"], r["method"]): r["point"] for r in csv.DictReader(f) if r["chosen"] == "1"}
