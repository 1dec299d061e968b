"""The command line: help for every command, the rules' invocations parse, clear errors."""
import re
import shlex

import pytest

from dllm2rec import cli
from workflow_utils import ROOT


def test_top_level_help_lists_every_command_with_a_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        line = next(x for x in out.splitlines() if x.split()[:1] == [command])
        assert len(line.split(None, 1)) == 2 and len(line.split(None, 1)[1]) > 10, line
    assert cli.main(["no-such-command"]) == 2 and "unknown command 'no-such-command'" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_help_with_types_and_defaults(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m dllm2rec {command}")
    node = cli._function_node(cli.COMMANDS[command])
    for name, *_ in cli._parameters(node):
        assert "--" + name.replace("_", "-") in out, name
    assert "(required)" in out


def test_recommend_help_names_types_and_defaults(capsys):
    assert cli.main(["recommend", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--k INT int, at least 1 (default: 10)" in out and "--by BY str (default: 'item_id')" in out
    assert "--history HISTORY [HISTORY ...]" in out and "--exclude-history [true|false]" in out


def rule_invocations():
    """(rule file, command, [option, ...]) of every `python -m dllm2rec` call in the workflow."""
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for shell in re.findall(r'shell:\n((?:\s+".*"\n?)+)', text):
            command = "".join(re.findall(r'"(.*)"', shell))
            if "-m dllm2rec" not in command:
                continue
            args = re.split(r"\s\d?>", command.split("-m dllm2rec", 1)[1])[0]  # up to the redirections
            words = shlex.split(args.replace("$(dirname ", "$(dirname_"))
            yield path.name, words[0], words[1:]


def test_every_rules_invocation_parses():
    """Each rule's command line, its placeholders filled as Snakemake fills them (a list input
    after a multi-value option: several words; the real values: tests/test_workflow_e2e.py),
    is accepted by the command's parser, and names only the function's parameters."""
    seen = set()
    for rule_file, command, words in rule_invocations():
        parser, _ = cli.command_parser(command)
        multi = {a.option_strings[0] for a in parser._actions if a.option_strings and a.nargs == "+"}
        argv, option, prev = [], None, command
        for w in words:
            after_value, prev = not prev.startswith("--"), w
            if w.startswith("--"):
                option = w
                argv.append(w)
            elif w.startswith("{params.") and after_value:
                continue  # a param that holds a whole option or nothing ({params.teacher}: "--teacher DIR" or "")
            elif w.startswith(("{params.cfg", "{params.spec", "{params.dllm2rec")):
                argv.append('{"a": 1}')
            elif w in ("{threads}", "{params.shard}", "{params.shards}", "{wildcards.seed}"):
                argv.append("2")
            elif w.startswith(("{", "$(")):
                argv += ["a", "b"] if option in multi else ["a"]
            else:
                argv.append(w)
        try:
            args = vars(parser.parse_args(argv))
        except SystemExit:
            pytest.fail(f"{rule_file}: python -m dllm2rec {command} {' '.join(argv)}")
        seen.add(command)
        for w in words:
            if w.startswith("--"):
                assert w[2:].replace("-", "_") in args, (rule_file, command, w)
    assert {"train-group", "table5", "teacher-shard", "sft", "select", "figure2"} <= seen


@pytest.mark.parametrize("argv, message", [
    (["recommend", "--model", "m.pt", "--k", "abc"], "argument --k: expected an integer, got 'abc'"),
    (["recommend", "--model", "m.pt", "--k", "2.5"], "argument --k: expected an integer, got '2.5'"),
    (["recommend", "--model", "m.pt", "--k", "0"], "argument --k: must be at least 1, got '0'"),
    (["recommend", "--model", "m.pt", "--history", "1", "--threads", "0"], "argument --threads: must be at least 1"),
    (["recommend", "--model", "m.pt", "--history"], "argument --history: expected at least one argument"),
    (["recommend", "--history", "1"], "the following arguments are required: --model"),
    (["table5", "--teacher", "a", "--students", "b", "--out", "x", "--out-seeds", "y", "--nope", "1"],
     "unrecognized arguments: --nope 1"),
    (["data", "--name", "d", "--params", "{bad", "--out", "o"], "argument --params: not valid JSON"),
])
def test_wrong_options_are_refused_with_the_reason(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_history_and_a_file_that_is_not_utf8(tmp_path, capsys):
    assert cli.main(["recommend", "--model", "m.pt", "--history", ""]) == 1
    assert "--history is empty" in capsys.readouterr().err
    latin = tmp_path / "h.txt"
    latin.write_bytes("Am\xe9lie (2001)\n".encode("latin-1"))
    assert cli.main(["recommend", "--model", "m.pt", "--by", "title", "--file", str(latin)]) == 1
    assert f"--file {latin}: not UTF-8 text" in capsys.readouterr().err


def test_values_keep_their_old_meaning():
    parser, loose = cli.command_parser("table5")
    args = vars(parser.parse_args(["--teacher", "t.json", "--students", "a", "b", "--out", "o", "--out-seeds", "s",
                                   "--methods", "none"]))
    assert args["students"] == ["a", "b"] and args["teacher"] == ["t.json"] and "teacher" in loose
    parser, _ = cli.command_parser("train-student")
    args = vars(parser.parse_args(["--data", "d", "--backbone", "sasrec", "--method", "none", "--params",
                                   '{"student": {}}', "--seed", "3", "--out", "o", "--work", "w", "--threads", "1"]))
    assert args["params"] == {"student": {}} and args["seed"] == 3 and "teacher" not in args  # its own default
    parser, _ = cli.command_parser("recommend")
    args = vars(parser.parse_args(["--model", "m", "--history", "[[1, 2], [3]]", "--exclude-history"]))
    assert args["history"] == [[[1, 2], [3]]] and args["exclude_history"] is True
    assert vars(parser.parse_args(["--model", "m", "--exclude-history", "false"]))["exclude_history"] is False
