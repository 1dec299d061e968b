"""The paper's tables, assembled from the stages' JSON outputs (docs/method.md §6: K = 20 in the tables).

A run is identified by what its metrics.json records (:mod:`dllm2rec.student_run`: dataset,
teacher, backbone, method, params, seed; the teacher's metrics.json: dataset), never by its path.
Every table is a mean over the seeds present; ``table5_seeds.csv`` keeps each seed. Tables 1-3
compare the teacher with the plain DROS student, Tables 2-3 and Table 5's intervals and
significance tests read the students' per-sequence ``ranks.parquet`` (docs/tables.md).

Each CSV is data: one number per cell (fractions, not percentages; blank where a value does not
apply), no markup, so ``pandas.read_csv`` reads every metric column as floats. What a person
reads (marks, intervals, gains, percentages) is rendered from the same rows by
:mod:`dllm2rec.render`: an HTML page per table for the report, and ``table5.md``.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from pathlib import Path

from dllm2rec import render, student_run, teacher_artifacts
from dllm2rec.evaluate import NDCG, TABLE_K, TABLE_METRICS, parse_metric, per_sequence
from dllm2rec.dataset import read_stats
from dllm2rec.distill.spec import OPTIONS
from dllm2rec.io import UserError, atomic_path
from dllm2rec.selection import table_method
from dllm2rec.settings import REFERENCE_BACKBONE, backbone_name
from dllm2rec.sweeps import FIGURE2_PARAMS, sweep_point

METRICS = TABLE_METRICS
# the config entries (not method types) the paper's tables name; a type's name is its spec's display
VARIANT_NAMES = {"dllm2rec-official": "+DLLM2Rec (released code)"}
NOT_BASELINES = {"none", "dllm2rec"}


def method_names() -> dict[str, str]:
    """{method: its name in the tables}: every registered method type (dllm2rec/distill/spec.py,
    its ``display``) in registry order, then :data:`VARIANT_NAMES`."""
    return {**{m: cls.display for m, cls in OPTIONS.items()}, **VARIANT_NAMES}


def method_name(method: str) -> str:
    return method_names().get(method, method)


def _as_list(x) -> list:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def load_runs(paths) -> dict:
    """(dataset, backbone, method) -> list of (seed, test metrics dict, full metrics dict)."""
    runs = defaultdict(list)
    for path in _as_list(paths):
        metrics = student_run.read_metrics(path)
        runs[metrics["dataset"], metrics["backbone"], table_method(metrics)].append((metrics["seed"], metrics["test"], metrics))
    return runs


def load_teachers(paths) -> dict:
    """dataset -> the teacher's metrics."""
    teachers = {}
    for path in _as_list(paths):
        metrics = teacher_artifacts.read_metrics(path)
        teachers[metrics["dataset"]] = metrics
    return teachers


def teacher_values(t: dict, keys=None) -> list[float]:
    """The teacher's test metrics (``METRICS`` by default); NaN (a blank cell) where it has none
    (a ``files`` teacher given no test ranks)."""
    return [float(t["test"].get(k, float("nan"))) for k in (keys or METRICS)]


def teacher_seconds(t: dict) -> float:
    s = t.get("inference_seconds")
    return float("nan") if s is None else float(s)


def teachers_label(teachers: dict) -> str:
    """The teacher's name in the tables (one teacher per run: its kind, e.g. ``BIGRec``)."""
    labels = list(dict.fromkeys(teacher_artifacts.teacher_label(t) for t in teachers.values()))
    return " / ".join(labels) or "BIGRec"


def mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def _write_csv(rows: list[list], out: str) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())


def _write_text(text: str, out: str) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(text)


def table4(stats, out: str, html: str | None = None) -> None:
    """Table 4: users, items, interactions, density (a fraction) and rows per split of each dataset."""
    header = ["dataset", "users", "items", "interactions", "density", "train", "valid", "test"]
    rows = []
    for path in _as_list(stats):
        s = read_stats(path)
        split = s.get("rows", {})
        rows.append([s.get("dataset") or Path(path).parent.name, *(s.get(k) for k in ("users", "items", "interactions")),
                     s.get("density"), split.get("train"), split.get("valid"), split.get("test")])  # imports may lack users
    ints = {h: render.integer for h in ("users", "items", "interactions", "train", "valid", "test")}
    write_table(header, rows, out, html, "Table 4: dataset statistics",
                {**ints, "density": lambda x: render.pct(x, 4)})


def load_popularity(paths) -> dict:
    """dataset -> its popularity.json (the popularity and chance reference rows)."""
    from dllm2rec.dataset import read_popularity

    refs = {}
    for path in _as_list(paths):
        ref = read_popularity(path)
        refs[ref["dataset"]] = ref
    return refs


# --- Table 5 -------------------------------------------------------------------------------
# table5.csv: one row per (dataset, row of the table, metric); every value its own column.
TABLE5_COLUMNS = ["dataset", "backbone", "method", "model", "metric", "mean", "std", "seeds", "n", "se",
                  "ci_low", "ci_high", "se_from", "rank", "gain_s", "p_s", "gain_b", "baseline", "p_b"]
REFERENCE_METHODS = ("teacher", "popularity", "chance")  # rows without a backbone, first per dataset


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (q > 0.5) of Student's t with ``df`` degrees of freedom (bisection on
    :func:`t_two_sided_p`)."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > 2 * (1 - q) else (lo, mid)
    return (lo + hi) / 2


def interval(m: float, se: float, n: int) -> tuple[float, float]:
    """The 95 % interval mean ± t(0.975, n - 1) · se, clipped to [0, 1] (the metrics' range)."""
    if se != se or n < 2:
        return float("nan"), float("nan")
    half = t_quantile(0.975, n - 1) * se
    return max(0.0, m - half), min(1.0, m + half)


def se_bound(m: float, n: int) -> float:
    """sqrt(m (1 - m) / (n - 1)): the standard error of a mean of n values in [0, 1] with mean m
    at most (their variance is at most m (1 - m)); exact for hit rates (0/1 values)."""
    return math.sqrt(max(m * (1 - m), 0.0) / (n - 1)) if n and n > 1 and m == m else float("nan")


def sequence_se(ranks: dict, key: tuple, metric: str) -> tuple[float, int]:
    """(standard error, n sequences) of a run's test metric over the test sequences, each
    sequence's value first averaged over the seeds (``ranks``: :func:`load_test_ranks`)."""
    import numpy as np

    by_seq = defaultdict(list)
    for (_, seq), rank in ranks.get(key, {}).items():
        by_seq[seq].append(rank)
    if len(by_seq) < 2:
        return float("nan"), len(by_seq)
    values = [float(np.mean(per_sequence(r, *parse_metric(metric)).numpy())) for r in by_seq.values()]
    return statistics.stdev(values) / math.sqrt(len(values)), len(values)


def dllm2rec_rows(runs: dict, methods: list) -> list[str]:
    """Table 5's DLLM2Rec rows: the listed methods whose runs are of type dllm2rec (their
    ``params.method.type``; e.g. both variants of configs/paper.yaml), or named ``dllm2rec``.
    Each gets its own Gain.S, Gain.B and p-value; none of them counts as a baseline."""
    types = {m: ((full.get("params") or {}).get("method") or {}).get("type")
             for (_, _, m), seeds in runs.items() for _, _, full in seeds}
    return [m for m in methods if m == "dllm2rec" or types.get(m) == "dllm2rec"]


def gain_label(kind: str, row: str, rows: list) -> str:
    """``Gain.S`` / ``Gain.B``, naming the DLLM2Rec row when Table 5 has more than one."""
    return kind if len(rows) == 1 else f"{kind} {method_name(row)}"


def table5_records(teacher, students, methods=None, ranks=None, popularity=None) -> list[dict]:
    """Table 5's rows as records with :data:`TABLE5_COLUMNS` (NaN where a value does not apply)."""
    runs = load_runs(students)
    seq_ranks = load_test_ranks(ranks) if ranks else {}
    teachers = load_teachers(teacher)
    refs = load_popularity(popularity)
    datasets = list(dict.fromkeys([*teachers, *(d for d, _, _ in runs)]))
    backbones = list(dict.fromkeys(b for _, b, _ in runs))
    methods = _as_list(methods) or list(dict.fromkeys(m for _, _, m in runs))
    distilled = dllm2rec_rows(runs, methods)
    baselines = [m for m in methods if m not in NOT_BASELINES and m not in distilled and m in method_names()]
    nan = float("nan")
    out = []

    def n_test(d):
        if d in teachers and teachers[d].get("n_test"):
            return int(teachers[d]["n_test"])
        sizes = [len({seq for _, seq in r}) for (dd, _, _), r in seq_ranks.items() if dd == d]
        return max(sizes) if sizes else 0

    def record(d, backbone, method, model, metric, values, n, se=nan, se_from=""):
        m = mean(values)
        if se != se and n:
            se, se_from = se_bound(m, n), "bound"
        low, high = interval(m, se, n)
        return {"dataset": d, "backbone": backbone, "method": method, "model": model, "metric": metric,
                "mean": m, "std": statistics.stdev(values) if len(values) > 1 else nan, "seeds": len(values),
                "n": n or nan, "se": se, "ci_low": low, "ci_high": high, "se_from": se_from if se == se else "",
                "rank": nan, "gain_s": nan, "p_s": nan, "gain_b": nan, "baseline": "", "p_b": nan}

    for d in datasets:
        n = n_test(d)
        for k in METRICS:
            if d in teachers:
                out.append(record(d, "", "teacher", teacher_artifacts.teacher_label(teachers[d]), k,
                                  teacher_values(teachers[d], [k]), n))
            if d in refs:
                out.append(record(d, "", "popularity", "Popularity", k, [refs[d]["popularity"]["test"][k]], n))
                chance = record(d, "", "chance", "Chance", k, [refs[d]["chance"][k]], n)
                chance.update(se=nan, ci_low=nan, ci_high=nan, se_from="")  # an expectation, exact
                out.append(chance)
        for b in backbones:
            for k in METRICS:
                rows = {}
                for m in methods:
                    seeds = runs.get((d, b, m), [])
                    se, n_seq = sequence_se(seq_ranks, (d, b, m), k) if seq_ranks else (nan, 0)
                    rows[m] = record(d, b, m, method_name(m), k, [r[1][k] for r in seeds],
                                     n_seq or n, se, "sequences" if se == se else "")
                # equal means share a rank (rounded: a mean over seeds of equal hit counts may differ in the last bit)
                distinct = sorted({round(r["mean"], 12) for r in rows.values() if r["mean"] == r["mean"]}, reverse=True)
                for r in rows.values():
                    r["rank"] = distinct.index(round(r["mean"], 12)) + 1 if r["mean"] == r["mean"] else nan
                for m in distilled:
                    r = rows[m]
                    if "none" in rows:
                        r["gain_s"] = relative(r["mean"], rows["none"]["mean"])
                        if seq_ranks:
                            r["p_s"] = significance(seq_ranks, d, b, m, "none", k)[2]
                    present = [x for x in baselines if rows[x]["mean"] == rows[x]["mean"]]
                    if present:
                        best = max(present, key=lambda x: rows[x]["mean"])
                        r["gain_b"], r["baseline"] = relative(r["mean"], rows[best]["mean"]), best
                        if seq_ranks:
                            r["p_b"] = significance(seq_ranks, d, b, m, best, k)[2]
                out += rows.values()
    return out


def relative(new: float, old: float) -> float:
    """(new - old) / old; NaN where old is 0 or missing."""
    return (new - old) / old if old and old == old and new == new else float("nan")


def _csv_value(v) -> str:
    """A CSV cell: floats to 8 significant digits, blank for NaN or None."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return f"{v:.8g}" if isinstance(v, float) else str(v)


def write_table(header: list[str], rows: list[list], out: str, html: str | None = None, title: str = "",
                formats: dict | None = None, note: str = "", extra_rows=None) -> None:
    """``rows`` of plain values -> ``out`` (CSV, data) and, with ``html``, the report's page: each
    column through ``formats[column]`` (a function of render), else :func:`render.generic`;
    ``extra_rows`` (render cells) are appended to the page only (derived rows such as gains)."""
    _write_csv([header] + [[_csv_value(v) for v in r] for r in rows], out)
    if html:
        formats = formats or {}
        cells = [[formats.get(h, render.generic)(v) for h, v in zip(header, r)] for r in rows]
        classes = {len(cells) + i: "gain" for i in range(len(extra_rows or []))}
        _write_text(render.html_page(title, header, cells + list(extra_rows or []), note, classes), html)


def write_records(records: list[dict], columns: list[str], out: str) -> None:
    _write_csv([columns] + [[_csv_value(r[c]) for c in columns] for r in records], out)


def read_records(path: str) -> list[dict]:
    """A tidy table written by :func:`write_records`: numbers as floats (NaN where blank)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"dataset", "backbone", "method", "model", "metric", "se_from", "baseline"}
    return [{k: (v if k in text else float(v) if v != "" else float("nan")) for k, v in r.items()} for r in rows]


def table5(teacher, students, out: str, out_seeds: str, methods=None, ranks=None, popularity=None,
           out_md: str | None = None, html: str | None = None, html_seeds: str | None = None) -> None:
    """Table 5: the teacher, the Popularity and Chance references (``popularity``:
    popularity.json), then per backbone every method; test HR@20 and NDCG@20, mean over seeds.

    ``out`` (table5.csv) is tidy data, one row per dataset x row x metric (:data:`TABLE5_COLUMNS`):
    the mean, the std over seeds (blank for one seed), the number of seeds, ``n`` test sequences,
    the standard error ``se`` and 95 % interval over the test sequences (``se_from`` =
    ``sequences``: from the runs' per-sequence ``ranks``, each sequence averaged over seeds first;
    ``bound``: from the mean alone, exact for HR, an upper bound for NDCG), the ``rank`` among the
    backbone's methods (1 = best; ties share), and on each DLLM2Rec row (:func:`dllm2rec_rows`)
    Gain.S over the plain student and Gain.B over the column's best baseline as fractions, with
    the paired t-test's p-values ``p_s`` and ``p_b`` over every (seed, test sequence).
    ``out_seeds`` (table5_seeds.csv): one row per run, test metrics at every K. ``out_md`` and
    ``html``: the paper's layout (dllm2rec/render.py); ``html_seeds``: the per-seed rows."""
    records = table5_records(teacher, students, methods, ranks, popularity)
    write_records(records, TABLE5_COLUMNS, out)
    if out_md or html:
        header, rows, classes = table5_layout(records)
        if out_md:
            with atomic_path(out_md) as tmp:
                tmp.write_text(render.markdown_table(header, rows) + "\n" + TABLE5_NOTE + "\n")
        if html:
            _write_text(render.html_page(f"Table 5: test {' and '.join(METRICS)}", header, rows, TABLE5_NOTE, classes), html)

    runs = load_runs(students)
    keys = sorted({k for seeds in runs.values() for _, test, _ in seeds for k in test}, key=parse_metric)
    header = ["dataset", "backbone", "method", "seed", *keys, "best_epoch", "train_seconds", "inference_seconds"]
    seed_rows = [[d, b, m, seed, *(test[k] for k in keys), full.get("best_epoch"), full.get("train_seconds"),
                  full.get("inference_seconds")]
                 for (d, b, m), seeds in sorted(runs.items()) for seed, test, full in sorted(seeds, key=lambda r: r[0])]
    write_table(header, seed_rows, out_seeds, html_seeds, "Table 5 per seed: test metrics of every run",
                {**{k: render.num for k in keys}, "train_seconds": render.seconds, "inference_seconds": render.seconds})


TABLE5_NOTE = ("Mean over seeds; in brackets its 95 % interval over the test sequences "
               "(table5.csv: se, ci_low, ci_high). Per backbone and column the best method is bold and the "
               "runner-up underlined, except in a column where the two differ by less than one test hit "
               "(1/n): there no mark is given. Gain.S: DLLM2Rec over the plain student; Gain.B: over the "
               "column's best baseline (named in table5.csv), with the paired t-test's p-value.")


def table5_layout(records: list[dict]) -> tuple[list[str], list[list], dict]:
    """Table 5 as the paper lays it out, from :func:`table5_records` (or :func:`read_records` of
    table5.csv): (header, rows of render cells, {row index: "gain"})."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    columns = [(d, k) for d in datasets for k in METRICS]
    by = {(r["backbone"], r["method"], r["dataset"], r["metric"]): r for r in records}
    row_keys = list(dict.fromkeys((r["backbone"], r["method"]) for r in records if not r["backbone"]))
    row_keys += list(dict.fromkeys((r["backbone"], r["method"]) for r in records if r["backbone"]))
    distilled = {(r["backbone"], r["method"]) for r in records if r["baseline"] or r["gain_s"] == r["gain_s"]}
    ours = list(dict.fromkeys(m for _, m in distilled))

    def marks(b, d, k):
        """{method: marks} of one column: best "b", runner-up "u", none within one test hit."""
        rows = sorted((r for r in records if r["backbone"] == b and r["dataset"] == d and r["metric"] == k
                       and r["rank"] in (1.0, 2.0)), key=lambda r: r["rank"])
        if not rows or not b:
            return {}
        best = [r for r in rows if r["rank"] == 1.0]
        second = [r for r in rows if r["rank"] == 2.0]
        n = best[0]["n"]
        if second and n == n and best[0]["mean"] - second[0]["mean"] < 1.0 / n:
            return {}
        return {**{r["method"]: "b" for r in best}, **{r["method"]: "u" for r in second}}

    col_marks = {(b, d, k): marks(b, d, k) for b in {b for b, _ in row_keys} for d, k in columns}
    header = ["backbone", "model", *(f"{d}: {k}" for d, k in columns)]
    rows, classes = [], {}
    for b, m in row_keys:
        cells = []
        for d, k in columns:
            r = by.get((b, m, d, k))
            if r is None or r["mean"] != r["mean"]:
                cells.append("")
                continue
            note = f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if r["ci_low"] == r["ci_low"] else ""
            cells.append((render.num(r["mean"]), col_marks[b, d, k].get(m, ""), note))
        first = next(r for (bb, mm, _, _), r in by.items() if (bb, mm) == (b, m))
        rows.append([backbone_name(b) if b else "Reference" if m != "teacher" else "Teacher", first["model"], *cells])
        if (b, m) in distilled:
            for kind, g, p in (("Gain.S", "gain_s", "p_s"), ("Gain.B", "gain_b", "p_b")):
                cells = []
                for d, k in columns:
                    r = by.get((b, m, d, k))
                    if r is None or r[g] != r[g]:
                        cells.append("")
                        continue
                    cells.append((render.pct(r[g], sign=True), "", f"(p = {render.p_value(r[p])})" if r[p] == r[p] else ""))
                classes[len(rows)] = "gain"
                rows.append([backbone_name(b), gain_label(kind, m, ours), *cells])
    return header, rows, classes


def _versus_rows(header, rows) -> list[list]:
    """The page-only Gain row of a two-model table (Tables 1 and 6), per dataset: the second
    model over the first on each metric, and the time as "N× faster" / "N× slower"."""
    extra = []
    for first, second in zip(rows[::2], rows[1::2]):
        cells = [first[0], "Gain"]
        for h, a, b in zip(header[2:], first[2:], second[2:]):
            cells.append(render.speedup(a, b) if h == "inference_seconds" else render.pct(relative(b, a), sign=True))
        extra.append(cells)
    return extra


def table6(teacher, students, out: str, backbone: str | None = None, html: str | None = None) -> None:
    """Table 6: the teacher (BIGRec) against the DLLM2Rec student (DROS by default), accuracy and
    inference time; the page adds the Gain row (the student over the teacher; the time as "N× faster")."""
    runs = load_runs(students)
    teachers = load_teachers(teacher)
    backbones = list(dict.fromkeys(b for _, b, _ in runs))
    if not backbones:
        raise UserError("table6 needs student runs of the method dllm2rec; none were given")
    backbone = backbone or (REFERENCE_BACKBONE if REFERENCE_BACKBONE in backbones else backbones[-1])
    header = ["dataset", "model", *METRICS, "inference_seconds"]
    rows = []
    for d, t in teachers.items():
        seeds = runs.get((d, backbone, "dllm2rec"))
        if not seeds:
            raise UserError(f"table6 needs the dllm2rec runs of {backbone} on {d}; add dllm2rec to tables.methods")
        rows.append([d, teacher_artifacts.teacher_label(t), *teacher_values(t), teacher_seconds(t)])
        rows.append([d, f"DLLM2Rec ({backbone_name(backbone)})",
                     *(mean([r[1][k] for r in seeds]) for k in METRICS), mean([r[2]["inference_seconds"] for r in seeds])])
    write_table(header, rows, out, html, "Table 6: the teacher against the distilled student",
                {**{k: render.num for k in METRICS}, "inference_seconds": render.seconds}, extra_rows=_versus_rows(header, rows))


def ablation_table(students, out: str, html: str | None = None) -> None:
    """Tables 7 and 8: each DLLM2Rec variant, then DLLM2Rec itself, per dataset."""
    runs = load_runs(students)
    header = ["dataset", "backbone", "model", *METRICS]
    rows = []
    for d in dict.fromkeys(d for d, _, _ in runs):
        keys = [k for k in runs if k[0] == d]
        keys.sort(key=lambda k: k[2] == "dllm2rec")
        for _, b, m in keys:
            rows.append([d, backbone_name(b), "DLLM2Rec" if m == "dllm2rec" else m,
                         *(mean([r[1][k] for r in runs[d, b, m]]) for k in METRICS)])
    write_table(header, rows, out, html, f"{Path(out).stem.capitalize()}: DLLM2Rec's variants",
                {k: render.num for k in METRICS})


def figure2(students, dllm2rec, out: str, out_table: str, html: str | None = None) -> None:
    """Figure 2: test HR@20 / NDCG@20 of DLLM2Rec with one of lambda_d, gamma_p, gamma_c,
    gamma_o changed (the sweep points: runs whose ``params.sweep`` says which, :mod:`dllm2rec.sweeps`);
    the plain ``dllm2rec`` run is the point at the configured value (``dllm2rec``: its options, JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(students)
    base = dllm2rec if isinstance(dllm2rec, dict) else {}
    points = []  # (param, value, dataset, HR@20, NDCG@20)
    swept = set()
    for (d, _, m), seeds in runs.items():
        values = [mean([r[1][k] for r in seeds]) for k in METRICS]
        sweep = sweep_point(seeds[0][2].get("params"))
        if sweep:
            points.append((*sweep, d, *values))
            swept.add(sweep[0])
        elif m == "dllm2rec":  # at its run's values (a searched dllm2rec: the chosen point's)
            opts = {**base, **seeds[0][2].get("params", {}).get("method", {})}
            points += [(p, float(opts[p]), d, *values) for p in FIGURE2_PARAMS if p in opts]
    points = sorted({q for q in points if q[0] in swept})  # a parameter held at its value is not drawn
    if not points:
        raise UserError("figure2: no DLLM2Rec sweep runs given (runs whose params record a `sweep`, "
                        "made for tables.figure2)")
    write_table(["param", "value", "dataset", *METRICS], [[p, float(v), d, h, n] for p, v, d, h, n in points], out_table,
                html, "Figure 2's points", {"value": lambda v: f"{v:g}", **{k: render.num for k in METRICS}})

    params = [p for p in FIGURE2_PARAMS if p in swept]
    fig, axes = plt.subplots(2, len(params), figsize=(3.2 * len(params), 5.2), squeeze=False)
    for j, p in enumerate(params):
        for d in dict.fromkeys(q[2] for q in points):
            xs = [(v, h, n) for q, v, dd, h, n in points if q == p and dd == d]
            for i in range(2):
                axes[i][j].plot([x[0] for x in xs], [x[1 + i] for x in xs], marker="o", label=d)
        axes[1][j].set_xlabel(p)
        for i, k in enumerate(METRICS):
            axes[i][0].set_ylabel(k)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


# --- significance (Table 5) --------------------------------------------------------------------
def _betacf(a: float, b: float, x: float, eps: float = 1e-15, max_iter: int = 10000) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    import math

    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if t != t:
        return float("nan")
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_t_test(a, b) -> tuple[float, int, float]:
    """Paired two-sided t-test of ``a`` against ``b`` (same length): (t, df, p). Identical pairs
    give p = 1; a constant non-zero difference gives p = 0."""
    import math

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n < 2:
        return float("nan"), max(n - 1, 0), float("nan")
    m = statistics.fmean(diffs)
    sd = statistics.stdev(diffs)
    if sd == 0.0:
        return (0.0 if m == 0 else math.copysign(math.inf, m)), n - 1, (1.0 if m == 0 else 0.0)
    t = m / (sd / math.sqrt(n))
    return t, n - 1, t_two_sided_p(t, n - 1)


def load_test_ranks(paths) -> dict:
    """(dataset, backbone, method) -> {(seed, seq_id): 0-based test rank} from students' ranks.parquet."""
    out = defaultdict(dict)
    for path in _as_list(paths):
        r = student_run.read_ranks(path, "test")
        key = r.identity
        for seq, rank in zip(r.seq_id, r.rank):
            out[key["dataset"], key["backbone"], table_method(key)][key["seed"], seq] = rank
    return out


def significance(ranks: dict, dataset: str, backbone: str, method: str, other: str, metric: str) -> tuple[float, int, float]:
    """Paired t-test of ``method`` against ``other`` on the per-sequence ``metric`` over every
    (seed, test sequence) both runs share: (t, n pairs, two-sided p)."""
    a, b = ranks.get((dataset, backbone, method), {}), ranks.get((dataset, backbone, other), {})
    common = sorted(set(a) & set(b))
    va = per_sequence([a[c] for c in common], *parse_metric(metric))
    vb = per_sequence([b[c] for c in common], *parse_metric(metric))
    t, _, p = paired_t_test(va.tolist(), vb.tolist())
    return t, len(common), p


# --- Tables 1-3: the teacher against the plain DROS student --------------------------------------
ANALYSIS_K = TABLE_K


def table1(teacher, students, out: str, html: str | None = None) -> None:
    """Table 1: the teacher (BIGRec) against the plain student (DROS + None) per dataset:
    HR@20, NDCG@20 and test inference wall time; the page adds the Gain row (BIGRec over the
    student; the time as "N× slower")."""
    runs = load_runs(students)
    teachers = load_teachers(teacher)
    header = ["dataset", "model", *METRICS, "inference_seconds"]
    rows = []
    for d, t in teachers.items():
        found = [(b, seeds) for (dd, b, _), seeds in runs.items() if dd == d]
        if not found:
            raise UserError(f"table1 needs the plain student's runs (method none) on {d}; none were given")
        b, seeds = found[0]
        rows.append([d, backbone_name(b), *(mean([r[1][k] for r in seeds]) for k in METRICS),
                     mean([r[2]["inference_seconds"] for r in seeds])])
        rows.append([d, teacher_artifacts.teacher_label(t), *teacher_values(t), teacher_seconds(t)])
    write_table(header, rows, out, html, "Table 1: the teacher against the plain student",
                {**{k: render.num for k in METRICS}, "inference_seconds": render.seconds}, extra_rows=_versus_rows(header, rows))


def _analysis_cases(teacher, teacher_ranks, student_ranks, items) -> dict:
    """dataset -> (student name, rows): one row per (seed, test sequence) with the teacher's and the
    student's 0-based rank of the target (teacher: first title-equivalent item of its grounded
    list, as its metrics count it; beyond its list = ANALYSIS_K), the target, and both top-20 lists.
    ``teacher`` (metrics.json, which names the dataset), ``teacher_ranks`` (ranks/test.parquet) and
    ``items`` (the dataset's items.parquet) are given in the same dataset order."""
    from dllm2rec.dataset import read_titles
    from dllm2rec.io import read_parquet
    from dllm2rec.teacher.metrics import hit_ranks

    teacher, teacher_ranks, items = _as_list(teacher), _as_list(teacher_ranks), _as_list(items)
    if not len(teacher) == len(teacher_ranks) == len(items):
        raise UserError("tables 2-3 need one teacher metrics file, test ranks file and items table per dataset")
    titles, teachers = {}, {}
    for m, r, i in zip(teacher, teacher_ranks, items):
        d = teacher_artifacts.read_metrics(m)["dataset"]
        titles[d] = read_titles(i)
        t = read_parquet(r, "teacher ranks")
        teachers[d] = dict(zip(teacher_artifacts.seq_ids(t).tolist(), teacher_artifacts.topk_items(t)))
    out = {}
    for p in _as_list(student_ranks):
        r = student_run.read_ranks(p, "test")
        d = r.identity["dataset"]
        if d not in teachers:
            raise UserError(f"{p}: the teacher's test ranks and the items table of {d} are needed too")
        missing = [s for s in r.seq_id if s not in teachers[d]]
        if missing:
            raise UserError(f"{p}: test sequence {missing[0]} has no teacher ranks; rerun the teacher for {d}")
        t_lists = [teachers[d][s] for s in r.seq_id]
        t_rank = hit_ranks(t_lists, r.target, titles[d])
        backbone = r.identity["backbone"]
        rows = out.setdefault(d, (backbone_name(backbone), []))[1]
        for tr, sr, target, tl, sl in zip(t_rank, r.rank, r.target, t_lists, r.topk):
            rows.append((int(tr) if 0 <= tr < ANALYSIS_K else ANALYSIS_K, min(sr, ANALYSIS_K), target,
                         tl[:ANALYSIS_K], sl[:ANALYSIS_K]))
    return out


def table2(teacher, teacher_ranks, student_ranks, items, out: str, html: str | None = None) -> None:
    """Table 2: over the test sequences (and seeds), the share where the teacher ranks the target
    better than the student and the share where it ranks it worse, among the sequences where the
    two differ; ranks beyond 20 count as equal (so both missing the top-20 is a tie, not counted).
    Columns: the share (a fraction; blank for the tie row) and the count of sequences."""
    header = ["dataset", "condition", "relative_ratio", "sequences"]
    rows = []
    name = teachers_label(load_teachers(teacher))
    for d, (student, cases) in _analysis_cases(teacher, teacher_ranks, student_ranks, items).items():
        better = sum(tr < sr for tr, sr, *_ in cases)
        worse = sum(tr > sr for tr, sr, *_ in cases)
        decided = better + worse
        rows.append([d, f"{name} > {student}", better / decided if decided else None, better])
        rows.append([d, f"{name} < {student}", worse / decided if decided else None, worse])
        rows.append([d, "tie (not counted)", None, len(cases) - decided])
    write_table(header, rows, out, html, "Table 2: who ranks the test target better",
                {"relative_ratio": render.pct, "sequences": render.integer})


def table3(teacher, teacher_ranks, student_ranks, items, out: str, html: str | None = None) -> None:
    """Table 3: the two top-20 lists split into teacher-only, student-only and overlapped items:
    each set's share of its list (overlap: of the teacher's list) and the share of its items that
    are the target ("hit items"), pooled over test sequences (and seeds); with the counts
    (``items``: the set's items, ``list_items``: the list's, ``hits``: the set's hits)."""
    header = ["dataset", "rec_space", "items_ratio", "hit_items", "items", "list_items", "hits"]
    rows = []
    label = teachers_label(load_teachers(teacher))
    for d, (student, cases) in _analysis_cases(teacher, teacher_ranks, student_ranks, items).items():
        sizes = defaultdict(int)
        hits = defaultdict(int)
        for _, _, target, tl, sl in cases:
            t_set, s_set = set(tl), set(sl)
            sizes["t"] += len(t_set)
            sizes["s"] += len(s_set)
            for name, part in (("t_only", t_set - s_set), ("s_only", s_set - t_set), ("both", t_set & s_set)):
                sizes[name] += len(part)
                hits[name] += target in part

        def row(label, part, whole):
            return [d, label, sizes[part] / sizes[whole] if sizes[whole] else None,
                    hits[part] / sizes[part] if sizes[part] else None, sizes[part], sizes[whole], hits[part]]

        rows += [row(f"{label} only", "t_only", "t"), row(f"{student} only", "s_only", "s"), row("Overlapped", "both", "t")]
    ints = {h: render.integer for h in ("items", "list_items", "hits")}
    write_table(header, rows, out, html, "Table 3: overlap of the top-20 lists and their hits",
                {"items_ratio": render.pct, "hit_items": render.pct, **ints})


# --- the report's extra tables and figures ---------------------------------------------------
def teacher_table(teacher, out: str, html: str | None = None) -> None:
    """The teacher's test HR@K / NDCG@K (K = 1, 5, 10, 20), test sequences and inference seconds."""
    header, rows = [], []
    for p in _as_list(teacher):
        t = teacher_artifacts.read_metrics(p)
        keys = sorted(t["test"], key=parse_metric)
        header = header or ["dataset", *keys, "n_test", "inference_seconds"]
        rows.append([t["dataset"], *(t["test"][k] for k in keys), t.get("n_test"), teacher_seconds(t)])
    write_table(header, rows, out, html, "The teacher's test metrics",
                {**{k: render.num for k in header[1:-2]}, "n_test": render.integer, "inference_seconds": render.seconds})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str) -> None:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    _pyplot().close(fig)


def method_colour(method: str):
    """One colour per method in every figure: the methods of :func:`method_names` in their order
    on matplotlib's tab20 palette, any other method (a variant, a sweep point) after them."""
    import matplotlib

    known = list(method_names())
    if method not in known and method not in _EXTRA_COLOURS:
        _EXTRA_COLOURS.append(method)
    i = known.index(method) if method in known else len(known) + _EXTRA_COLOURS.index(method)
    return matplotlib.colormaps["tab20"](i % 20)


_EXTRA_COLOURS: list = []


def training_curves(students, out: str) -> None:
    """Validation NDCG@20 per epoch of each student run (``students``: metrics.json files, whose
    run folders hold train_log.csv): one panel per dataset x backbone, one line per method and
    seed (its colour: :func:`method_colour`), a dot on the epoch each run kept (``best_epoch``)."""
    plt = _pyplot()
    curves = defaultdict(list)  # (dataset, backbone) -> [(method, seed, epochs, values, best epoch)]
    for p in _as_list(students):
        run = student_run.read_metrics(p)
        log = student_run.read_log(student_run.paths(Path(p).parent)["log_csv"])
        curves[run["dataset"], run["backbone"]].append(
            (table_method(run), run["seed"], [r["epoch"] for r in log], [r[f"valid_{NDCG}"] for r in log], run.get("best_epoch")))
    if not curves:
        raise UserError("training_curves: no student runs given")
    panels = list(curves)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        labelled = set()
        order = list(method_names())
        for method, seed, x, y, best in sorted(curves[key], key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c[0], c[1])):
            colour = method_colour(method)
            ax.plot(x, y, color=colour, lw=1, label=None if method in labelled else method_name(method))
            labelled.add(method)
            if best in x:
                ax.plot([best], [y[x.index(best)]], "o", color=colour, ms=5, mec="k", mew=0.5)
        ax.plot([], [], "o", color="w", mec="k", mew=0.5, label="epoch kept")
        ax.set_title(f"{key[0]}: {backbone_name(key[1])}")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(f"validation {NDCG}")
    axes[0][-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, out)


def sft_curve(teacher, adapters, out: str) -> None:
    """The teacher's LoRA fine-tuning: train and validation loss per epoch (the adapter's SFT
    record); ``teacher`` (metrics.json, naming the dataset) and ``adapters`` in the same order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for m, p in zip(_as_list(teacher), _as_list(adapters), strict=True):
        curve = teacher_artifacts.read_sft_info(p)["curve"]
        name = teacher_artifacts.read_metrics(m)["dataset"]
        train = [(c["epoch"], c["train_loss"]) for c in curve if c["train_loss"] is not None]
        ax.plot([c["epoch"] for c in curve], [c["eval_loss"] for c in curve], marker="o", label=f"{name}: validation")
        ax.plot([e for e, _ in train], [v for _, v in train], marker="s", ls="--", label=f"{name}: train")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("token-mean loss")
    ax.legend(fontsize="small")
    _save(fig, out)


def table5_bars(teacher, students, out: str, methods=None, popularity=None) -> None:
    """Table 5 as bars: per dataset and metric, each backbone's methods (mean over seeds; error
    bars: the std over seeds where there are two or more), the teacher as a dashed line, the most
    popular training items as a dotted one and chance (K/n) as a dash-dotted one."""
    plt = _pyplot()
    runs = load_runs(students)
    teachers = load_teachers(teacher)
    refs = load_popularity(popularity)
    datasets = list(dict.fromkeys([*teachers, *(d for d, _, _ in runs)]))
    backbones = list(dict.fromkeys(b for _, b, _ in runs))
    methods = _as_list(methods) or list(dict.fromkeys(m for _, _, m in runs))
    fig, axes = plt.subplots(len(datasets), len(METRICS), figsize=(6 * len(METRICS), 3.6 * len(datasets)), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for i, d in enumerate(datasets):
        for j, k in enumerate(METRICS):
            ax = axes[i][j]
            for n, m in enumerate(methods):
                vals = [[r[1][k] for r in runs.get((d, b, m), [])] for b in backbones]
                errors = [statistics.stdev(v) if len(v) > 1 else float("nan") for v in vals]
                ax.bar([x + (n - len(methods) / 2 + 0.5) * width for x in range(len(backbones))],
                       [mean(v) for v in vals], width, label=method_name(m), color=method_colour(m),
                       yerr=errors if any(e == e for e in errors) else None, capsize=2, error_kw={"lw": 0.8})
            if d in teachers and k in teachers[d]["test"]:
                ax.axhline(teachers[d]["test"][k], color="k", ls="--", lw=1,
                           label=f"{teacher_artifacts.teacher_label(teachers[d])} (teacher)")
            if d in refs:
                ax.axhline(refs[d]["popularity"]["test"][k], color="grey", ls=":", lw=1.2, label="most popular (train)")
                ax.axhline(refs[d]["chance"][k], color="grey", ls="-.", lw=1, label="chance (K/n)")
            ax.set_xticks(range(len(backbones)), [backbone_name(b) for b in backbones])
            ax.set_xlabel("student backbone")
            ax.set_ylabel(f"test {k}")
            ax.set_title(f"{d}: test {k}")
    axes[0][-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, out)
