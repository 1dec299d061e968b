"""The BIGRec teacher end to end on a tiny random LLaMA and a tiny dataset (CPU, seconds)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_llm import WORDS, make_tiny_llama

from dllm2rec.io import UserError, parquet_metadata
from dllm2rec.teacher import generate as gen_mod
from dllm2rec.teacher.generate import gather_shards, run_shard
from dllm2rec.teacher.ground import embed_items, embed_texts, nearest_items
from dllm2rec.evaluate import metrics_from_ranks
from dllm2rec.teacher.metrics import hit_ranks, teacher_metrics
from dllm2rec.teacher.sft import train_adapter

PARAMS = {
    "base_model": "tiny",
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    "sft": {"train_samples": 16, "valid_samples": 8, "cutoff_len": 96, "lr": 3e-2, "batch_size": 8,
            "micro_batch_size": 4, "warmup_steps": 1, "epochs": 3, "patience": 5, "seed": 42},
    "generation": {"num_beams": 2, "max_new_tokens": 6, "batch_size": 4},
    "grounding": {"topn": 100, "batch_size": 8},
}
N_ITEMS = 30


def make_dataset(path, titles=True):
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    names = [f"{WORDS[i].title()} {WORDS[(i * 7 + 3) % len(WORDS)].title()} ({1950 + i})" for i in range(N_ITEMS)]
    names[29] = names[28]  # two items share a title: equivalent for the teacher's metrics
    pq.write_table(pa.table({"item_id": pa.array(np.arange(N_ITEMS, dtype=np.int32)),
                             "raw_id": [str(i) for i in range(N_ITEMS)],
                             "title": names if titles else [""] * N_ITEMS}), path / "items.parquet")
    splits = ["train"] * 24 + ["valid"] * 8 + ["test"] * 8
    hist = [rng.integers(0, N_ITEMS, size=rng.integers(1, 11)).astype(np.int32).tolist() for _ in splits]
    pq.write_table(pa.table({
        "seq_id": pa.array(np.arange(len(splits), dtype=np.int64) * 3 + 5),
        "user": [f"u{i}" for i in range(len(splits))],
        "history": pa.array(hist, type=pa.list_(pa.int32())),
        "target": pa.array(rng.integers(0, N_ITEMS, size=len(splits)).astype(np.int32)),
        "timestamp": pa.array(np.arange(len(splits), dtype=np.int64)),
        "split": splits,
    }), path / "sequences.parquet")
    (path / "stats.json").write_text(json.dumps({"has_titles": titles}))
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    base = make_tiny_llama(root / "base")
    data = make_dataset(root / "data")
    train_adapter(base, data, PARAMS, "movie", str(root / "adapter"), str(root / "work"))
    embed_items(base, data, PARAMS, str(root / "items.parquet"))
    return {"root": root, "base": base, "data": data, "adapter": str(root / "adapter"), "item_emb": str(root / "items.parquet")}


def shard(env, split, k, n, tag):
    out_r, out_e = env["root"] / f"{tag}.{split}.{k}.r.parquet", env["root"] / f"{tag}.{split}.{k}.e.parquet"
    run_shard(env["base"], env["adapter"], env["data"], env["item_emb"], split, k, n, PARAMS, "movie", str(out_r), str(out_e))
    return str(out_r), str(out_e)


def test_sft_reduces_loss_and_writes_adapter(env):
    meta = json.loads((env["root"] / "adapter" / "teacher_sft.json").read_text())
    curve = meta["curve"]
    assert [c["epoch"] for c in curve] == [0, 1, 2, 3]
    assert curve[-1]["train_loss"] < curve[1]["train_loss"]
    assert meta["best_eval_loss"] < curve[0]["eval_loss"]
    assert meta["params"] == PARAMS and meta["gradient_accumulation"] == 2
    assert (env["root"] / "adapter" / "adapter_config.json").exists()


def test_finished_sft_leaves_nothing_to_resume(env, tmp_path):
    """The fixture's SFT finished: its work folder holds no checkpoint nor best adapter, and a
    rerun trains afresh to the same adapter (deterministic on CPU)."""
    assert not (env["root"] / "work" / "checkpoint.pt").exists()
    assert not (env["root"] / "work" / "best").exists()
    out = tmp_path / "adapter"
    train_adapter(env["base"], env["data"], PARAMS, "movie", str(out), str(env["root"] / "work"))
    first = json.loads((env["root"] / "adapter" / "teacher_sft.json").read_text())
    again = json.loads((out / "teacher_sft.json").read_text())
    losses = lambda meta: [(c["train_loss"], c["eval_loss"]) for c in meta["curve"]]  # noqa: E731
    assert losses(again) == losses(first)
    assert not (env["root"] / "work" / "checkpoint.pt").exists()


def test_sft_never_keeps_the_untrained_adapter(env, tmp_path, monkeypatch):
    """Even when every trained epoch's validation loss is above the untrained adapter's, the
    adapter kept is a trained one (the best trained epoch), not epoch 0's."""
    from safetensors.torch import load_file

    from dllm2rec.teacher import sft

    losses = iter([0.5, 3.0, 2.0, 2.5])  # epoch 0 (untrained) lowest; epoch 2 the best trained one
    monkeypatch.setattr(sft, "evaluate", lambda *a, **k: next(losses))
    train_adapter(env["base"], env["data"], PARAMS, "movie", str(tmp_path / "out"), str(tmp_path / "work"))
    meta = json.loads((tmp_path / "out" / "teacher_sft.json").read_text())
    assert meta["best_epoch"] == 2 and meta["best_eval_loss"] == 2.0 and meta["curve"][0]["eval_loss"] == 0.5
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # peft starts lora_B at zero: trained


def _kill_in_epoch_2(monkeypatch):
    from dllm2rec.teacher import sft

    real, calls = sft.evaluate, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 and 1 finished and checkpointed, die in epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sft, "evaluate", dying)
    return lambda: monkeypatch.setattr(sft, "evaluate", real)


def test_sft_on_changed_data_does_not_resume(env, tmp_path, monkeypatch, capsys):
    """A checkpoint made on other data at the same path (issue 11: the sample seed changed) is not
    resumed: the adapter is the one a fresh SFT on the new data gives."""
    data = tmp_path / "data"
    make_dataset(data)
    restore = _kill_in_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(env["base"], str(data), PARAMS, "movie", str(tmp_path / "out"), str(tmp_path / "work"))
    restore()
    assert (tmp_path / "work" / "checkpoint.pt").exists()
    seqs = pq.read_table(data / "sequences.parquet")  # same path, other content: targets shifted
    targets = pa.array((np.asarray(seqs.column("target")) + 1) % N_ITEMS, pa.int32())
    pq.write_table(seqs.set_column(seqs.column_names.index("target"), "target", targets), data / "sequences.parquet")
    capsys.readouterr()
    train_adapter(env["base"], str(data), PARAMS, "movie", str(tmp_path / "out"), str(tmp_path / "work"))
    log = capsys.readouterr().out
    assert "resumed" not in log and "made from other inputs" in log
    assert not (tmp_path / "work" / "checkpoint.pt").exists()
    train_adapter(env["base"], str(data), PARAMS, "movie", str(tmp_path / "fresh"), str(tmp_path / "work2"))
    got = json.loads((tmp_path / "out" / "teacher_sft.json").read_text())["curve"]
    fresh = json.loads((tmp_path / "fresh" / "teacher_sft.json").read_text())["curve"]
    assert [c["eval_loss"] for c in got] == [c["eval_loss"] for c in fresh]
    old = json.loads((env["root"] / "adapter" / "teacher_sft.json").read_text())["curve"]
    assert [c["eval_loss"] for c in got] != [c["eval_loss"] for c in old]
    assert "sft: epoch 1/3 step 1/6 loss" in log and "ETA" in log


def test_item_embeddings(env):
    t = pq.read_table(env["item_emb"])
    assert t.column("item_id").to_pylist() == list(range(N_ITEMS))
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    emb = np.array(t.column("embedding").to_pylist())
    np.testing.assert_allclose(emb[28], emb[29], rtol=1e-5)  # same title, same embedding


def test_text_embeddings_are_the_last_norm_state_with_the_adapter_off(env):
    """embed_texts runs the model's body without its LM head: the embedding equals the full
    model's final hidden state at the text's last token, and through a PeftModel with its
    adapter disabled it equals the base model's (the grounding path)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(env["base"])
    base = AutoModelForCausalLM.from_pretrained(env["base"]).eval()
    texts = ["alpha beta", "gamma", "delta epsilon zeta eta"]
    got = embed_texts(base, tok, texts, batch_size=2)
    for text, row in zip(texts, got):
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.inference_mode():
            want = base(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1].numpy()
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(env["base"]), env["adapter"]).eval()
    with peft.disable_adapter():
        np.testing.assert_array_equal(embed_texts(peft, tok, texts, batch_size=2), got)
    assert not np.allclose(embed_texts(peft, tok, texts, batch_size=2), got)  # the trained adapter, when on


def test_generation_deterministic_and_shards_equal_unsharded(env):
    full = shard(env, "test", 1, 1, "a")
    again = shard(env, "test", 1, 1, "b")
    ra, rb = pq.read_table(full[0]), pq.read_table(again[0])
    assert ra.column("generated").to_pylist() == rb.column("generated").to_pylist()
    assert ra.column("topk_items").to_pylist() == rb.column("topk_items").to_pylist()

    parts = [shard(env, "test", k, 3, "s") for k in (1, 2, 3)]
    out_r, out_e = env["root"] / "g.r.parquet", env["root"] / "g.e.parquet"
    gather_shards([p[0] for p in parts], [p[1] for p in parts], str(out_r), str(out_e))
    g = pq.read_table(out_r)
    assert g.schema.remove_metadata() == ra.schema.remove_metadata()
    assert g.column("seq_id").to_pylist() == ra.column("seq_id").to_pylist()
    assert g.column("generated").to_pylist() == ra.column("generated").to_pylist()
    assert g.column("topk_items").to_pylist() == ra.column("topk_items").to_pylist()
    np.testing.assert_allclose(np.array(g.column("topk_dist").to_pylist()), np.array(ra.column("topk_dist").to_pylist()), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g.column("target_dist").to_numpy(), ra.column("target_dist").to_numpy(), rtol=1e-4, atol=1e-5)
    e = pq.read_table(out_e)
    assert e.schema.field("embedding").type == pa.list_(pa.float16(), 32)
    assert e.column("seq_id").to_pylist() == ra.column("seq_id").to_pylist()
    meta, metas = parquet_metadata(out_r), [parquet_metadata(p[0]) for p in parts]
    assert meta["n_sequences"] == 8 and meta["generation_seconds"] == pytest.approx(sum(m["generation_seconds"] for m in metas))
    assert len(ra.column("topk_items")[0]) == N_ITEMS  # topn 100 > n_items keeps all

    out = env["root"] / "metrics.json"
    teacher_metrics(env["data"], str(out), ranks=str(out_r))
    m = json.loads(out.read_text())
    assert set(m["test"]) == {f"{w}@{k}" for w in ("HR", "NDCG") for k in (1, 5, 10, 20)}
    assert m["n_test"] == 8 and m["inference_seconds"] == pytest.approx(meta["generation_seconds"] + meta["grounding_seconds"])


def test_grounding_picks_the_known_nearest_items(env, monkeypatch, tmp_path):
    # every generated text embeds to the point 2*e0 and the items sit at known points
    dim = 32
    items = np.zeros((N_ITEMS, dim), np.float32)
    items[:, 0] = np.arange(N_ITEMS) * 10.0  # item i at 10*i along axis 0
    items[3, 0], items[4, 0] = 1.0, 3.0      # items 3 and 4 tie at squared distance 1
    items[7, 1] = 2.0                        # item 7 at (10*7, 2)
    emb_path = tmp_path / "fake_items.parquet"
    from dllm2rec.teacher_artifacts import fixed_list
    pq.write_table(pa.table({"item_id": pa.array(np.arange(N_ITEMS, dtype=np.int32)), "embedding": fixed_list(items, np.float32)}), emb_path)

    def fake_embed(model, tokenizer, texts, batch_size, desc=None):
        out = np.zeros((len(texts), dim), np.float32)
        out[:, 0] = 2.0
        return out

    monkeypatch.setattr(gen_mod, "embed_texts", fake_embed)
    params = {**PARAMS, "grounding": {"topn": 4, "batch_size": 8}}
    r, e = tmp_path / "r.parquet", tmp_path / "e.parquet"
    run_shard(env["base"], env["adapter"], env["data"], str(emb_path), "valid", 1, 1, params, "movie", str(r), str(e))
    t = pq.read_table(r)
    assert t.column("topk_items").to_pylist()[0] == [3, 4, 0, 1]
    np.testing.assert_allclose(t.column("topk_dist").to_pylist()[0], [1.0, 1.0, 4.0, 64.0])
    seqs = pq.read_table(f"{env['data']}/sequences.parquet").to_pandas()
    targets = seqs[seqs.split == "valid"].sort_values("seq_id").target.to_numpy()
    expected = ((items[targets] - np.eye(dim, dtype=np.float32)[0] * 2) ** 2).sum(1)
    np.testing.assert_allclose(t.column("target_dist").to_numpy(), expected, rtol=1e-5)


def test_nearest_items_small_case():
    import torch
    items = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    top, dist, tgt = nearest_items(torch.tensor([[2.0], [6.0]]), items, 3, targets=[3, 0])
    assert top.tolist() == [[1, 2, 0], [3, 2, 1]]
    np.testing.assert_allclose(dist, [[1, 1, 4], [0, 9, 25]])
    np.testing.assert_allclose(tgt, [16, 36])


def test_metrics_title_equivalence():
    titles = ["a", "b", "c", "c"]
    ranks = hit_ranks([[0, 3, 1], [1, 0, 2], [1, 0, 2]], [2, 3, 0], titles)
    assert ranks.tolist() == [1, 2, 1]  # item 3 shares item 2's title
    m = metrics_from_ranks(np.array([0, 4, -1, 19]))  # -1: not in the teacher's list
    assert m["HR@1"] == 0.25 and m["HR@5"] == 0.5 and m["HR@20"] == 0.75
    assert m["NDCG@5"] == pytest.approx((1 + 1 / np.log2(6)) / 4)


def test_dataset_without_titles_is_a_clear_error(env, tmp_path):
    data = make_dataset(tmp_path / "notitles", titles=False)
    with pytest.raises(UserError, match="no item titles.*ml-100k"):
        embed_items(env["base"], data, PARAMS, str(tmp_path / "x.parquet"))


def test_sft_resumes_after_a_kill(env, tmp_path, monkeypatch):
    restore = _kill_in_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(env["base"], env["data"], PARAMS, "movie", str(tmp_path / "out"), str(tmp_path / "work"))
    assert not (tmp_path / "out").exists() and (tmp_path / "work" / "checkpoint.pt").exists()
    restore()
    train_adapter(env["base"], env["data"], PARAMS, "movie", str(tmp_path / "out"), str(tmp_path / "work"))
    resumed = json.loads((tmp_path / "out" / "teacher_sft.json").read_text())["curve"]
    full = json.loads((env["root"] / "adapter" / "teacher_sft.json").read_text())["curve"]
    assert [c["epoch"] for c in resumed] == [0, 1, 2, 3]
    np.testing.assert_allclose([c["eval_loss"] for c in resumed], [c["eval_loss"] for c in full], rtol=1e-5)


def test_sft_bf16_on_cpu(env, tmp_path):
    params = {**PARAMS, "dtype": "bfloat16", "sft": {**PARAMS["sft"], "epochs": 1}}
    train_adapter(env["base"], env["data"], params, "movie", str(tmp_path / "out"), str(tmp_path / "work"))
    meta = json.loads((tmp_path / "out" / "teacher_sft.json").read_text())
    assert len(meta["curve"]) == 2 and np.isfinite(meta["curve"][1]["eval_loss"])


def test_train_coverage_generates_for_the_covered_rows_only(env, tmp_path):
    """generation.train_coverage: the train shards hold a seeded subset, the gathered files
    declare it, and the students' loader marks exactly those rows (docs/teacher.md)."""
    from dllm2rec import teacher_artifacts as ta
    from dllm2rec.dataset import load_dataset
    from dllm2rec.distill.teacher_data import load_teacher
    from dllm2rec.teacher.coverage import covered_positions

    params = {**PARAMS, "generation": {**PARAMS["generation"], "train_coverage": 10, "train_coverage_seed": 1}}
    parts = []
    for k in (1, 2):
        r, e = tmp_path / f"{k}.r.parquet", tmp_path / f"{k}.e.parquet"
        run_shard(env["base"], env["adapter"], env["data"], env["item_emb"], "train", k, 2, params, "movie", str(r), str(e))
        parts.append((str(r), str(e)))
    teacher = tmp_path / "teacher"
    gather_shards([p[0] for p in parts], [p[1] for p in parts], str(ta.path(teacher, "ranks", "train")),
                  str(ta.path(teacher, "generated_embeddings", "train")))
    train = load_dataset(env["data"]).split("train", by_seq_id=True)
    ids = train.column("seq_id").to_numpy()
    held = pq.read_table(ta.path(teacher, "ranks", "train")).column("seq_id").to_numpy()
    assert np.array_equal(held, ids[covered_positions(len(ids), 10, 1)])
    assert ta.read_coverage(ta.path(teacher, "ranks", "train")) == {
        "train_coverage": 10, "seed": 1, "n_rows": len(ids), "n_covered": 10}
    tt = load_teacher(teacher, {"train": ids[::-1]}, N_ITEMS, parts=["ranks", "generated_embeddings"])
    covered = tt.splits["train"].covered.numpy()
    assert np.array_equal(ids[::-1][covered], held[::-1]) and tt.splits["train"].topk_items.shape[0] == 10
