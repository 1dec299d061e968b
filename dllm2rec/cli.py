"""Command line entry used by every workflow rule: ``python -m dllm2rec COMMAND --key value ...``.

Each command is one function in the module named for its stage; ``--key value`` pairs become
keyword arguments (``--some-key`` -> ``some_key``). Values that start with ``{`` or ``[`` are
parsed as JSON (rules pass a stage's config subtree that way). A :class:`~dllm2rec.io.UserError`
is printed as one clear line, without a traceback, and exits with status 1.
"""
from __future__ import annotations

import importlib
import inspect
import json
import sys

from dllm2rec.io import UserError

# command -> "module:function"
COMMANDS = {
    # data stage (dllm2rec/data)
    "data": "dllm2rec.data.build:build_dataset",
    "export-official": "dllm2rec.data.official:export_official",
    "convert-official": "dllm2rec.data.official:convert_official",
    "popularity": "dllm2rec.evaluate:popularity_reference",
    # teacher (dllm2rec/teacher)
    "base-model": "dllm2rec.teacher.model:prepare_base_model",
    "sft": "dllm2rec.teacher.sft:train_adapter",
    "item-embeddings": "dllm2rec.teacher.ground:embed_items",
    "teacher-shard": "dllm2rec.teacher.generate:run_shard",
    "teacher-gather": "dllm2rec.teacher.generate:gather_shards",
    "teacher-metrics": "dllm2rec.teacher.metrics:teacher_metrics",
    "text-embeddings": "dllm2rec.teacher.text_encoder:text_embeddings",
    "recommender-teacher": "dllm2rec.teacher.recommender:recommender_teacher",
    "export-teacher": "dllm2rec.teacher.released:export_teacher",
    "import-teacher-ranks": "dllm2rec.teacher.released:import_ranks",
    "import-teacher-embeddings": "dllm2rec.teacher.released:import_item_embeddings",
    # students (dllm2rec/student)
    "train-student": "dllm2rec.student.train:train_student",
    "train-group": "dllm2rec.student.fused:train_group",
    "recommend": "dllm2rec.recommend:recommend_command",
    "export-student": "dllm2rec.recommend:export_student",
    "convert-model": "dllm2rec.student_run:convert_legacy_model",
    # the grid point chosen on validation (dllm2rec/selection.py)
    "select": "dllm2rec.selection:select",
    # tables (dllm2rec/tables.py)
    "table4": "dllm2rec.tables:table4",
    "table5": "dllm2rec.tables:table5",
    "table6": "dllm2rec.tables:table6",
    "ablation": "dllm2rec.tables:ablation_table",
    "figure2": "dllm2rec.tables:figure2",
    "table1": "dllm2rec.tables:table1",
    "table2": "dllm2rec.tables:table2",
    "table3": "dllm2rec.tables:table3",
    "teacher-table": "dllm2rec.tables:teacher_table",
    "training-curves": "dllm2rec.tables:training_curves",
    "sft-curve": "dllm2rec.tables:sft_curve",
    "table5-bars": "dllm2rec.tables:table5_bars",
}


def parse_kwargs(argv: list[str]) -> dict:
    kwargs: dict = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--"):
            raise UserError(f"expected --key value, got {key!r}")
        name = key[2:].replace("-", "_")
        values = []
        i += 1
        while i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        try:
            parsed = [json.loads(v) if v[:1] in "{[" else v for v in values]
        except json.JSONDecodeError as err:
            raise UserError(f"{key}: not valid JSON ({err}); pass the config subtree as one JSON string") from None
        if not parsed:
            kwargs[name] = True
        elif len(parsed) == 1:
            kwargs[name] = parsed[0]
        else:
            kwargs[name] = parsed
    return kwargs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m dllm2rec COMMAND --key value ...\ncommands:\n  " + "\n  ".join(COMMANDS), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, func = COMMANDS[argv[0]].split(":")
    try:
        kwargs = parse_kwargs(argv[1:])
        function = getattr(importlib.import_module(module), func)
        try:
            inspect.signature(function).bind(**kwargs)
        except TypeError as err:
            params = " ".join(f"--{p.replace('_', '-')}" for p in inspect.signature(function).parameters)
            raise UserError(f"{argv[0]}: {err}; it takes {params}") from None
        function(**kwargs)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
