# Config handling: schema validation, `extends` between methods, Figure 2's sweep methods and
# the cross-checks that must pass before any job runs. Paths and getters are in paths.smk.
import json
import os
import re
import shutil
import sys
from pathlib import Path

from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)  # the dllm2rec package beside the Snakefile
from dllm2rec import layout as L
from dllm2rec.data.check import dataset_problem
from dllm2rec.data.sources import SOURCES
from dllm2rec.distill.spec import needs_full_coverage
from dllm2rec.distill.spec import teacher_needs as method_teacher_needs
from dllm2rec.distill.spec import OPTIONS, option_types, options_class, parse_options
from dllm2rec.io import UserError
from dllm2rec.schema import validate
from dllm2rec.settings import REFERENCE_BACKBONE, GroundingSettings, teacher_section
from dllm2rec.settings import SPEED_KEYS as STUDENT_SPEED_KEYS
from dllm2rec.selection import SearchError, grid_points, read_choice
from dllm2rec.student_groups import Run as GroupRun
from dllm2rec.student_groups import plan_groups
from dllm2rec.teacher import coverage as teacher_coverage
from dllm2rec.teacher import kinds as teacher_kinds
from dllm2rec.sweeps import FIGURE2_PARAMS, SWEEP_KEY, sweep_method, sweep_params

try:  # the schema completed from the declarations (dllm2rec/schema.py); defaults written in
    validate(config, workflow.source_path("../schemas/config.schema.yaml"))
except ValidationError as err:
    raise WorkflowError("Error validating config file.", err)
# every registered method type can be named without an entry of its own (its defaults)
for _type in OPTIONS:
    config["methods"].setdefault(_type, {"type": _type})


def fail(msg):
    raise WorkflowError(f"config error: {msg}")


def resolve_method(name, seen=()):
    """The method's options with `extends` applied (the child's keys win)."""
    if name not in config["methods"]:
        fail(
            f"method {name!r} is not defined under `methods` (defined: {', '.join(config['methods'])})."
        )
    entry = dict(config["methods"][name])
    # a grid is not an option (its points: search_points below)
    entry.pop("search", None)
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


def sweep_points():
    """Figure 2's sweep points: {method name: (param, value)} (dllm2rec/sweeps.py)."""
    sweep = config["tables"].get("figure2", {})
    return {
        sweep_method(param, value): (param, value)
        for param in FIGURE2_PARAMS
        for value in sweep.get(param, [])
    }


SWEEP_POINTS = sweep_points()


def figure2_methods():
    """Figure 2's sweep points: {method name: its config entry}, each extending `dllm2rec`."""
    return {
        name: {"type": "dllm2rec", "extends": "dllm2rec", param: value}
        for name, (param, value) in SWEEP_POINTS.items()
    }


# the sweep points become methods (a method the user defined under the same name wins)
for _name, _entry in figure2_methods().items():
    config["methods"].setdefault(_name, _entry)


# --- search grids: `methods.<name>.search` (dllm2rec/selection.py, docs/protocol.md) ----------
def search_points():
    """{searched method: [its grid points]}; keys and values checked against the method's options
    and the student keys a search may vary."""
    grids = {}
    for name, entry in config["methods"].items():
        if "search" not in entry:
            continue
        try:
            options = option_types(options_class(entry["type"]))
            grids[name] = grid_points(name, entry["search"], options)
        except (SearchError, UserError) as err:
            fail(str(err))
    return grids


SEARCH = search_points()
GRID_POINTS = {p.name: p for points in SEARCH.values() for p in points}
# each point becomes a method extending the searched one with the point's option values
for _point in GRID_POINTS.values():
    # (no clash with a defined method: the schema allows no `@` in method names)
    config["methods"][_point.name] = {
        "type": config["methods"][_point.method]["type"],
        "extends": _point.method,
        **_point.method_options,
    }
    try:
        parse_options(resolve_method(_point.name), _point.method)
    except UserError as err:
        fail(f"{err} (in methods.{_point.method}.search)")


def check_raw_files(name, ds):
    """Every raw file of dataset `name` exists (checked here, at config time: Snakemake swallows
    an error raised inside an input function when the outputs already exist, and would report
    "Nothing to be done" over results made from files that are gone)."""
    source = SOURCES[ds["source"]]
    for key in (
        *source.paths,
        *(k for k in source.optional if k in ds["paths"]),
    ):
        path = ds["paths"][key]
        if not os.path.exists(path):
            fail(
                f"datasets.{name}.paths.{key} = {path!r} does not exist (working directory {os.getcwd()}). "
                f"Download the raw {ds['source']} files (docs/datasets.md says where) and set that key to "
                f"their path, or take datasets.{name} out of the config."
            )


def check_ranked_lists():
    """A method cannot read more of the teacher's ranked list than grounding keeps (`topn`)."""
    for name in config["methods"]:
        try:
            opt = parse_options(resolve_method(name), name)
        except UserError as err:
            fail(str(err))
        if opt.method != "dllm2rec" or not opt.ranking:
            continue
        for teacher, tcfg in config["teachers"].items():
            topn = teacher_section(GroundingSettings, tcfg, "grounding", teacher).topn
            if opt.k > topn:
                fail(
                    f"methods.{name}.k = {opt.k} is larger than teachers.{teacher}.grounding.topn = {topn}: "
                    f"DLLM2Rec distils the teacher's top-k, and the teacher keeps only its top-{topn}. "
                    f"Lower k or raise topn."
                )


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
    for name in [
        *tables["methods"],
        *ablation.get("table7", []),
        *ablation.get("table8", []),
    ]:
        resolve_method(name)
    for name in config["methods"]:
        resolve_method(name)
    for name, ds in config["datasets"].items():
        needed = SOURCES[ds["source"]].paths
        missing = [key for key in needed if key not in ds["paths"]]
        if missing:
            fail(
                f"datasets.{name} (source {ds['source']}) needs paths.{', paths.'.join(missing)}: set them to the raw files (see docs/datasets.md)."
            )
        problem = dataset_problem(name, ds, needs_titles=name in tables["datasets"])
        if problem:
            fail(problem)
        check_raw_files(name, ds)
    check_ranked_lists()


def check_coverage():
    """generation.train_coverage: a valid value, and no method of the tables that needs teacher
    output for every training sequence (KAR, LLM-CF) while the tables' teacher covers a subset.
    """
    for name, teacher in config["teachers"].items():
        key = f"teachers.{name}.generation.{teacher_coverage.KEY}"
        try:
            teacher_coverage.parse_coverage(
                teacher["generation"].get(teacher_coverage.KEY), key
            )
        except UserError as e:
            fail(str(e))
    teacher = config["tables"]["teacher"]
    gen = config["teachers"][teacher]["generation"]
    if not teacher_coverage.is_partial(gen.get(teacher_coverage.KEY)):
        return
    ablation = config["tables"].get("ablation", {})
    names = [
        *config["tables"]["methods"],
        *ablation.get("table7", []),
        *ablation.get("table8", []),
    ]
    for name in dict.fromkeys(names):
        if needs_full_coverage(resolve_method(name), name):
            fail(
                f"method {name!r} needs teacher output for every training sequence, but "
                f"teachers.{teacher}.generation.{teacher_coverage.KEY} is "
                f"{gen[teacher_coverage.KEY]!r}: set it to `all`, or remove {name!r} from tables.methods."
            )


def table_methods():
    """Every method the tables train students with (Table 5, Tables 7-8, Figure 2)."""
    ablation = config["tables"].get("ablation", {})
    names = [
        *config["tables"]["methods"],
        *ablation.get("table7", []),
        *ablation.get("table8", []),
    ]
    if ablation or config["tables"].get("figure2"):
        names.append("dllm2rec")
    return list(dict.fromkeys(names))


def check_files_width(teacher, files, name, method):
    """DLLM2Rec distils the teacher's top-k: a files teacher's rank file must be that wide (its
    first line is read here; the import checks every row)."""
    with open(files["rank_train"]) as fh:
        width = len(fh.readline().split())
    opt = parse_options(method, name)
    if width and opt.method == "dllm2rec" and opt.ranking and opt.k > width:
        fail(
            f"methods.{name}.k = {opt.k} is larger than the {width} items per row of "
            f"teachers.{teacher}.files.rank_train ({files['rank_train']}): lower k or give a wider rank file."
        )


def check_teacher_kinds():
    """`teachers.<name>.type` (dllm2rec/teacher/kinds.py): a recommender's backbone has options,
    a files teacher's files exist, and no method of the tables reads what the tables' teacher
    has not (KAR and LLM-CF read an LLM's texts; a files teacher may lack valid/test ranks and
    the target distances of DLLM2Rec's paper-variant confidence)."""
    for name, tcfg in config["teachers"].items():
        kind = teacher_kinds.kind(tcfg)
        if kind == "recommender":
            backbone = teacher_kinds.recommender_cfg(tcfg).backbone
            if backbone not in config["student"]["backbones"]:
                fail(
                    f"teachers.{name}.recommender.backbone is {backbone!r}: add it under student.backbones "
                    f"(e.g. `{backbone}: {{}}`), where its options are set."
                )
        if kind == "files":
            files = teacher_kinds.files_cfg(tcfg)
            for key, path in files.items():
                if key != "label" and not os.path.exists(path):
                    fail(
                        f"teachers.{name}.files.{key} = {path!r} does not exist (working directory {os.getcwd()}). "
                        f"Point it to the teacher file (python -m dllm2rec export-teacher writes them; "
                        f"docs/artifacts.md)."
                    )
            for split in ("valid", "test"):
                if (f"rank_{split}" in files) != (f"confidence_{split}" in files):
                    fail(
                        f"teachers.{name}.files: give rank_{split} and confidence_{split} together "
                        f"(one distance per candidate), or neither."
                    )
    teacher = config["tables"]["teacher"]
    tcfg = config["teachers"][teacher]
    kind = teacher_kinds.kind(tcfg)
    for name in table_methods():
        method = resolve_method(name)
        missing = teacher_kinds.missing_parts(
            tcfg, method_teacher_needs(method, name=name)
        )
        if missing:
            why = (
                "it reads the LLM's generated texts, which only a `bigrec` teacher has"
                if any("generated" in m for m in missing)
                else "they were not given under teachers.{teacher}.files"
            )
            fail(
                f"method {name!r} reads the teacher's {', '.join(missing)}, which teacher {teacher!r} "
                f"(type {kind}) does not have: {why.format(teacher=teacher)}. Remove {name!r} from "
                f"tables.methods (and the ablations), or use a teacher that has them."
            )
        if kind == "files":
            check_files_width(teacher, teacher_kinds.files_cfg(tcfg), name, method)
        if kind == "files" and "target_train" not in teacher_kinds.files_cfg(tcfg):
            opt = parse_options(method, name)
            if (
                opt.method == "dllm2rec"
                and opt.ranking
                and opt.use_wc
                and opt.variant == "paper"
            ):
                fail(
                    f"method {name!r} (DLLM2Rec, variant paper) weighs each sequence by the teacher's distance "
                    f"to the target, which the released-format files of teacher {teacher!r} do not carry: give "
                    f"teachers.{teacher}.files.target_train (export-teacher writes it), or set "
                    f"methods.{name}.variant: official (the released code's confidence)."
                )


check_config()
check_coverage()
check_teacher_kinds()

TABLES = config["tables"]
ABLATION = TABLES.get("ablation", {})
FIGURE2 = TABLES.get("figure2", {})
