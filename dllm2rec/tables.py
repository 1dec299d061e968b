"""The paper's tables, assembled from the stages' JSON outputs (docs/method.md §6: K = 20 in the tables).

A run is identified by what its metrics.json records (:mod:`dllm2rec.student_run`: dataset,
teacher, backbone, method, params, seed; the teacher's metrics.json: dataset), never by its path.
Every table is a mean over the seeds present; ``table5_seeds.csv`` keeps each seed, the mean and
the standard deviation. Tables 1-3 compare the teacher with the plain DROS student, Tables 2-3
and Table 5's significance test read the students' per-sequence ``ranks.parquet`` (docs/tables.md).
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
from dllm2rec.selection import table_method
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


def gain(new: float, old: float) -> str:
    if not old or old != old or new != new:
        return ""
    return f"{(new - old) / old * 100:+.2f}%"


def speedup(slow: float, fast: float) -> str:
    """How many times faster ``fast`` seconds are than ``slow`` seconds: "8,275× faster"
    (or "3.2× slower" when ``fast`` is the slower one)."""
    if not slow or not fast or slow != slow or fast != fast:
        return ""
    ratio, word = (slow / fast, "faster") if slow >= fast else (fast / slow, "slower")
    digits = 0 if ratio >= 100 else 1 if ratio >= 10 else 2
    return f"{ratio:,.{digits}f}× {word}"


def _write_csv(rows: list[list], out: str) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())


def _fmt(x: float) -> str:
    return "" if x != x else f"{x:.4f}"


def _fmt_seconds(x: float) -> str:
    return "" if x != x else f"{x:.4g}"


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


def load_popularity(paths) -> dict:
    """dataset -> its popularity.json (the popularity and chance reference rows)."""
    from dllm2rec.dataset import read_popularity

    refs = {}
    for path in _as_list(paths):
        ref = read_popularity(path)
        refs[ref["dataset"]] = ref
    return refs


def reference_rows(refs: dict, datasets: list) -> list[list]:
    """Table 5's reference rows: the most popular training items, and chance (K/n)."""
    if not refs:
        return []

    def cells(key):
        return [_fmt(refs[d][key]["test"][k] if key == "popularity" else refs[d][key][k]) if d in refs else ""
                for d in datasets for k in METRICS]

    return [["Popularity", "most popular (train)"] + cells("popularity"), ["Chance", "random (K/n)"] + cells("chance")]


def table5(teacher, students, out: str, out_seeds: str, methods=None, ranks=None, popularity=None) -> None:
    """Table 5: rows = the teacher, then per backbone each method, Gain.S and Gain.B;
    columns = dataset x (HR@20, NDCG@20). Per backbone and column the best method is **bold** and
    the runner-up _underlined_ (markdown). With the students' ``ranks`` (ranks.parquet), Gain.B
    carries the p-value of a paired t-test of DLLM2Rec against that column's best baseline over
    every (seed, test sequence), and table5_seeds.csv a ``p_value`` row per backbone. With the
    datasets' ``popularity`` references (popularity.json), a Popularity row (the most popular
    training items) and a Chance row (K/n) follow the teacher's."""
    runs = load_runs(students)
    seq_ranks = load_test_ranks(ranks) if ranks else {}
    tests = {}  # (dataset, backbone, metric) -> (best baseline, n pairs, p)
    teachers = load_teachers(teacher)
    refs = load_popularity(popularity)
    datasets = list(dict.fromkeys([*teachers, *(d for d, _, _ in runs)]))
    backbones = list(dict.fromkeys(b for _, b, _ in runs))
    methods = _as_list(methods) or list(dict.fromkeys(m for _, _, m in runs))

    def cell(d, b, m):
        seeds = runs.get((d, b, m), [])
        return [mean([r[1][k] for r in seeds]) for k in METRICS]

    header = ["backbone", "model"] + [f"{d}:{k}" for d in datasets for k in METRICS]
    rows = [header, ["Teacher", teachers_label(teachers)]
            + [_fmt(v) for d in datasets for v in (teacher_values(teachers[d]) if d in teachers else [float("nan")] * len(METRICS))]]
    rows += reference_rows(refs, datasets)
    for b in backbones:
        values = {m: {d: cell(d, b, m) for d in datasets} for m in methods}
        columns = [mark_best([values[m][d][i] for m in methods]) for d in datasets for i in range(len(METRICS))]
        for j, m in enumerate(methods):
            rows.append([BACKBONE_NAMES.get(b, b), METHOD_NAMES.get(m, m)] + [col[j] for col in columns])
        if "dllm2rec" in values and "none" in values:
            rows.append([BACKBONE_NAMES.get(b, b), "Gain.S"] + [
                gain(values["dllm2rec"][d][i], values["none"][d][i]) for d in datasets for i in range(len(METRICS))])
        baselines = [m for m in methods if m not in NOT_BASELINES and METHOD_NAMES.get(m)]
        if "dllm2rec" in values and baselines:
            cells = []
            for d in datasets:
                for i, k in enumerate(METRICS):
                    best = max(baselines, key=lambda m: values[m][d][i] if values[m][d][i] == values[m][d][i] else -1.0)
                    text = gain(values["dllm2rec"][d][i], values[best][d][i])
                    if seq_ranks and text:
                        _, n, p = significance(seq_ranks, d, b, "dllm2rec", best, k)
                        tests[d, b, k] = (best, n, p)
                        text += f" (p={_fmt_p(p)})" if p == p else ""
                    cells.append(text)
            rows.append([BACKBONE_NAMES.get(b, b), "Gain.B"] + cells)
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
        if m == "dllm2rec" and any((d, b, k) in tests for k in keys):
            # p of the paired t-test against the best baseline of that column (named in the last column)
            seed_rows.append([d, b, m, "p_value", *(f"{tests[d, b, k][2]:.4g}" if (d, b, k) in tests else "" for k in keys),
                              "", "", "", "; ".join(f"{k} vs {tests[d, b, k][0]} over {tests[d, b, k][1]} pairs"
                                                    for k in keys if (d, b, k) in tests)])
    if tests:
        seed_rows[0].append("p_value_test")
        seed_rows = [r + [""] * (len(seed_rows[0]) - len(r)) for r in seed_rows]
    _write_csv(seed_rows, out_seeds)


def table6(teacher, students, out: str, backbone: str | None = None) -> None:
    """Table 6: the teacher (BIGRec) against the DLLM2Rec student (DROS by default), accuracy and inference time."""
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
        t_vals, t_time = teacher_values(t), teacher_seconds(t)
        rows.append([d, teacher_artifacts.teacher_label(t), *map(_fmt, t_vals), _fmt_seconds(t_time)])
        rows.append([d, f"DLLM2Rec ({BACKBONE_NAMES.get(backbone, backbone)})", *map(_fmt, s_vals), f"{s_time:.4g}"])
        rows.append([d, "Gain", *(gain(s, tv) for s, tv in zip(s_vals, t_vals)), speedup(t_time, s_time)])
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
        if m == "dllm2rec":  # at its run's values (a searched dllm2rec: the chosen point's)
            opts = {**base, **seeds[0][2].get("params", {}).get("method", {})}
            points += [(p, float(opts[p]), d, *values) for p in FIGURE2_PARAMS if p in opts]
            continue
        sweep = parse_sweep_method(m)
        if sweep:
            points.append((*sweep, d, *values))
    swept = {sweep[0] for (_, _, m) in runs if (sweep := parse_sweep_method(m))}
    points = sorted({q for q in points if q[0] in swept})  # a parameter held at its value is not drawn
    if not points:
        raise UserError("figure2: no DLLM2Rec sweep runs given (methods named dllm2rec-<param>-<value>)")
    _write_csv([["param", "value", "dataset", *METRICS]] + [[p, f"{v:g}", d, _fmt(h), _fmt(n)] for p, v, d, h, n in points], out_table)

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


def per_sequence_metrics(rank, k: int = 20) -> dict:
    """HR@k and NDCG@k of each sequence from 1-based ranks (numpy array)."""
    import numpy as np

    rank = np.asarray(rank, dtype=np.float64)
    hit = rank <= k
    return {f"HR@{k}": hit.astype(np.float64), f"NDCG@{k}": np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0)}


def load_test_ranks(paths) -> dict:
    """(dataset, backbone, method) -> {(seed, seq_id): 1-based test rank} from students' ranks.parquet."""
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
    k = int(metric.split("@")[1])
    va = per_sequence_metrics([a[c] for c in common], k)[metric]
    vb = per_sequence_metrics([b[c] for c in common], k)[metric]
    t, _, p = paired_t_test(va.tolist(), vb.tolist())
    return t, len(common), p


def _fmt_p(p: float) -> str:
    return "" if p != p else f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def mark_best(values: list[float]) -> list[str]:
    """Formatted values with the best **bold** and the runner-up _underlined_ (markdown), as the
    paper's Table 5 marks them; ties share a mark."""
    distinct = sorted({v for v in values if v == v}, reverse=True)
    marks = {distinct[0]: "**"} if distinct else {}
    if len(distinct) > 1:
        marks[distinct[1]] = "_"
    return [f"{marks[v]}{_fmt(v)}{marks[v]}" if v in marks else _fmt(v) for v in values]


# --- Tables 1-3: the teacher against the plain DROS student --------------------------------------
ANALYSIS_K = 20


def table1(teacher, students, out: str) -> None:
    """Table 1: the teacher (BIGRec) against the plain student (DROS + None) per dataset:
    HR@20, NDCG@20 and test inference wall time; Gain = BIGRec over the student."""
    runs = load_runs(students)
    teachers = load_teachers(teacher)
    rows = [["dataset", "model", *METRICS, "inference_seconds"]]
    for d, t in teachers.items():
        found = [(b, seeds) for (dd, b, _), seeds in runs.items() if dd == d]
        if not found:
            raise UserError(f"table1 needs the plain student's runs (method none) on {d}; none were given")
        b, seeds = found[0]
        s_vals = [mean([r[1][k] for r in seeds]) for k in METRICS]
        s_time = mean([r[2]["inference_seconds"] for r in seeds])
        t_vals, t_time = teacher_values(t), teacher_seconds(t)
        rows.append([d, BACKBONE_NAMES.get(b, b), *map(_fmt, s_vals), f"{s_time:.4g}"])
        rows.append([d, teacher_artifacts.teacher_label(t), *map(_fmt, t_vals), _fmt_seconds(t_time)])
        rows.append([d, "Gain", *(gain(tv, sv) for tv, sv in zip(t_vals, s_vals)), speedup(s_time, t_time)])
    _write_csv(rows, out)


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
        rows = out.setdefault(d, (BACKBONE_NAMES.get(backbone, backbone), []))[1]
        for tr, sr, target, tl, sl in zip(t_rank, r.rank, r.target, t_lists, r.topk):
            rows.append((int(tr) if 0 <= tr < ANALYSIS_K else ANALYSIS_K, min(sr - 1, ANALYSIS_K), target,
                         tl[:ANALYSIS_K], sl[:ANALYSIS_K]))
    return out


def _pct(x: float) -> str:
    return "" if x != x else f"{x * 100:.2f}%"


def table2(teacher, teacher_ranks, student_ranks, items, out: str) -> None:
    """Table 2: over the test sequences (and seeds), the share where the teacher ranks the target
    better than the student and the share where it ranks it worse, among the sequences where the
    two differ; ranks beyond 20 count as equal (so both missing the top-20 is a tie, not counted)."""
    rows = [["dataset", "condition", "relative_ratio", "sequences"]]
    name = teachers_label(load_teachers(teacher))
    for d, (student, cases) in _analysis_cases(teacher, teacher_ranks, student_ranks, items).items():
        better = sum(tr < sr for tr, sr, *_ in cases)
        worse = sum(tr > sr for tr, sr, *_ in cases)
        decided = better + worse
        rows.append([d, f"{name} > {student}", _pct(better / decided if decided else float("nan")), better])
        rows.append([d, f"{name} < {student}", _pct(worse / decided if decided else float("nan")), worse])
        rows.append([d, "tie (not counted)", "", len(cases) - decided])
    _write_csv(rows, out)


def table3(teacher, teacher_ranks, student_ranks, items, out: str) -> None:
    """Table 3: the two top-20 lists split into teacher-only, student-only and overlapped items:
    each set's share of its list (overlap: of the teacher's list) and the share of its items that
    are the target ("hit items"), pooled over test sequences (and seeds)."""
    rows = [["dataset", "rec_space", "items_ratio", "hit_items"]]
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

        def ratio(a, b):
            return a / b if b else float("nan")

        rows.append([d, f"{label} only", _pct(ratio(sizes["t_only"], sizes["t"])), _pct(ratio(hits["t_only"], sizes["t_only"]))])
        rows.append([d, f"{student} only", _pct(ratio(sizes["s_only"], sizes["s"])), _pct(ratio(hits["s_only"], sizes["s_only"]))])
        rows.append([d, "Overlapped", _pct(ratio(sizes["both"], sizes["t"])), _pct(ratio(hits["both"], sizes["both"]))])
    _write_csv(rows, out)


# --- the report's extra tables and figures ---------------------------------------------------
def teacher_table(teacher, out: str) -> None:
    """The teacher's test HR@K / NDCG@K (K = 1, 5, 10, 20), test sequences and inference seconds."""
    rows = []
    for p in _as_list(teacher):
        t = teacher_artifacts.read_metrics(p)
        keys = sorted(t["test"], key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
        if not rows:
            rows.append(["dataset", *keys, "n_test", "inference_seconds"])
        rows.append([t["dataset"], *(_fmt(v) for v in teacher_values(t, keys)), t.get("n_test", ""),
                     _fmt_seconds(teacher_seconds(t))])
    _write_csv(rows, out)


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


def training_curves(students, out: str) -> None:
    """Validation NDCG@20 per epoch of each student run (``students``: metrics.json files, whose
    run folders hold train_log.csv): one panel per dataset x backbone, one line per method and seed."""
    plt = _pyplot()
    curves = defaultdict(list)  # (dataset, backbone) -> [(method, seed, epochs, values)]
    for p in _as_list(students):
        run = student_run.read_metrics(p)
        log = student_run.read_log(student_run.paths(Path(p).parent)["log_csv"])
        curves[run["dataset"], run["backbone"]].append(
            (table_method(run), run["seed"], [r["epoch"] for r in log], [r["valid_NDCG@20"] for r in log]))
    if not curves:
        raise UserError("training_curves: no student runs given")
    panels = list(curves)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        colours = {}
        for method, seed, x, y in sorted(curves[key]):
            colour = colours.setdefault(method, plt.get_cmap("tab20")(len(colours) % 20))
            ax.plot(x, y, color=colour, lw=1, label=METHOD_NAMES.get(method, method) if seed == min(
                s for m, s, *_ in curves[key] if m == method) else None)
        ax.set_title(f"{key[0]}: {BACKBONE_NAMES.get(key[1], key[1])}")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("validation NDCG@20")
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
    """Table 5 as bars: per dataset and metric, each backbone's methods (mean over seeds, std as
    error bars), the teacher as a dashed line, the most popular training items as a dotted one."""
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
                ax.bar([x + (n - len(methods) / 2 + 0.5) * width for x in range(len(backbones))],
                       [mean(v) for v in vals], width, yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in vals],
                       label=METHOD_NAMES.get(m, m), color=plt.get_cmap("tab20")(n % 20))
            if d in teachers and k in teachers[d]["test"]:
                ax.axhline(teachers[d]["test"][k], color="k", ls="--", lw=1,
                           label=f"{teacher_artifacts.teacher_label(teachers[d])} (teacher)")
            if d in refs:
                ax.axhline(refs[d]["popularity"]["test"][k], color="grey", ls=":", lw=1, label="most popular (train)")
            ax.set_xticks(range(len(backbones)), [BACKBONE_NAMES.get(b, b) for b in backbones])
            ax.set_title(f"{d}: test {k}")
    axes[0][-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, out)
