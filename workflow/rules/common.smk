# Shared by every *.smk here: config validation, cross-checks and getters.
# Path scheme (ARCHITECTURE.md, "artifact contract"):
#   results/data/{dataset}/{items,sequences}.parquet, stats.json
#   resources/models/{teacher}/base.json                     (base model pointer / converted copy)
#   results/teacher/{dataset}/{teacher}/adapter/              (LoRA adapter)
#   results/teacher/{dataset}/{teacher}/item_embeddings.parquet
#   results/teacher/{dataset}/{teacher}/ranks/{split}.parquet (+ generated_embeddings/{split}.parquet)
#   results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}/metrics.json
#   results/table{4,5,6,7,8}.csv
import json
import re
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

SPLITS = ["train", "valid", "test"]
EMBEDDED_SOURCES = {"ml-100k", "ml-1m"}
RAW_PATHS = {
    "games": ["reviews", "meta"],
    "toys": ["reviews", "meta"],
    "ml-10m": ["ratings", "movies"],
    "official": ["dir"],
    "sasrec": ["file"],
    "recbole": ["inter"],
}
OPTIONAL_RAW_PATHS = {"official": ["titles"], "sasrec": ["titles"], "recbole": ["item"]}


def fail(msg):
    raise WorkflowError(f"config error: {msg}")


def resolve_method(name, seen=()):
    """The method's options with `extends` applied (the child's keys win)."""
    if name not in config["methods"]:
        fail(
            f"method {name!r} is not defined under `methods` (defined: {', '.join(config['methods'])})."
        )
    entry = dict(config["methods"][name])
    parent = entry.pop("extends", None)
    if parent is None:
        return entry
    if parent in seen:
        fail(
            f"methods.{name}.extends forms a cycle: {' -> '.join((*seen, name, parent))}"
        )
    merged = resolve_method(parent, (*seen, name))
    merged.update(entry)
    return merged


FIGURE2_PARAMS = ("lambda_d", "gamma_p", "gamma_c", "gamma_o")


def sweep_method(param, value):
    return f"dllm2rec-{param}-{value:g}"


def add_figure2_methods():
    """Figure 2's sweep points become methods `dllm2rec-<param>-<value>` extending `dllm2rec`."""
    sweep = config["tables"].get("figure2", {})
    for param in FIGURE2_PARAMS:
        for value in sweep.get(param, []):
            config["methods"].setdefault(
                sweep_method(param, value),
                {"type": "dllm2rec", "extends": "dllm2rec", param: value},
            )


add_figure2_methods()


def check_config():
    tables = config["tables"]
    if tables["teacher"] not in config["teachers"]:
        fail(
            f"tables.teacher is {tables['teacher']!r}, which is not a key of `teachers` ({', '.join(config['teachers'])})."
        )
    for name in tables["datasets"]:
        if name not in config["datasets"]:
            fail(
                f"tables.datasets names {name!r}, which is not a key of `datasets` ({', '.join(config['datasets'])})."
            )
    for name in tables["backbones"]:
        if name not in config["student"]["backbones"]:
            fail(
                f"tables.backbones names {name!r}; add it under student.backbones (e.g. `{name}: {{}}`)."
            )
    ablation = tables.get("ablation", {})
    if (ablation or tables.get("figure2")) and "dllm2rec" not in config["methods"]:
        fail(
            "tables.ablation compares variants with the method `dllm2rec`: define methods.dllm2rec."
        )
    for name in [
        *tables["methods"],
        *ablation.get("table7", []),
        *ablation.get("table8", []),
    ]:
        resolve_method(name)
    for name in config["methods"]:
        resolve_method(name)
    for name, ds in config["datasets"].items():
        needed = RAW_PATHS.get(ds["source"], [])
        missing = [key for key in needed if key not in ds["paths"]]
        if missing:
            fail(
                f"datasets.{name} (source {ds['source']}) needs paths.{', paths.'.join(missing)}: set them to the raw files (see docs/datasets.md)."
            )
        from dllm2rec.data.check import dataset_problem

        problem = dataset_problem(name, ds, needs_titles=name in tables["datasets"])
        if problem:
            fail(problem)


check_config()


# --- code each stage runs (Snakemake does not track imported modules by itself) -------------
def code(*parts):
    """The package's Python files under the given subpackages/modules, as inputs of the rules that
    run them (with the I/O helpers and the CLI every rule goes through). Found beside the
    Snakefile, so `--directory` elsewhere still tracks them."""
    package = Path(workflow.basedir) / "dllm2rec"
    files = [package / "io.py", package / "cli.py"]
    for part in parts:
        path = package / part
        files += (
            sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        )
    return [os.path.relpath(f) for f in files]


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
    files = []
    for key in RAW_PATHS.get(ds["source"], []):
        path = ds["paths"][key]
        if not os.path.exists(path):
            raise WorkflowError(
                f"datasets.{wildcards.dataset}.paths.{key} = {path!r} does not exist. Download the raw "
                f"{ds['source']} files (docs/datasets.md says where) and set that key to their path."
            )
        files.append(path)
    for key in OPTIONAL_RAW_PATHS.get(ds["source"], []):
        if key in ds["paths"]:
            files.append(ds["paths"][key])
    return files


def data_files(dataset):
    return {
        "items_parquet": f"results/data/{dataset}/items.parquet",
        "sequences": f"results/data/{dataset}/sequences.parquet",
        "stats": f"results/data/{dataset}/stats.json",
    }


# --- teacher -----------------------------------------------------------------------------------
def teacher_cfg(wildcards):
    return config["teachers"][wildcards.teacher]


def teacher_dir(dataset, teacher):
    return f"results/teacher/{dataset}/{teacher}"


def sft_launcher(wildcards):
    """`python`, or `accelerate launch` over the teacher's `sft_gpus` GPUs (data parallel)."""
    gpus = teacher_cfg(wildcards)["sft_gpus"]
    return "python" if gpus == 1 else f"accelerate launch --num_processes {gpus}"


def shard_params(wildcards):
    """Generation and grounding settings; prompts are cut as in fine-tuning unless set apart."""
    cfg = teacher_cfg(wildcards)
    generation = {"cutoff_len": cfg["sft"]["cutoff_len"], **cfg["generation"]}
    return jsonarg(
        {"dtype": cfg["dtype"], "generation": generation, "grounding": cfg["grounding"]}
    )


def item_embedding_params(wildcards):
    cfg = teacher_cfg(wildcards)
    grounding = {"batch_size": cfg["grounding"]["batch_size"]}
    return jsonarg({"dtype": cfg["dtype"], "grounding": grounding})


def scatter_index(wildcards):
    """'2-of-4' -> (2, 4)."""
    shard, shards = wildcards.scatteritem.split("-of-")
    return int(shard), int(shards)


# --- students ------------------------------------------------------------------------------------
def teacher_needs(method):
    """The teacher artifacts a method reads, {part: [splits]}, asked of the method's class (its
    required_parts, and whether it reads teacher output for the evaluated splits), so that the
    rule declares exactly what the trainer loads."""
    from dllm2rec.distill import get_method

    cfg = resolve_method(method)
    cls = get_method(cfg["type"])
    splits = SPLITS if cls.uses_teacher_at_inference else ["train"]
    return {part: splits for part in sorted(cls.required_parts(cfg))}


def student_inputs(wildcards):
    inputs = data_files(wildcards.dataset)
    base = teacher_dir(wildcards.dataset, wildcards.teacher)
    for part, splits in teacher_needs(wildcards.method).items():
        if part == "item_embeddings":
            inputs[part] = f"{base}/item_embeddings.parquet"
        else:
            inputs[part] = [f"{base}/{part}/{s}.parquet" for s in splits]
    return inputs


def student_params(wildcards):
    # eval_batch_size and device change the speed, not the results
    ignore = ("backbones", "device", "eval_batch_size")
    student = {k: v for k, v in config["student"].items() if k not in ignore}
    student["backbone"] = config["student"]["backbones"][wildcards.backbone]
    return jsonarg({"student": student, "method": resolve_method(wildcards.method)})


def student_teacher_arg(wildcards):
    if not teacher_needs(wildcards.method):
        return ""
    return f"--teacher {teacher_dir(wildcards.dataset, wildcards.teacher)}"


def student_metrics(datasets, teacher, backbones, methods, seeds):
    return [
        f"results/students/{d}/{teacher}/{b}/{m}/seed{s}/metrics.json"
        for d in datasets
        for b in backbones
        for m in methods
        for s in seeds
    ]


# --- tables ---------------------------------------------------------------------------------------
TABLES = config["tables"]
ABLATION = TABLES.get("ablation", {})


def table5_inputs(wildcards):
    return {
        "teacher": [
            f"{teacher_dir(d, TABLES['teacher'])}/metrics.json"
            for d in TABLES["datasets"]
        ],
        "students": student_metrics(
            TABLES["datasets"],
            TABLES["teacher"],
            TABLES["backbones"],
            TABLES["methods"],
            TABLES["seeds"],
        ),
    }


def ablation_inputs(table):
    def getter(wildcards):
        return student_metrics(
            TABLES["datasets"],
            TABLES["teacher"],
            [ABLATION.get("backbone", "dros")],
            ["dllm2rec", *ABLATION.get(table, [])],
            TABLES["seeds"],
        )

    return getter


FIGURE2 = TABLES.get("figure2", {})


def figure2_inputs(wildcards):
    methods = ["dllm2rec"] + [
        sweep_method(p, v) for p in FIGURE2_PARAMS for v in FIGURE2.get(p, [])
    ]
    return student_metrics(
        TABLES["datasets"],
        TABLES["teacher"],
        [FIGURE2.get("backbone", "dros")],
        methods,
        TABLES["seeds"],
    )


def final_targets():
    targets = ["results/table4.csv", "results/table5.csv"]
    if "dllm2rec" in TABLES["methods"]:
        targets.append("results/table6.csv")
    targets += [f"results/{t}.csv" for t in ("table7", "table8") if ABLATION.get(t)]
    if any(FIGURE2.get(p) for p in FIGURE2_PARAMS):
        targets.append("results/figure2.png")
    return targets


# --- Tables 1-3 and the report's extra inputs (tables.smk) ------------------------------------
# Tables 1-3 compare the teacher with the plain DROS student (method none) of Table 5's runs.
def analysis_tables():
    tables = ("table1", "table2", "table3")
    ok = "dros" in TABLES["backbones"] and "none" in TABLES["methods"]
    return [f"results/{t}.csv" for t in tables] if ok else []


def student_files(name, backbones=None, methods=None):
    """Getter: file `name` (ranks.parquet, train_log.csv, ...) of Table 5's runs, or of the
    given backbones x methods, beside each metrics.json."""

    def getter(wildcards):
        runs = student_metrics(
            TABLES["datasets"],
            TABLES["teacher"],
            backbones or TABLES["backbones"],
            methods or TABLES["methods"],
            TABLES["seeds"],
        )
        return [str(Path(p).with_name(name)) for p in runs]

    return getter


def report_targets():
    """What `snakemake --report` shows besides Tables 4-8 and Figure 2."""
    figures = ("table5_bars", "valid_ndcg", "sft_loss")
    return [
        *analysis_tables(),
        "results/teacher_metrics.csv",
        *(f"results/figures/{f}.png" for f in figures),
    ]
