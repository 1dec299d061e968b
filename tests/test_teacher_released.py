"""dllm2rec.teacher.released: teacher files in istarryn/DLLM2Rec's format, read back with the
released code's own reading lines (main.py), and imported again into our contract."""
import numpy as np
import pandas as pd
import pytest
import torch

from dllm2rec import dataset as ds
from dllm2rec import teacher_artifacts as ta
from dllm2rec.data.official import export_official
from dllm2rec.teacher import released
from synthetic import write_synthetic_dataset, write_synthetic_teacher

N_ITEMS = 40


@pytest.fixture
def teacher(tmp_path):
    data, teacher = tmp_path / "data", tmp_path / "teacher"
    write_synthetic_dataset(data, n_items=N_ITEMS, n_sequences=200, seed=3)
    (data / "stats.json").write_text("{}")
    write_synthetic_teacher(teacher, data, topn=12, width=8, rule_seed=3)  # ranks rows shuffled: joins use seq_id
    out = tmp_path / "tocf"
    released.export_teacher(str(teacher), str(data), str(out))
    return data, teacher, out


def test_released_code_reads_the_exported_files_in_its_row_order(teacher, tmp_path):
    data, tdir, out = teacher
    # istarryn/DLLM2Rec main.py, verbatim but for the paths and the device
    candidate_path = str(out / "myrank_train.txt")
    all_candidate = np.loadtxt(candidate_path)
    all_candidate = torch.LongTensor(all_candidate)  # [train_data_num, k]
    llm_confidence_path = str(out / "confidence_train.txt")
    llm_confidence = np.loadtxt(llm_confidence_path)
    llm_confidence = torch.tensor(llm_confidence, dtype=torch.float)  # [train_data_num, k]
    llm_all_emb_path = str(out / "all_embeddings.pt")
    llm_all_emb = torch.load(llm_all_emb_path)  # [num_item, 4096]
    # ... and its training data, as export-official writes it; main.py indexes the teacher's
    # rows with the row labels of train_data.sample(n=batch_size)
    export_official(str(data), str(tmp_path / "official"))
    train_data = pd.read_pickle(tmp_path / "official" / "train_data.df")
    batch = train_data.sample(n=16, random_state=0)
    sample = batch.index
    candidate = all_candidate[sample]

    dataset = ds.load_dataset(data)
    train = dataset.split("train", by_seq_id=True)
    items, dist, _ = ta.read_ranks(ta.path(tdir, "ranks", "train"), ds.seq_ids(train), N_ITEMS, tdir)
    assert all_candidate.shape == (train.num_rows, 12) and all_candidate.dtype == torch.int64
    assert torch.equal(candidate, torch.from_numpy(items[np.asarray(sample)]))  # row i = i-th train sequence
    hist = [list(h) for h in ds.histories(train)]
    for label, row in zip(sample, batch.itertuples()):  # the same sequence on both sides
        assert row.next == ds.targets(train)[label] and list(row.seq[:row.len_seq]) == hist[label]
    np.testing.assert_allclose(llm_confidence.numpy(), np.sqrt(dist), rtol=1e-6)  # plain L2, as BIGRec's cdist
    emb = ta.read_item_embeddings(ta.path(tdir, "item_embeddings"), N_ITEMS)
    assert llm_all_emb.shape == (N_ITEMS, 8) and torch.equal(llm_all_emb, torch.from_numpy(emb))
    # main.py's look-up of the history items' embeddings (the padding id N_ITEMS is masked out)
    seq = torch.LongTensor(np.stack(batch["seq"].to_numpy()))
    llm_emb = torch.zeros(seq.size(0), seq.size(1), 8)
    mask = seq < llm_all_emb.size(0)
    llm_emb[mask] = llm_all_emb[seq[mask]]
    assert torch.equal(llm_emb[0, 0], torch.from_numpy(emb[hist[sample[0]][0]]))


def test_imported_files_give_back_the_teacher(teacher, tmp_path):
    data, tdir, out = teacher
    dataset = ds.load_dataset(data)
    back = tmp_path / "imported"
    for split in ("train", "valid", "test"):
        released.import_ranks(str(data), split, str(out / f"myrank_{split}.txt"), str(out / f"confidence_{split}.txt"),
                              str(ta.path(back, "ranks", split)), target=str(out / f"target_{split}.txt"))
        ids = ds.seq_ids(dataset.split(split, by_seq_id=True))
        want = ta.read_ranks(ta.path(tdir, "ranks", split), ids, N_ITEMS, tdir)
        got = ta.read_ranks(ta.path(back, "ranks", split), ids, N_ITEMS, back)
        assert np.array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5)
    released.import_item_embeddings(str(data), str(out / "all_embeddings.pt"), str(ta.path(back, "item_embeddings")))
    assert np.array_equal(ta.read_item_embeddings(ta.path(back, "item_embeddings"), N_ITEMS),
                          ta.read_item_embeddings(ta.path(tdir, "item_embeddings"), N_ITEMS))


def test_without_target_distances_they_are_zero_and_said_so(teacher, tmp_path):
    from dllm2rec.io import parquet_metadata

    data, _, out = teacher
    path = tmp_path / "train.parquet"
    released.import_ranks(str(data), "train", str(out / "myrank_train.txt"), str(out / "confidence_train.txt"), str(path))
    assert parquet_metadata(path)["target_dist"] == "absent"
    ids = ds.seq_ids(ds.load_dataset(data).split("train", by_seq_id=True))
    assert not ta.read_ranks(path, ids, N_ITEMS, tmp_path)[2].any()
