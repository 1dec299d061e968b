"""Where every artifact lives: the one place that spells a path or a file name.

The workflow (``workflow/rules/paths.smk``) builds its rule inputs and outputs from these
templates, and the Python stages find a file inside a stage folder through the same names, so
a path is written once. What the files hold (columns, checks, readers) is owned by the contract
modules: :mod:`dllm2rec.dataset`, :mod:`dllm2rec.teacher_artifacts`, :mod:`dllm2rec.student_run`.
See docs/artifacts.md for the table of every artifact.

Standard library only: Snakemake imports this module while it builds the DAG.
"""
from __future__ import annotations

# --- stage folders (relative to the working directory; wildcards in braces) ------------------
DATA_DIR = "results/data/{dataset}"
TEACHER_DIR = "results/teacher/{dataset}/{teacher}"
STUDENT_RUN_DIR = "results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}"
BASE_MODEL = "resources/models/{teacher}/base.json"
DOWNLOADS = "resources/downloads"
TABLE = "results/{table}.csv"
TABLE5_SEEDS = "results/table5_seeds.csv"
TABLE5_MD = "results/table5.md"  # Table 5 as the paper lays it out (markdown; table5.csv is the data)
TABLE_HTML = "results/report/{table}.html"  # each table as the report shows it (dllm2rec/render.py)
FIGURE2 = "results/figure2.png"
FIGURE2_TABLE = "results/figure2.csv"
SELECTION = "results/selection.csv"  # the grid points' validation and test metrics, and the choice
FIGURE = "results/figures/{name}.png"  # the report's extra figures

# --- files inside each stage folder ----------------------------------------------------------
# the dataset (dllm2rec/dataset.py)
DATASET_FILES = {"items": "items.parquet", "sequences": "sequences.parquet", "stats": "stats.json"}
OFFICIAL_EXPORT = "official"
POPULARITY = "popularity.json"  # inside the dataset folder: Table 5's popularity and chance rows (rule popularity)
# the teacher (dllm2rec/teacher_artifacts.py); {split} is train, valid or test
TEACHER_FILES = {
    "adapter": "adapter",
    "item_embeddings": "item_embeddings.parquet",
    "ranks": "ranks/{split}.parquet",
    "generated_embeddings": "generated_embeddings/{split}.parquet",
    "ranks_shard": "ranks/{split}/{scatteritem}.parquet",
    "generated_embeddings_shard": "generated_embeddings/{split}/{scatteritem}.parquet",
    "metrics": "metrics.json",
    # the knowledge-text encoder's outputs (dllm2rec/teacher/text_encoder.py; KAR / LLM-CF `encoder: minilm`)
    "text_item_embeddings": "text_embeddings/item_embeddings.parquet",
    "text_generated_embeddings": "text_embeddings/generated_embeddings/{split}.parquet",
    # KAR's knowledge, one text per user and per item (dllm2rec/teacher/knowledge.py)
    "knowledge_users": "knowledge/users.parquet",
    "knowledge_items": "knowledge/items.parquet",
    "knowledge_item_embeddings": "knowledge/item_embeddings.parquet",
    "knowledge_user_embeddings": "knowledge/user_embeddings/{split}.parquet",
}
# a recommender teacher (dllm2rec/teacher/recommender.py): its training run, and the dataset it
# trains on when that is not the students' (`recommender.train_split: whole`), in the teacher folder
RECOMMENDER_RUN = "recommender"
TEACHER_TRAIN_DATA = "train_data"
# teacher parts with one file per item table (the others have one file per split)
PER_ITEM_TEACHER_PARTS = ("item_embeddings", "text_item_embeddings", "knowledge_item_embeddings")
SFT_INFO = "teacher_sft.json"  # inside the adapter folder
# one student run (dllm2rec/student_run.py)
RUN_FILES = {"metrics": "metrics.json", "model": "model.pt", "log_csv": "train_log.csv", "ranks": "ranks.parquet"}
# resumable jobs keep their checkpoint in their work folder (dllm2rec/resume.py)
CHECKPOINT = "checkpoint.pt"
SFT_BEST = "best"

# --- logs, benchmarks and work folders ------------------------------------------------------
LOG = "results/logs/{stage}/{name}.log"
BENCHMARK = "results/benchmarks/{stage}/{name}.tsv"
WORK = "results/work/{stage}/{name}"

# the wildcard placeholders: a template filled with these stays a Snakemake pattern
WILDCARDS = {k: "{" + k + "}" for k in ("dataset", "teacher", "backbone", "method", "seed", "split", "scatteritem")}


def _fill(template: str, values: dict) -> str:
    return template.format(**{**WILDCARDS, **{k: v for k, v in values.items() if v is not None}})


def data_dir(dataset: str = "{dataset}") -> str:
    return _fill(DATA_DIR, {"dataset": dataset})


def data_file(part: str, dataset: str = "{dataset}") -> str:
    """``results/data/{dataset}/items.parquet`` for part ``items`` (also ``sequences``, ``stats``)."""
    return f"{data_dir(dataset)}/{DATASET_FILES[part]}"


def popularity_file(dataset: str = "{dataset}") -> str:
    """``results/data/{dataset}/popularity.json``: the most-popular-items and chance reference."""
    return f"{data_dir(dataset)}/{POPULARITY}"


def teacher_dir(dataset: str = "{dataset}", teacher: str = "{teacher}") -> str:
    return _fill(TEACHER_DIR, {"dataset": dataset, "teacher": teacher})


def teacher_file(part: str, dataset: str = "{dataset}", teacher: str = "{teacher}", split: str = "{split}",
                 scatteritem: str = "{scatteritem}") -> str:
    """A teacher artifact's path; ``part`` is a key of :data:`TEACHER_FILES`."""
    name = _fill(TEACHER_FILES[part], {"split": split, "scatteritem": scatteritem})
    return f"{teacher_dir(dataset, teacher)}/{name}"


def teacher_train_data_file(part: str, dataset: str = "{dataset}", teacher: str = "{teacher}") -> str:
    """A file (``items``, ``sequences``, ``stats``) of the dataset a recommender teacher trains on."""
    return f"{teacher_dir(dataset, teacher)}/{TEACHER_TRAIN_DATA}/{DATASET_FILES[part]}"


def student_run_dir(dataset: str = "{dataset}", teacher: str = "{teacher}", backbone: str = "{backbone}",
                    method: str = "{method}", seed="{seed}") -> str:
    return _fill(STUDENT_RUN_DIR, {"dataset": dataset, "teacher": teacher, "backbone": backbone,
                                   "method": method, "seed": seed})


def student_file(part: str, **wildcards) -> str:
    """A student run's file; ``part`` is a key of :data:`RUN_FILES`."""
    return f"{student_run_dir(**wildcards)}/{RUN_FILES[part]}"


def base_model(teacher: str = "{teacher}") -> str:
    return _fill(BASE_MODEL, {"teacher": teacher})


def table(name: str) -> str:
    return TABLE.format(table=name)


def table_html(name: str) -> str:
    return TABLE_HTML.format(table=name)


def figure(name: str) -> str:
    return FIGURE.format(name=name)


def log(stage: str, name: str) -> str:
    return LOG.format(stage=stage, name=name)


def benchmark(stage: str, name: str) -> str:
    return BENCHMARK.format(stage=stage, name=name)


def work(stage: str, name: str) -> str:
    return WORK.format(stage=stage, name=name)
