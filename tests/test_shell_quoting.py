"""No config value can inject a shell command: every string that reaches a rule's shell command is
quoted (``{params.x:q}``, JSON subtrees as one quoted word), and names are validated by the schema.

The config below puts a ``$(...)``/backtick/quote payload into every free string key that reaches
a rule (the raw files' paths, the base model, the dataset's and the teacher's other strings go
through the JSON params; ``noun`` is passed on its own); names (dataset, teacher, method keys,
``noun``) that carry one are refused before any job (tests/test_bad_inputs.py, CONFIG_CASES).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from fixtures_data import write_games
from workflow_utils import copy_project, load_yaml, snakemake, write_config

INJECT = "$(touch PWNED)`touch PWNED`'\"x"
RULE_COMMANDS = ("data", "base-model", "sft", "item-embeddings", "teacher-shard", "train-group")


def _project(tmp_path: Path) -> Path:
    project = copy_project(tmp_path)
    cfg = load_yaml(project / "config.yaml")
    raw = project / f"raw{INJECT}"
    raw.mkdir()
    paths = write_games(raw)
    teacher = cfg["tables"]["teacher"]
    cfg["datasets"] = {"games": {"source": "games", "sample_rule": "amazon", "noun": "video game", "max_history": 10,
                                 "paths": {k: str(Path(v).relative_to(project)) for k, v in paths.items()}}}
    cfg["teachers"][teacher]["base_model"] = f"models/base{INJECT}"
    cfg["tables"]["datasets"] = ["games"]
    write_config(project / "inject.yaml", cfg)
    return project


def test_no_config_value_runs_a_shell_command(tmp_path):
    project = _project(tmp_path)
    res = snakemake(project, "-n", "-p", "--cores", "1", "--configfile", "inject.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    seen = set()
    for line in res.stdout.splitlines():
        if "-m dllm2rec " not in line:
            continue
        words = shlex.split(line)  # how the shell splits it (POSIX rules; $(...) in '...' stays literal)
        command = words[words.index("dllm2rec") + 1]
        seen.add(command)
        for word in words:
            if "touch" in word:  # the payload only ever inside one quoted word, intact
                assert INJECT.replace('"', '\\"') in word or INJECT in word, (command, word, line)
        if command in ("sft", "teacher-shard"):
            assert words[words.index("--noun") + 1] == "video game", line
        if command == "base-model":
            assert words[words.index("--spec") + 1] == f"models/base{INJECT}", line
    assert set(RULE_COMMANDS) <= seen, seen
    # and for real: the data rule reads the raw files from the payload-named folder (the fixture's 8
    # users are too few for a split, which the data stage says after reading every record), and
    # nothing else runs
    res = snakemake(project, "results/data/games/stats.json", "--cores", "1", "--configfile", "inject.yaml")
    log = (project / "results" / "logs" / "data" / "games.log").read_text()
    assert "the valid split is empty (4 samples in all)" in log, log
    assert not list(project.rglob("PWNED"))
