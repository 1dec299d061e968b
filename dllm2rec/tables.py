"""The paper's tables, assembled from the stages' JSON outputs (docs/method.md §6: K = 20 in the tables).

A run is identified by what its metrics.json records (:mod:`dllm2rec.student_run`: dataset,
teacher, backbone, method, params, seed; the teacher's metrics.json: dataset), never by its path.
Every table is a mean over the seeds present; ``table5_seeds.csv`` keeps each seed, the mean and
the standard deviation.
"""
from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from dllm2rec import student_run, teacher_artifacts
from dllm2rec.dataset import read_stats
from dllm2rec.io import UserError, atomic_path
from dllm2rec.sweeps import FIGURE2_PARAMS, parse_sweep_method

METRICS = ("HR@20", "NDCG@20")
BACKBONE_NAMES = {"gru4rec": "GRU4Rec", "sasrec": "SASRec", "dros": "DROS"}
METHOD_NAMES = {
    "none": "+None", "hint": "+Hint", "htd": "+HTD", "rd": "+RD", "cd": "+CD", "rrd": "+RRD",
    "dcd": "+DCD", "unkd": "+UnKD", "kar": "KAR", "llmcf": "LLM-CF", "dllm2rec": "+DLLM2Rec",
}
NOT_BASELINES = {"none", "dllm2rec"}


def _as_list(x) -> list:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def load_runs(paths) -> dict:
    """(dataset, backbone, method) -> list of (seed, test metrics dict, full metrics dict)."""
    runs = defaultdict(list)
    for path in _as_list(paths):
        metrics = student_run.read_metrics(path)
        runs[metrics["dataset"], metrics["backbone"], metrics["method"]].append((metrics["seed"], metrics["test"], metrics))
    return runs


def load_teachers(paths) -> dict:
    """dataset -> the teacher's metrics."""
    teachers = {}
    for path in _as_list(paths):
        metrics = teacher_artifacts.read_metrics(path)
        teachers[metrics["dataset"]] = metrics
    return teachers


def mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def gain(new: float, old: float) -> str:
    if not old or old != old or new != new:
        return ""
    return f"{(new - old) / old * 100:+.2f}%"


def _write_csv(rows: list[list], out: str) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())


def _fmt(x: float) -> str:
    return "" if x != x else f"{x:.4f}"


def table4(stats, out: str) -> None:
    """Table 4: users, items, interactions, density and rows per split of each dataset."""
    rows = [["dataset", "users", "items", "interactions", "density", "train", "valid", "test"]]
    for path in _as_list(stats):
        s = read_stats(path)
        split = s.get("rows", {})
        density = "" if s.get("density") is None else f"{s['density'] * 100:.4f}%"  # imports may lack users
        rows.append([s.get("dataset") or Path(path).parent.name, *("" if s.get(k) is None else s[k] for k in ("users", "items", "interactions")),
                     density, split.get("train", ""), split.get("valid", ""), split.get("test", "")])
    _write_csv(rows, out)


def table5(teacher, students, out: str, out_seeds: str, methods=None) -> None:
    """Table 5: rows = the teacher, then per backbone each method, Gain.S and Gain.B;
    columns = dataset x (HR@20, NDCG@20)."""
    runs = load_runs(students)
    teachers = load_teachers(teacher)
    datasets = list(dict.fromkeys([*teachers, *(d for d, _, _ in runs)]))
    backbones = list(dict.fromkeys(b for _, b, _ in runs))
    methods = _as_list(methods) or list(dict.fromkeys(m for _, _, m in runs))

    def cell(d, b, m):
        seeds = runs.get((d, b, m), [])
        return [mean([r[1][k] for r in seeds]) for k in METRICS]

    header = ["backbone", "model"] + [f"{d}:{k}" for d in datasets for k in METRICS]
    rows = [header, ["Teacher", "BIGRec"] + [_fmt(teachers[d]["test"][k]) if d in teachers else "" for d in datasets for k in METRICS]]
    for b in backbones:
        values = {m: {d: cell(d, b, m) for d in datasets} for m in methods}
        for m in methods:
            rows.append([BACKBONE_NAMES.get(b, b), METHOD_NAMES.get(m, m)] + [_fmt(x) for d in datasets for x in values[m][d]])
        if "dllm2rec" in values and "none" in values:
            rows.append([BACKBONE_NAMES.get(b, b), "Gain.S"] + [
                gain(values["dllm2rec"][d][i], values["none"][d][i]) for d in datasets for i in range(len(METRICS))])
        baselines = [m for m in methods if m not in NOT_BASELINES and METHOD_NAMES.get(m)]
        if "dllm2rec" in values and baselines:
            rows.append([BACKBONE_NAMES.get(b, b), "Gain.B"] + [
                gain(values["dllm2rec"][d][i], max((values[m][d][i] for m in baselines), default=float("nan")))
                for d in datasets for i in range(len(METRICS))])
    _write_csv(rows, out)

    # every seed, then the mean and the standard deviation of each cell, at every K
    keys = sorted({k for seeds in runs.values() for _, test, _ in seeds for k in test},
                  key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    seed_rows = [["dataset", "backbone", "method", "seed", *keys, "best_epoch", "train_seconds", "inference_seconds"]]
    for (d, b, m), seeds in sorted(runs.items()):
        for seed, test, full in sorted(seeds, key=lambda r: r[0]):
            seed_rows.append([d, b, m, seed, *(_fmt(test[k]) for k in keys), full.get("best_epoch", ""),
                              f"{full.get('train_seconds', float('nan')):.2f}", f"{full.get('inference_seconds', float('nan')):.4f}"])
        for label, agg in (("mean", mean), ("std", lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)):
            seed_rows.append([d, b, m, label, *(_fmt(agg([t[k] for _, t, _ in seeds])) for k in keys), "", "", ""])
    _write_csv(seed_rows, out_seeds)


def table6(teacher, students, out: str, backbone: str | None = None) -> None:
    """Table 6: BIGRec against the DLLM2Rec student (DROS by default), accuracy and inference time."""
    runs = load_runs(students)
    teachers = load_teachers(teacher)
    backbones = list(dict.fromkeys(b for _, b, _ in runs))
    if not backbones:
        raise UserError("table6 needs student runs of the method dllm2rec; none were given")
    backbone = backbone or ("dros" if "dros" in backbones else backbones[-1])
    rows = [["dataset", "model", *METRICS, "inference_seconds"]]
    for d, t in teachers.items():
        seeds = runs.get((d, backbone, "dllm2rec"))
        if not seeds:
            raise UserError(f"table6 needs the dllm2rec runs of {backbone} on {d}; add dllm2rec to tables.methods")
        s_vals = [mean([r[1][k] for r in seeds]) for k in METRICS]
        s_time = mean([r[2]["inference_seconds"] for r in seeds])
        t_vals = [t["test"][k] for k in METRICS]
        rows.append([d, "BIGRec", *map(_fmt, t_vals), f"{t['inference_seconds']:.4g}"])
        rows.append([d, f"DLLM2Rec ({BACKBONE_NAMES.get(backbone, backbone)})", *map(_fmt, s_vals), f"{s_time:.4g}"])
        rows.append([d, "Gain", *(gain(s, tv) for s, tv in zip(s_vals, t_vals)), gain(t["inference_seconds"], s_time)])
    _write_csv(rows, out)


def ablation_table(students, out: str) -> None:
    """Tables 7 and 8: each DLLM2Rec variant, then DLLM2Rec itself, per dataset."""
    runs = load_runs(students)
    rows = [["dataset", "backbone", "model", *METRICS]]
    for d in dict.fromkeys(d for d, _, _ in runs):
        keys = [k for k in runs if k[0] == d]
        keys.sort(key=lambda k: k[2] == "dllm2rec")
        for _, b, m in keys:
            rows.append([d, BACKBONE_NAMES.get(b, b), "DLLM2Rec" if m == "dllm2rec" else m,
                         *(_fmt(mean([r[1][k] for r in runs[d, b, m]])) for k in METRICS)])
    _write_csv(rows, out)


def figure2(students, dllm2rec, out: str, out_table: str) -> None:
    """Figure 2: test HR@20 / NDCG@20 of DLLM2Rec with one of lambda_d, gamma_p, gamma_c,
    gamma_o changed (runs named ``dllm2rec-<param>-<value>``); the plain ``dllm2rec`` run is the
    point at the configured value (``dllm2rec``: its options, JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(students)
    base = dllm2rec if isinstance(dllm2rec, dict) else {}
    points = []  # (param, value, dataset, HR@20, NDCG@20)
    for (d, _, m), seeds in runs.items():
        values = [mean([r[1][k] for r in seeds]) for k in METRICS]
        if m == "dllm2rec":
            points += [(p, float(base[p]), d, *values) for p in FIGURE2_PARAMS if p in base]
            continue
        sweep = parse_sweep_method(m)
        if sweep:
            points.append((*sweep, d, *values))
    points = sorted(set(points))
    if not points:
        raise UserError("figure2: no DLLM2Rec sweep runs given (methods named dllm2rec-<param>-<value>)")
    _write_csv([["param", "value", "dataset", *METRICS]] + [[p, f"{v:g}", d, _fmt(h), _fmt(n)] for p, v, d, h, n in points], out_table)

    params = [p for p in FIGURE2_PARAMS if any(q == p for q, *_ in points)]
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
