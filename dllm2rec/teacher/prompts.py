"""BIGRec's Alpaca-style prompt (docs/method.md §2) and its truncation to ``cutoff_len`` tokens.

Verbatim from SAI990323/BIGRec: the instruction and input of ``data/game/process.ipynb`` and
``data/movie/process.ipynb`` (``csv_to_json``), wrapped by ``generate_prompt`` of ``train.py``
(SFT examples) and of ``inference.py`` (generation), whose header lines differ by one trailing
space (``"... the request. "`` in train.py, ``"... the request.  "`` in inference.py). The input
has no space after ``before:`` and ends in ``"\n "``, as there. The item noun picks the words:

=======  ===========  ==========  ===============
noun     plural       singular    verb
=======  ===========  ==========  ===============
game     video games  video game  played          (BIGRec's games prompt)
movie    movies       movie       watched         (BIGRec's movie prompt)
toy      toys         toy         bought          (ours: BIGRec has no toys prompt)
other    <noun>s      <noun>      interacted with (ours)
=======  ===========  ==========  ===============

Titles are quoted (``"T1", "T2"``) and listed oldest first. When the tokenised example is longer
than ``cutoff_len`` tokens the **oldest** history titles are dropped until it fits (at least one
title is always kept); the caller counts those truncated examples.
"""
from __future__ import annotations

NOUNS = {  # noun -> (plural, singular, verb)
    "game": ("video games", "video game", "played"),
    "movie": ("movies", "movie", "watched"),
    "toy": ("toys", "toy", "bought"),
}

HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
# the trailing spaces after HEADER: train.py's generate_prompt (SFT) and inference.py's (generation)
HEADER_END = {"train": " ", "inference": "  "}


def noun_forms(noun: str) -> tuple[str, str, str]:
    """(plural, singular, verb) for an item noun."""
    return NOUNS.get(noun, (noun + "s", noun, "interacted with"))


def format_prompt(titles: list[str], noun: str, stage: str = "inference") -> str:
    """The prompt up to and including ``### Response:\n`` (what generation starts from);
    ``stage`` "train" gives train.py's header (SFT examples), "inference" inference.py's."""
    nouns, singular, verb = noun_forms(noun)
    history = ", ".join(f'"{t}"' for t in titles)
    return (
        f"{HEADER}{HEADER_END[stage]}\n\n"
        f"### Instruction:\n"
        f"Given a list of {nouns} the user has {verb} before, please recommend a new {singular} "
        f"that the user likes to the user.\n\n"
        f"### Input:\n"
        f"The user has {verb} the following {nouns} before:{history}\n \n\n"
        f"### Response:\n"
    )


def format_response(title: str) -> str:
    """The training target: the quoted title (EOS is appended as a token, not as text)."""
    return f'"{title}"'


def normalize_title(title: str | None) -> str:
    """A title as the teacher sees it: surrounding whitespace removed and one outer pair of double
    quotes stripped (``"Doom"`` -> ``Doom``; ``Melissa & Doug 18" Doll`` and ``"Weird Al" Live``
    are unchanged). BIGRec strips quotes off both its generations and its item titles before
    embedding them (``.strip('"')`` in SAI990323/BIGRec data/game/evaluate.py and
    data/movie/evaluate.py); stripping exactly one pair keeps inch marks and inner quotes."""
    text = (title or "").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    return text


def item_titles(items) -> list[str]:
    """The ``title`` column of an items table, each through :func:`normalize_title`: the one
    place the teacher reads titles (prompts, SFT targets, grounding, title matches)."""
    return [normalize_title(t) for t in items.column("title").to_pylist()]


def clean_generation(text: str) -> str:
    """The answer inside a generated response: its first non-empty line, normalised like the item
    titles (:func:`normalize_title`), so that a generation of exactly ``format_response(t)`` gives
    back ``t`` for every normalised title ``t``.

    A trained teacher answers ``"Title"`` then EOS (BIGRec grounds the whole response); an
    under-trained one may go on (a new section, a second title on the next line), so only the first
    line is grounded (our choice). A line cut short (``"Title`` with no closing quote) loses its
    opening quote.
    """
    lines = [line for line in text.strip().split("\n") if line.strip()]
    line = lines[0].strip() if lines else ""
    if line.startswith('"') and not (len(line) >= 2 and line.endswith('"')):
        line = line[1:]
    return normalize_title(line)


def encode_example(tokenizer, titles: list[str], noun: str, cutoff_len: int, target: str | None = None):
    """Token ids of one example, oldest titles dropped until it fits in ``cutoff_len`` tokens.

    With ``target`` (training) the ids are prompt + quoted title + EOS; without it (generation)
    just the prompt. Returns ``(ids, n_dropped_titles)``. If even one title is too long the ids
    are cut at ``cutoff_len`` (training only; a generation prompt is kept whole).
    """
    titles = list(titles)
    dropped = 0
    while True:
        text = (format_prompt(titles, noun, "train") + format_response(target) if target is not None
                else format_prompt(titles, noun))
        ids = tokenizer(text)["input_ids"]
        if target is not None and tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        if len(ids) <= cutoff_len or len(titles) <= 1:
            break
        titles.pop(0)
        dropped += 1
    if target is not None and len(ids) > cutoff_len:
        ids = ids[:cutoff_len]
    return ids, dropped
