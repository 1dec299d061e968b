"""Serving a trained student: recommend scores as the model does, maps titles, refuses bad input, exports."""
import csv
import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from dllm2rec import student_run
from dllm2rec.cli import main as cli_main
from dllm2rec.dataset import fingerprint as dataset_fingerprint
from dllm2rec.evaluate import metrics_from_ranks, target_rank
from dllm2rec.io import UserError
from dllm2rec.recommend import Recommender, default_data_dir, export_student, read_histories, recommend
from dllm2rec.student.train import load_sequences, train_student
from synthetic import write_synthetic_dataset, write_synthetic_teacher

N_ITEMS = 40
STUDENT = {"hidden": 16, "dropout": 0.1, "lr": 0.01, "batch_size": 64, "epochs": 3, "patience": 3,
           "eval_batch_size": 256, "device": "cpu"}
METHODS = {"none": {"type": "none"},
           "dllm2rec": {"type": "dllm2rec", "variant": "paper", "lambda_d": 0.3, "k": 3, "gamma_p": 0.3,
                        "gamma_c": 0.5, "gamma_o": 0.1, "ed_weight": 0.3},
           "kar": {"type": "kar"}}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """results/{data,students} laid out as the workflow does, with three small trained students."""
    root = tmp_path_factory.mktemp("serve") / "results"
    data = root / "data" / "synth"
    write_synthetic_dataset(data, n_items=N_ITEMS, n_sequences=300, p_rule=0.8, seed=0)
    write_synthetic_teacher(root / "teacher", data, topn=10, width=8)
    for backbone, method in (("sasrec", "dllm2rec"), ("gru4rec", "none"), ("sasrec", "kar")):
        run = root / "students" / "synth" / "t" / backbone / method / "seed0"
        params = {"student": {**STUDENT, "epochs": 1 if method == "kar" else 3, "backbone": {}},
                  "method": METHODS[method]}
        train_student(str(data), backbone, method, params, 0, str(run), str(root / "work" / backbone / method),
                      teacher=None if method == "none" else str(root / "teacher"), threads=1)
    return root


def model_path(results, backbone="sasrec", method="dllm2rec"):
    return results / "students" / "synth" / "t" / backbone / method / "seed0" / "model.pt"


def own_scores(path, history, lengths):
    student, table, _ = student_run.load_student(path)
    with torch.no_grad():
        return student.scores(student.encode(history, lengths, table))


@pytest.mark.parametrize("backbone,method", [("sasrec", "dllm2rec"), ("gru4rec", "none")])
def test_scores_are_the_models_own(results, backbone, method):
    path = model_path(results, backbone, method)
    assert default_data_dir(path, "synth") == (results / "data" / "synth").resolve()
    rec = Recommender.load(path)
    _, max_len, splits = load_sequences(results / "data" / "synth")
    te = splits["test"]
    histories = [row[:n].tolist() for row, n in zip(te.history, te.lengths)]
    # the encoded histories are the dataset's own padded rows
    h, lengths = rec.encode_histories(histories)
    assert torch.equal(h, te.history) and torch.equal(lengths, te.lengths)
    ref = own_scores(path, te.history, te.lengths)
    assert torch.equal(rec.scores(h, lengths), ref)
    # served scores rank the test targets exactly as the pipeline's test metrics say
    metrics = json.loads((path.parent / "metrics.json").read_text())
    assert metrics_from_ranks(target_rank(rec.scores(h, lengths), te.target)) == pytest.approx(metrics["test"])
    out = rec.recommend(histories, k=5)
    top = ref.topk(5, dim=1)
    assert len(out) == len(histories)
    for row, vals, idx in zip(out, top.values.tolist(), top.indices.tolist()):
        assert [x["item_id"] for x in row] == idx and [x["rank"] for x in row] == [1, 2, 3, 4, 5]
        assert [x["score"] for x in row] == pytest.approx(vals, abs=0)
        assert [x["title"] for x in row] == [f"Item number {i}" for i in idx]
        assert [x["raw_id"] for x in row] == [f"i{i}" for i in idx]


def test_dllm2rec_serves_its_enriched_item_table(results):
    """DLLM2Rec's input table (b_i + w g(z_i)) is the one saved, not the bare ID embeddings."""
    path = model_path(results)
    student, table, _ = student_run.load_student(path)
    assert not torch.allclose(table, student.item_emb.weight)
    h, lengths = Recommender.load(path).encode_histories([[1, 2, 3]])
    with torch.no_grad():
        bare = student.scores(student.encode(h, lengths, None))
    assert not torch.allclose(Recommender.load(path).scores(h, lengths), bare)


def test_titles_raw_ids_truncation_and_exclusion(results):
    rec = Recommender.load(model_path(results))
    by_id = rec.recommend([[3, 7, 7, 12]], k=N_ITEMS)[0]
    assert rec.recommend([["Item number 3", "Item number 7", "Item number 7", "Item number 12"]], k=N_ITEMS,
                         by="title")[0] == by_id
    assert rec.recommend([["i3", "i7", "i7", "i12"]], k=N_ITEMS, by="raw_id")[0] == by_id
    assert rec.recommend([["3", "7", "7", "12"]], k=N_ITEMS)[0] == by_id  # digit strings (command line)
    assert len(by_id) == N_ITEMS and {3, 7, 12} <= {x["item_id"] for x in by_id}  # nothing excluded by default
    excluded = rec.recommend([[3, 7, 7, 12]], k=N_ITEMS, exclude_history=True)[0]
    assert [x["item_id"] for x in excluded] == [x["item_id"] for x in by_id if x["item_id"] not in (3, 7, 12)]
    assert [x["rank"] for x in excluded] == list(range(1, N_ITEMS - 2))
    # too long a history keeps its last max_len items (what the student was trained on)
    long = list(range(rec.max_len + 5))
    assert rec.recommend([long], k=5) == rec.recommend([long[-rec.max_len:]], k=5)
    # the one-shot function is the same
    assert recommend(model_path(results), [[3, 7, 7, 12]], k=N_ITEMS) == [by_id]


@pytest.mark.parametrize("history,by,message", [
    ([[1, 999]], "item_id", "history 1: unknown item id 999: item ids are 0..39"),
    ([[1], [2, -1]], "item_id", "history 2: unknown item id -1"),
    ([["x1"]], "item_id", "history 1: unknown item id 'x1'"),
    ([["i1", "i77"]], "raw_id", "history 1: unknown raw item id 'i77'"),
    ([["Item number 1", "Item nmber 2"]], "title", "history 1: unknown title 'Item nmber 2' .*did you mean 'Item number 2'"),
    ([[]], "item_id", "history 1 is empty"),
    ([1, 2], "item_id", "history 1: 1 is not a list of items"),
    ([[1]], "name", "by must be one of item_id, raw_id, title"),
])
def test_bad_histories_are_refused(results, history, by, message):
    with pytest.raises(UserError, match=message):
        Recommender.load(model_path(results)).recommend(history, by=by)


def test_ambiguous_title_and_wrong_dataset(results, tmp_path):
    rec = Recommender.load(model_path(results))
    items = pa.table({"item_id": pa.array(range(N_ITEMS), pa.int32()), "raw_id": [f"i{i}" for i in range(N_ITEMS)],
                      "title": ["Same"] * 2 + [f"T{i}" for i in range(2, N_ITEMS)]})
    dup = Recommender(rec.scorer, rec.meta, items)
    with pytest.raises(UserError, match=r"title 'Same' is shared by items \[0, 1\]"):
        dup.recommend([["Same"]], by="title")
    other = tmp_path / "other"
    write_synthetic_dataset(other, n_items=N_ITEMS + 1, n_sequences=50)
    with pytest.raises(UserError, match="41 items, the model 40: pass --data"):
        Recommender.load(model_path(results), data=other)


def test_unreadable_models_are_refused(results, tmp_path):
    with pytest.raises(UserError, match="method 'kar' adds teacher features .* cannot be served"):
        Recommender.load(model_path(results, "sasrec", "kar"))
    truncated = tmp_path / "model.pt"
    truncated.write_bytes(model_path(results).read_bytes()[:1000])
    with pytest.raises(UserError, match="model.pt: cannot read it as a student model"):
        Recommender.load(truncated)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.pt"), metadata={"dllm2rec": '{"format": "else"}'})
    with pytest.raises(UserError, match="other.pt: not a dllm2rec student model"):
        Recommender.load(tmp_path / "other.pt")
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.pt2: cannot read it as an exported program"):
        Recommender.load(tmp_path / "bad.pt2")
    (tmp_path / "moved.pt").write_bytes(model_path(results).read_bytes())
    with pytest.raises(UserError, match="moved.pt: its dataset 'synth' is not at results/data/synth above the model "
                                        "nor under the working directory: pass --data"):
        Recommender.load(tmp_path / "moved.pt")
    assert Recommender.load(tmp_path / "moved.pt", data=results / "data" / "synth").recommend([[1]], k=3)


def test_serving_reads_the_model_through_its_contract_without_the_trainer(results):
    """recommend and serve read model.pt through dllm2rec.student_run alone (once); the trainer is never imported."""
    import subprocess
    import sys

    code = ("import sys\nfrom dllm2rec.recommend import Recommender\nimport dllm2rec.serve\n"
            f"rec = Recommender.load({str(model_path(results))!r})\nprint(rec.recommend([[1, 2]], k=1)[0][0]['rank'])\n"
            "assert 'dllm2rec.student.train' not in sys.modules, 'the trainer was imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr[-2000:]


def test_the_dataset_is_the_one_the_model_records_not_its_paths(results, tmp_path):
    """A model in a run folder that names another dataset serves the items of the one it records."""
    import shutil

    moved = tmp_path / "results" / "students" / "wrong" / "t" / "sasrec" / "dllm2rec" / "seed0" / "model.pt"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(model_path(results).read_bytes())
    (tmp_path / "results" / "data" / "wrong").mkdir(parents=True)  # what the path names: not read
    shutil.copytree(results / "data" / "synth", tmp_path / "results" / "data" / "synth")
    rec = Recommender.load(moved)
    assert rec.meta["dataset"] == "synth" and rec.titles[:2] == ["Item number 0", "Item number 1"]
    assert default_data_dir(moved, "synth") == (tmp_path / "results" / "data" / "synth").resolve()


def test_cli(results, tmp_path, capsys):
    path = str(model_path(results))
    assert cli_main(["recommend", "--model", path, "--history", "3", "7", "12", "--k", "3"]) == 0
    printed = capsys.readouterr().out
    top = Recommender.load(path).recommend([[3, 7, 12]], k=3)[0]
    assert printed.startswith("history 1: 3 | 7 | 12\n")
    assert printed.splitlines()[1].split() == ["rank", "item_id", "score", "title"]
    assert printed.splitlines()[2].split() == ["1", str(top[0]["item_id"]), f"{top[0]['score']:.4f}", *top[0]["title"].split()]
    # a file: one history per line (ids, tab-separated titles or a JSON list), results as JSON or CSV
    hist_file = tmp_path / "h.txt"
    hist_file.write_text("# ids\n3 7 12\n\n[3, 7, 12]\n3,7,12\n")
    assert read_histories(hist_file) == [["3", "7", "12"], [3, 7, 12], ["3", "7", "12"]]
    titles = tmp_path / "t.txt"
    titles.write_text("Item number 3\tItem number 7\tItem number 12\nItem number 5\n")
    assert read_histories(titles, "title") == [["Item number 3", "Item number 7", "Item number 12"], ["Item number 5"]]
    out = tmp_path / "r.json"
    assert cli_main(["recommend", "--model", path, "--file", str(titles), "--by", "title", "--k", "3",
                     "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert [x["item_id"] for x in written[0]["items"]] == [x["item_id"] for x in top]
    assert [x["score"] for x in written[0]["items"]] == pytest.approx([x["score"] for x in top], abs=1e-5)
    assert written[1]["history"] == ["Item number 5"] and written[0]["items"][0]["title"] == top[0]["title"]
    out_csv = tmp_path / "r.csv"
    assert cli_main(["recommend", "--model", path, "--history", "[[3, 7, 12], [5]]", "--k", "3",
                     "--exclude-history", "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 6 and rows[0]["history"] == "1" and rows[3]["history"] == "2"
    assert not {r["item_id"] for r in rows[:3]} & {"3", "7", "12"}
    # failures: one clear line, exit status 1, no traceback
    capsys.readouterr()
    assert cli_main(["recommend", "--model", path, "--history", "3", "777"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: history 1: unknown item id '777'") and "Traceback" not in err
    assert cli_main(["recommend", "--model", str(tmp_path / "nope.pt"), "--history", "3"]) == 1
    assert "student model not found" in capsys.readouterr().err
    assert cli_main(["recommend", "--model", path]) == 1
    assert "--history ITEM ... or with --file FILE" in capsys.readouterr().err


@pytest.mark.parametrize("backbone,method", [("sasrec", "dllm2rec"), ("gru4rec", "none")])
def test_export_ranks_as_the_original(results, tmp_path, backbone, method):
    path = model_path(results, backbone, method)
    exported = tmp_path / f"{backbone}.pt2"
    assert cli_main(["export-student", "--model", str(path), "--out", str(exported)]) == 0
    program = torch.export.load(str(exported)).module()
    original = Recommender.load(path)
    _, _, splits = load_sequences(results / "data" / "synth")
    te = splits["test"]
    ref = own_scores(path, te.history, te.lengths)
    for rows in (slice(0, 1), slice(0, 7), slice(None)):  # any batch size
        got = program(te.history[rows], te.lengths[rows])
        assert torch.allclose(got, ref[rows], atol=1e-5)
        assert torch.equal(got.argsort(dim=1, descending=True, stable=True)[:, :10],
                           ref[rows].argsort(dim=1, descending=True, stable=True)[:, :10])
    # the exported file serves like model.pt (its dataset found from the model it came from)
    served = Recommender.load(exported)
    histories = [row[:n].tolist() for row, n in zip(te.history, te.lengths)]
    a, b = served.recommend(histories, k=10), original.recommend(histories, k=10)
    assert [[x["item_id"] for x in r] for r in a] == [[x["item_id"] for x in r] for r in b]
    assert [x["score"] for r in a for x in r] == pytest.approx([x["score"] for r in b for x in r], abs=1e-5)
    with pytest.raises(UserError, match="cannot be served"):
        export_student(model_path(results, "sasrec", "kar"), tmp_path / "kar.pt2")


class _Payload:
    """Unpickling this opens (creates) a file: what a malicious model.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _legacy_dict(path) -> dict:
    """A model of the old pickled format (dllm2rec-student/1), as the trainer wrote it before."""
    m = student_run.read_model(path)
    return {"format": "dllm2rec-student/1", **{k: m.meta[k] for k in ("backbone", "method", "method_type", "n_items",
            "max_len", "params", "seed", "best_epoch", "uses_teacher_at_inference")},
            "student_state": m.student_state, "method_state": m.method_state, "item_table": m.item_table}


def test_pickled_models_never_run_code(results, tmp_path, capsys):
    """A model.pt carrying a payload is refused unread; an old-format model is refused with the
    command that re-saves it, which converts a trusted file (and still refuses the payload)."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "students" / "synth" / "t" / "sasrec" / "none" / "seed0" / "model.pt"
    evil.parent.mkdir(parents=True)
    torch.save({**_legacy_dict(model_path(results)), "extra": _Payload(marker)}, evil)
    for load in (lambda: Recommender.load(evil, data=results / "data" / "synth"), lambda: student_run.load_student(evil)):
        with pytest.raises(UserError, match="old pickled format .* convert-model --trusted .*model.pt"):
            load()
    assert cli_main(["recommend", "--model", str(evil), "--history", "3"]) == 1
    assert "could run code when loaded" in capsys.readouterr().err
    assert cli_main(["convert-model", "--trusted", str(evil)]) == 1  # the second guard: weights_only
    assert "is not converted" in capsys.readouterr().err
    assert not marker.exists()
    # a genuine old model converts, in place, and serves exactly as the model it came from
    old = tmp_path / "old" / "model.pt"
    old.parent.mkdir()
    torch.save(_legacy_dict(model_path(results)), old)
    assert cli_main(["convert-model", "--trusted", str(old), "--dataset", "synth"]) == 0
    meta = student_run.read_model_meta(old)
    assert meta["dataset"] == "synth" and meta["dataset_fingerprint"] is None
    a = Recommender.load(old, data=results / "data" / "synth").recommend([[3, 7, 12]], k=5)
    assert a == Recommender.load(model_path(results)).recommend([[3, 7, 12]], k=5)


def test_model_records_its_dataset(results, tmp_path):
    """model.pt names its dataset and its content; a dataset of the same size but other content is refused."""
    meta = student_run.read_model_meta(model_path(results))
    assert meta["dataset"] == "synth" and meta["dataset_fingerprint"] == dataset_fingerprint(results / "data" / "synth")
    other = tmp_path / "other"
    write_synthetic_dataset(other, n_items=N_ITEMS, n_sequences=300, p_rule=0.8, seed=1)
    with pytest.raises(UserError, match="trained on dataset 'synth' with fingerprint .* holds another one"):
        Recommender.load(model_path(results), data=other)


# --- serving over HTTP (dllm2rec/serve.py) ----------------------------------------------------
def http(port, method, path, body=None, raw=None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    conn.request(method, path, data, {"Content-Type": "application/json"} if data is not None else {})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    conn.close()
    return resp.status, answer


@pytest.fixture(scope="module")
def server(results):
    import threading

    from dllm2rec.serve import make_server

    srv = make_server(Recommender.load(model_path(results)), "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_serve_answers_as_the_library_does(results, server):
    rec = Recommender.load(model_path(results))
    status, answer = http(server, "POST", "/recommend", {"history": [3, 7, 12], "k": 5})
    assert status == 200 and answer["items"] == rec.recommend([[3, 7, 12]], k=5)[0]
    status, answer = http(server, "POST", "/recommend", {"histories": [["Item number 3"], ["Item number 5"]],
                                                         "by": "title", "exclude_history": True})
    assert status == 200 and answer["results"] == rec.recommend([["Item number 3"], ["Item number 5"]], 10, "title", True)
    status, answer = http(server, "GET", "/health")
    assert status == 200 and answer["model"]["n_items"] == N_ITEMS and answer["model"]["method"] == "dllm2rec"


@pytest.mark.parametrize("method, path, body, status, reason", [
    ("POST", "/recommend", "not json", 400, "not JSON"),
    ("POST", "/recommend", "[1, 2]", 400, "must be a JSON object"),
    ("POST", "/recommend", {"history": []}, 400, "history 1 is empty"),
    ("POST", "/recommend", {"history": [3], "k": 0}, 400, '"k" must be a positive integer'),
    ("POST", "/recommend", {"history": [3], "k": "abc"}, 400, '"k" must be a positive integer'),
    ("POST", "/recommend", {"history": [3], "k": 2.5}, 400, '"k" must be a positive integer'),
    ("POST", "/recommend", {"history": [3, 777]}, 400, "unknown item id 777"),
    ("POST", "/recommend", {"history": [3], "by": "name"}, 400, '"by" must be one of'),
    ("POST", "/recommend", {"items": [3]}, 400, "unknown field"),
    ("POST", "/recommend", {"history": "3 7"}, 400, "must be a list of items"),
    ("POST", "/elsewhere", {"history": [3]}, 404, "no such path"),
    ("GET", "/recommend", None, 405, "POST a JSON body"),
    ("PUT", "/recommend", {"history": [3]}, 405, "POST /recommend"),
])
def test_serve_refuses_bad_requests_and_goes_on(server, method, path, body, status, reason):
    raw = body if isinstance(body, str) else None
    got, answer = http(server, method, path, None if raw else body, raw)
    assert got == status and reason in answer["error"]
    assert http(server, "POST", "/recommend", {"history": [3], "k": 2})[0] == 200  # still serving


def test_serve_command_loads_once_and_answers(results):
    """`python -m dllm2rec serve --port 0`: the real command, on a free loopback port."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "dllm2rec", "serve", "--model", str(model_path(results)),
                             "--port", "0", "--quiet"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        for _ in range(3):
            assert http(port, "POST", "/recommend", {"history": [3, 7], "k": 3})[0] == 200
        assert http(port, "POST", "/recommend", raw="{")[0] == 400
        assert proc.poll() is None  # a bad request does not stop it
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_load_benchmark_ci_sized(results):
    """benchmarks/serve.py at CI size: a few hundred requests on loopback, 1 and 100 clients."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run(str(model_path(results)), clients=(1, 100), requests=150, seconds=60, k=10)
    assert [lvl["clients"] for lvl in out["levels"]] == [1, 100]
    for lvl in out["levels"]:
        assert lvl["requests"] == 150 and lvl["failures"] == 0
        assert 0 < lvl["p50_ms"] <= lvl["p99_ms"] and lvl["requests_per_second"] > 0
    assert bench.percentile([1, 2, 3, 4], 0.5) == 2 and bench.percentile(list(range(1, 101)), 0.99) == 99
