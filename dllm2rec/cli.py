"""Command line entry used by every workflow rule: ``python -m dllm2rec COMMAND --key value ...``.

Each command is one function in the module named for its stage (:data:`COMMANDS`). Its options
are built with :mod:`argparse` from the function's signature, annotations and docstring, read
from the module's source (so ``--help`` imports neither torch nor the stage): ``--some-key``
is the argument ``some_key``; a parameter without a default is required.

How an annotation reads on the command line:

- ``str``, ``int``, ``float`` (``| None`` allowed): one value of that type (``--k abc`` and
  ``--k 2.5`` are refused by the parser, naming the option);
- ``bool``: a flag (``--exclude-history``; ``--exclude-history false`` also reads);
- ``dict``: one JSON object (rules pass a stage's config subtree that way);
- ``list[...]``: one or more values (``--students a b c``);
- no annotation: one or more values, a single one passed as it is (the rules' file lists).

A value of a list that starts with ``{`` or ``[`` is parsed as JSON. A count that must be
positive (:data:`POSITIVE`) is checked here. A :class:`~dllm2rec.io.UserError` is printed as one
clear line, without a traceback, and exits with status 1; a wrong option exits with status 2
and the command's usage.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path

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
    "knowledge": "dllm2rec.teacher.knowledge:generate_knowledge",
    "knowledge-embeddings": "dllm2rec.teacher.knowledge:embed_knowledge",
    # students (dllm2rec/student)
    "train-student": "dllm2rec.student.train:train_student",
    "train-group": "dllm2rec.student.fused:train_group",
    "recommend": "dllm2rec.recommend:recommend_command",
    "serve": "dllm2rec.serve:serve",
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

# integer options that must be at least 1, whatever the command
POSITIVE = {"k", "threads", "shards", "batch_size", "workers"}


# --- reading a command's signature from its source -------------------------------------------
def _function_node(target: str) -> ast.FunctionDef:
    module, func = target.split(":")
    package, *parts = module.split(".")
    path = Path(__file__).parent.joinpath(*parts).with_suffix(".py")
    if package != __package__ or not path.exists():  # not a module file of this package
        path = Path(importlib.util.find_spec(module).origin)
    tree = ast.parse(path.read_text(encoding="utf-8"))  # found without importing the package's stages
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            return node
    raise LookupError(f"{target}: no such function")


def summary(doc: str | None) -> str:
    """The first sentence of a docstring, on one line (the command list's description)."""
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", " ".join((doc or "").split())).replace("``", "")
    if ". " in text:
        text = text[:text.index(". ") + 1]
    return text if len(text) <= 100 else text[:97].rstrip() + "..."


def _parameters(node: ast.FunctionDef) -> list[tuple[str, str, str, bool]]:
    """(name, annotation as written or "", default as written, has a default) per parameter."""
    args = node.args.args + node.args.kwonlyargs
    defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults)
    defaults += list(node.args.kw_defaults)
    out = []
    for arg, default in zip(args, defaults):
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        out.append((arg.arg, annotation.strip("'\""), ast.unparse(default) if default is not None else "",
                    default is not None))
    return out


# --- value types ------------------------------------------------------------------------------
def _typed(kind, name: str):
    """An argparse type: ``kind`` (int or float), positive where :data:`POSITIVE` says so."""
    word = {int: "an integer", float: "a number"}[kind]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None
        if name in POSITIVE and value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}); pass the config subtree as one JSON string") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object ({...})")
    return value


_json_object.__name__ = "JSON"


def _boolean(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_boolean.__name__ = "bool"


def _maybe_json(text: str):
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # e.g. a title that starts with "["
    return text


def _add_option(parser: argparse.ArgumentParser, name: str, annotation: str, default: str, has_default: bool) -> None:
    """One option; an option not given is not passed, so the function's own default applies."""
    flag = "--" + name.replace("_", "-")
    kinds = {part.strip() for part in annotation.split("|") if part.strip()} - {"None"}
    shown = (" (required)" if not has_default else " (optional)" if default == "None"
             else f" (default: {default})")
    kw = {"dest": name, "required": not has_default, "default": argparse.SUPPRESS}
    if kinds == {"bool"}:
        kw.update(nargs="?", const=True, type=_boolean, metavar="true|false",
                  help=f"flag: {flag} alone means true{shown}")
    elif kinds == {"int"} or kinds == {"float"}:
        kind = int if "int" in kinds else float
        kw.update(type=_typed(kind, name), metavar=kind.__name__.upper(),
                  help=f"{kind.__name__}{', at least 1' if name in POSITIVE else ''}{shown}")
    elif kinds == {"dict"}:
        kw.update(type=_json_object, metavar="JSON", help=f"a JSON object{shown}")
    elif kinds == {"str"}:
        kw.update(metavar=name.upper(), help=f"str{shown}")
    elif any(k.startswith("list") for k in kinds) or not kinds:
        kw.update(nargs="+", type=_maybe_json, metavar=name.upper(),
                  help=f"one or more values{shown}" if kinds else f"one or more values (one is passed as it is){shown}")
    else:
        kw.update(metavar=name.upper(), help=f"{annotation}{shown}")
    parser.add_argument(flag, **kw)


def command_parser(command: str) -> tuple[argparse.ArgumentParser, set]:
    """The parser of ``command`` and the names of its parameters passed as a single value when
    given once (the unannotated ones)."""
    node = _function_node(COMMANDS[command])
    doc = ast.get_docstring(node) or ""
    parser = argparse.ArgumentParser(prog=f"python -m dllm2rec {command}", description=doc.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    loose = set()
    for name, annotation, default, has_default in _parameters(node):
        _add_option(parser, name, annotation, default, has_default)
        if not annotation:
            loose.add(name)
    return parser, loose


def top_help() -> str:
    lines = ["usage: python -m dllm2rec COMMAND [--option value ...]", "",
             "Every stage of the pipeline, one command each (the workflow's rules call them).",
             "python -m dllm2rec COMMAND --help lists a command's options.", "", "commands:"]
    width = max(map(len, COMMANDS))
    for command, target in COMMANDS.items():
        lines.append(f"  {command:<{width}}  {summary(ast.get_docstring(_function_node(target)))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(top_help(), file=sys.stderr)
        print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    command = argv[0]
    parser, loose = command_parser(command)
    try:
        args = vars(parser.parse_args(argv[1:]))
    except SystemExit as exit_:  # --help (0) or a wrong option (2, usage printed)
        return int(exit_.code or 0)
    for name in loose & set(args):
        if isinstance(args[name], list) and len(args[name]) == 1:
            args[name] = args[name][0]
    module, func = COMMANDS[command].split(":")
    try:
        getattr(importlib.import_module(module), func)(**args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
