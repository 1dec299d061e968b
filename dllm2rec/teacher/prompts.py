"""BIGRec's Alpaca-style prompt (docs/method.md §2) and its truncation to ``cutoff_len`` tokens.

The instruction names the dataset's item noun with a plural and a verb:

=======  ========  ==========
noun     plural    verb
=======  ========  ==========
game     games     played      (BIGRec's games prompt)
movie    movies    watched     (BIGRec's movie prompt)
toy      toys      bought      (Amazon purchase data)
other    <noun>s   interacted with
=======  ========  ==========

Titles are quoted (``"T1", "T2"``) and listed oldest first. When the tokenised example is longer
than ``cutoff_len`` tokens the **oldest** history titles are dropped until it fits (at least one
title is always kept); the caller counts those truncated examples.
"""
from __future__ import annotations

NOUNS = {
    "game": ("games", "played"),
    "movie": ("movies", "watched"),
    "toy": ("toys", "bought"),
}

HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)


def noun_forms(noun: str) -> tuple[str, str]:
    """(plural, verb) for an item noun."""
    return NOUNS.get(noun, (noun + "s", "interacted with"))


def format_prompt(titles: list[str], noun: str) -> str:
    """The prompt up to and including ``### Response:\\n`` (what generation starts from)."""
    nouns, verb = noun_forms(noun)
    history = ", ".join(f'"{t}"' for t in titles)
    return (
        f"{HEADER}\n\n"
        f"### Instruction:\n"
        f"Given a list of {nouns} the user has {verb} before, please recommend a new {noun} "
        f"that the user likes to the user.\n\n"
        f"### Input:\n"
        f"The user has {verb} the following {nouns} before: {history}\n\n"
        f"### Response:\n"
    )


def format_response(title: str) -> str:
    """The training target: the quoted title (EOS is appended as a token, not as text)."""
    return f'"{title}"'


def clean_generation(text: str) -> str:
    """The answer inside a generated response: its first line, without surrounding quotes.

    A trained teacher answers ``"Title"`` then EOS; an under-trained one may go on (a second
    title, a new section), so only the first quoted title (or the first line) is grounded.
    """
    text = text.strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        text = text[1:end] if end > 0 else text[1:]
    text = text.split("\n", 1)[0]
    return text.strip().strip('"').strip()


def encode_example(tokenizer, titles: list[str], noun: str, cutoff_len: int, target: str | None = None):
    """Token ids of one example, oldest titles dropped until it fits in ``cutoff_len`` tokens.

    With ``target`` (training) the ids are prompt + quoted title + EOS; without it (generation)
    just the prompt. Returns ``(ids, n_dropped_titles)``. If even one title is too long the ids
    are cut at ``cutoff_len`` (training only; a generation prompt is kept whole).
    """
    titles = list(titles)
    dropped = 0
    while True:
        text = format_prompt(titles, noun) + (format_response(target) if target is not None else "")
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
