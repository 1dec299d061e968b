"""The kinds of teacher (``teachers.<name>.type``) and what each provides, without torch.

- ``bigrec`` (the default): the LLM teacher of the paper, fine-tuned, generating and grounding
  (``dllm2rec.teacher``: sft, generate, ground). Provides every teacher part.
- ``recommender``: a backbone of this package (``gru4rec``, ``sasrec``, ``dros``) trained
  without distillation (method ``none``) on a stated training split, by default the dataset's
  whole training split (the dataset built again without ``sample``); its top-N items, its
  distances (the row's best score minus the item's score) and its item table
  (:mod:`dllm2rec.teacher.recommender`). No texts.
- ``files``: a teacher computed elsewhere, imported from files in the released DLLM2Rec code's
  format (:mod:`dllm2rec.teacher.released`). No texts.

The workflow asks :func:`provides` at config time, so that a method that reads a part the kind
has not (KAR reads the LLM's knowledge texts, LLM-CF its generated texts) is refused before any job runs, and
:func:`label` names the kind in Table 5's teacher row. Standard library only (Snakemake imports
it while it builds the DAG).
"""
from __future__ import annotations

from dllm2rec.settings import RecommenderSettings, TeacherSettings, backbone_name, parse

DEFAULT = TeacherSettings.type
SPLITS = ("train", "valid", "test")
ALL_PARTS = frozenset({"ranks", "item_embeddings", "generated_embeddings", "text_item_embeddings",
                       "text_generated_embeddings", "knowledge_item_embeddings", "knowledge_user_embeddings"})
_NO_TEXT = frozenset({"ranks", "item_embeddings"})


def kind(tcfg: dict) -> str:
    return tcfg.get("type") or DEFAULT


def recommender_cfg(tcfg: dict) -> RecommenderSettings:
    """``teachers.<name>.recommender`` with its defaults (dllm2rec/settings.py)."""
    return parse(RecommenderSettings, tcfg.get("recommender"), "teachers.<name>.recommender")


def files_cfg(tcfg: dict) -> dict:
    return dict(tcfg.get("files") or {})


def ranked_splits(tcfg: dict) -> tuple[str, ...]:
    """The splits the teacher has ranks for: all three, but for ``files`` only those given
    (train is required; valid and test when their files are named)."""
    if kind(tcfg) != "files":
        return SPLITS
    given = files_cfg(tcfg)
    return ("train", *(s for s in ("valid", "test") if given.get(f"rank_{s}")))


def provides(tcfg: dict) -> dict[str, tuple[str, ...]]:
    """{teacher part: the splits it exists for} (per-item parts: all splits)."""
    if kind(tcfg) == "bigrec":
        return {part: SPLITS for part in ALL_PARTS}
    splits = ranked_splits(tcfg)
    return {"ranks": splits, "item_embeddings": SPLITS}


def missing_parts(tcfg: dict, needs: dict[str, list[str]]) -> list[str]:
    """What a method that reads ``needs`` ({part: [splits]}, from ``spec.teacher_needs``) lacks
    in this teacher: ``part`` or ``part/split`` names, empty when it has everything."""
    have = provides(tcfg)
    missing = []
    for part, splits in needs.items():
        if part not in have:
            missing.append(part)
        else:
            missing += [f"{part}/{s}" for s in splits if s not in have[part]]
    return missing


def has_test_ranks(tcfg: dict) -> bool:
    return "test" in ranked_splits(tcfg)


def label(tcfg: dict) -> str:
    """How the tables name the teacher: ``BIGRec``, ``SASRec (whole training split)``, ``files``."""
    k = kind(tcfg)
    if k == "bigrec":
        return "BIGRec"
    if k == "recommender":
        r = recommender_cfg(tcfg)
        where = "whole training split" if r.train_split == "whole" else "the students' training split"
        return f"{backbone_name(r.backbone)} ({where})"
    return files_cfg(tcfg).get("label") or "teacher files"
