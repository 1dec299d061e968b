"""KAR's open-world knowledge: one text per user and one per item, written by the teacher's LLM
and embedded by the text encoder (docs/methods.md, "KAR").

As YunjiaXi/Open-World-Knowledge-Augmented-Recommendation does (``preprocess/
generate_data_and_prompt.py``: ``generate_hist_prompt``, ``generate_item_prompt``; the answers
are encoded by ``knowledge_encoding/lm_encoding.py``), the LLM is asked once per **user** for
the reasoning behind the user's preferences, from the user's history, and once per **item** for
factual knowledge about it, from its title. Here:

- the LLM is the teacher's **base** model (no LoRA adapter: the recommender's fine-tuned model
  would answer with a next-item prediction), through the existing generation engine, greedy;
- a user's history is the user's **training interactions only**: the history and target of the
  user's latest train sequence (the most recent training interactions, oldest first). Valid and
  test targets never enter a prompt, nor do the teacher's predictions; a user without a train
  sequence gets no knowledge (a zero vector downstream);
- only the users and items the dataset's splits contain are asked about (every user of a
  sequence; every item of a history or target); the others get zero vectors;
- the prompts are KAR's MovieLens-1M prompts, verbatim for ``movie`` but for the user's
  demographics and star ratings (our datasets keep neither); other nouns use KAR's (commented)
  Amazon product prompts with the noun. With a tokenizer that has a chat template (an instruct
  model such as the default's SmolLM2-135M-Instruct) the prompt is sent as one user message, as
  KAR sends it to a chat model; otherwise as plain text;
- outputs are short: ``knowledge.max_new_tokens`` tokens, and the engine stops an answer at its
  first line break (:func:`dllm2rec.teacher.beam.answer_closed`).

Files (``layout.TEACHER_FILES``): ``knowledge/users.parquet`` (user, prompt, text) and
``knowledge/items.parquet`` (item_id, prompt, text) from :func:`generate_knowledge`; then
:func:`embed_knowledge` writes ``knowledge/item_embeddings.parquet`` (item_id, embedding: every
item, zeros for an item without knowledge) and ``knowledge/user_embeddings/{split}.parquet``
(seq_id, embedding of the sequence's **user's** knowledge: the same vector for every sequence of
one user), the contracts of the teacher's item and generated embeddings.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dllm2rec import dataset as ds
from dllm2rec import teacher_artifacts as ta
from dllm2rec.io import write_parquet
from dllm2rec.settings import GenerationSettings, KnowledgeSettings, teacher_dtype, teacher_section
from dllm2rec.teacher.prompts import item_titles, noun_forms

SPLITS = ("train", "valid", "test")

# KAR's ml-1m prompts (generate_hist_prompt / generate_item_prompt), without demographics or stars
MOVIE_USER = ("This user's movie viewing history over time is listed below. {history}Analyze user's preferences "
              "on movies (consider factors like genre, director/actors, time period/country, character, "
              "plot/theme, mood/tone, critical acclaim/award, production quality, and soundtrack). Provide clear "
              "explanations based on relevant details from the user's movie viewing history and other pertinent "
              "factors.")
MOVIE_ITEM = ("Introduce movie {title} and describe its attributes (including but not limited to genre, "
              "director/cast, country, character, plot/theme, mood/tone, critical acclaim/award, production "
              "quality, and soundtrack).")
# KAR's commented-out Amazon product prompts, with the dataset's noun
PRODUCT_USER = ("This user's {singular} history over time is listed below. {history}Analyze user's preferences on "
                "{plural} (consider factors like genre, functionality, quality, price, design, reputation). Provide "
                "clear explanations based on relevant details from the user's {singular} history and other "
                "pertinent factors.")
PRODUCT_ITEM = ("Introduce {singular} {title} and describe its attributes (including but not limited to genre, "
                "functionality, quality, price, design, reputation).")


def user_prompt(titles: list[str], noun: str) -> str:
    """The knowledge request about one user from the titles of their training interactions."""
    history = "".join(f'"{t}"; ' for t in titles)  # KAR: '"{title}", {rating} stars; '
    if noun == "movie":
        return MOVIE_USER.format(history=history)
    plural, singular, _verb = noun_forms(noun)
    return PRODUCT_USER.format(history=history, plural=plural, singular=singular)


def item_prompt(title: str, noun: str) -> str:
    """The knowledge request about one item from its title."""
    if noun == "movie":
        return MOVIE_ITEM.format(title=title)
    _plural, singular, _verb = noun_forms(noun)
    return PRODUCT_ITEM.format(title=title, singular=singular)


def user_train_items(sequences: pa.Table) -> dict[str, list[int]]:
    """{user: item ids of their training interactions, oldest first} for every user with a train
    sequence: the history and target of the user's latest train sequence (by target timestamp,
    then seq_id). Read from train rows only, so no valid or test target can enter."""
    train = sequences.filter(pc.equal(sequences.column("split"), "train"))
    users = train.column("user").to_pylist()
    ts = [t if t is not None else 0 for t in train.column("timestamp").to_pylist()]
    seq, hist, target = ds.seq_ids(train).tolist(), ds.histories(train), ds.targets(train).tolist()
    latest: dict[str, int] = {}
    for i, u in enumerate(users):
        j = latest.get(u)
        if j is None or (ts[i], seq[i]) > (ts[j], seq[j]):
            latest[u] = i
    return {u: [*hist[i], target[i]] for u, i in latest.items()}


def split_items(sequences: pa.Table) -> list[int]:
    """Every item id of a history or a target of any split, ascending."""
    return sorted({i for h in ds.histories(sequences) for i in h} | set(ds.targets(sequences).tolist()))


def _encode_prompt(tokenizer, text: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        # transformers 5 returns a BatchEncoding here (4.x a list of ids)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tokenizer(text)["input_ids"]


def generate_knowledge(base: str, data: str, params: dict, noun: str, teacher: str) -> None:
    """Ask the teacher's base LLM for every user's and every item's knowledge text (module docstring).
    ``params``: {"dtype", "generation": the teacher's generation settings, "knowledge":
    {"max_new_tokens", "batch_size"}}. Writes ``knowledge/{users,items}.parquet`` in the teacher
    folder ``teacher``."""
    from dllm2rec.teacher.generate import generate_texts
    from dllm2rec.teacher.model import load_base

    dataset = ds.load_dataset(data)
    dataset.require_titles()
    titles = item_titles(dataset.items)
    users = user_train_items(dataset.sequences)
    user_names = sorted(users)
    items = split_items(dataset.sequences)
    prompts = [user_prompt([titles[i] for i in users[u]], noun) for u in user_names]
    prompts += [item_prompt(titles[i], noun) for i in items]
    model, tokenizer = load_base(base, dtype=teacher_dtype(params))
    knowledge = teacher_section(KnowledgeSettings, params, "knowledge")
    gen = dataclasses.replace(teacher_section(GenerationSettings, params, "generation"), num_beams=1,
                              max_new_tokens=knowledge.max_new_tokens, batch_size=knowledge.batch_size)
    t0 = time.time()
    texts = [t.strip() for t in generate_texts(model, tokenizer, [_encode_prompt(tokenizer, p) for p in prompts], gen)]
    meta = {"base": str(base), "noun": noun, "dataset_fingerprint": dataset.fingerprint,
            "max_new_tokens": gen.max_new_tokens, "seconds": time.time() - t0,
            "source": "YunjiaXi/Open-World-Knowledge-Augmented-Recommendation preprocess/generate_data_and_prompt.py"}
    n = len(user_names)
    write_parquet(ta.knowledge_table(user_names, "user", prompts[:n], texts[:n]), ta.path(teacher, "knowledge_users"),
                  metadata=meta)
    write_parquet(ta.knowledge_table(items, "item", prompts[n:], texts[n:]), ta.path(teacher, "knowledge_items"),
                  metadata=meta)


def embed_knowledge(data: str, teacher: str, encoder: str | None = None, cache: str = "resources/downloads",
                    batch_size: int = 256, device: str = "cpu") -> None:
    """The knowledge texts of the teacher folder ``teacher`` (knowledge/users.parquet,
    knowledge/items.parquet) embedded by the text encoder into knowledge/item_embeddings.parquet
    and knowledge/user_embeddings/{split}.parquet."""
    import torch

    from dllm2rec.teacher import text_encoder as te

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dataset = ds.load_dataset(data)
    user_names, user_texts = ta.read_knowledge(ta.path(teacher, "knowledge_users"), "user")
    item_ids, item_texts = ta.read_knowledge(ta.path(teacher, "knowledge_items"), "item")
    model = te.load_encoder(encoder or te.DEFAULT_ENCODER, cache, device)
    dim = te.embedding_dim(model)
    meta = {"encoder": encoder or te.DEFAULT_ENCODER, "dim": dim, "text": "KAR knowledge",
            "dataset_fingerprint": dataset.fingerprint}  # the readers refuse a file of another dataset
    t0 = time.time()
    item_vec = np.zeros((dataset.n_items, dim), np.float32)
    if item_ids:
        item_vec[np.asarray(item_ids, dtype=np.int64)] = te.encode(model, item_texts, int(batch_size))
    user_vec = te.encode(model, user_texts, int(batch_size))
    row_of = {u: i for i, u in enumerate(user_names)}
    write_parquet(ta.item_embeddings_table(np.arange(dataset.n_items), item_vec),
                  ta.path(teacher, "knowledge_item_embeddings"), metadata={**meta, "seconds": time.time() - t0})
    for split in SPLITS:
        rows = dataset.split(split, by_seq_id=True)
        vec = np.zeros((rows.num_rows, dim), np.float32)
        for r, u in enumerate(rows.column("user").to_pylist()):
            if u in row_of:
                vec[r] = user_vec[row_of[u]]
        write_parquet(ta.generated_embeddings_table(ds.seq_ids(rows), vec, np.float32),
                      ta.path(teacher, "knowledge_user_embeddings", split), metadata=meta)
