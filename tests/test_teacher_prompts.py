"""The BIGRec prompt, its nouns, its truncation of the oldest history titles, and the one helper
that normalises item titles and generated answers alike."""
from __future__ import annotations

import pyarrow as pa
import pytest
from tiny_llm import make_tokenizer

from dllm2rec.teacher.prompts import (
    clean_generation,
    encode_example,
    format_prompt,
    format_response,
    item_titles,
    normalize_title,
)

# SAI990323/BIGRec's strings, as its code assembles them: data/game/process.ipynb and
# data/movie/process.ipynb (csv_to_json: instruction, input = history + "\n "), train.py and
# inference.py (generate_prompt). Copied from the source, not from prompts.py.
BIGREC_INSTRUCTION = {
    "game": "Given a list of video games the user has played before, please recommend a new video game that the user likes to the user.",
    "movie": "Given a list of movies the user has watched before, please recommend a new movie that the user likes to the user.",
}
BIGREC_HISTORY = {"game": "The user has played the following video games before:",
                  "movie": "The user has watched the following movies before:"}
BIGREC_TRAIN = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. 

### Instruction:
{instruction}

### Input:
{input}

### Response:
{output}"""
BIGREC_INFERENCE = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.  

### Instruction:
{instruction}

### Input:
{input}

### Response:
"""


def bigrec_input(noun, titles):
    history = BIGREC_HISTORY[noun]
    for i, t in enumerate(titles):  # csv_to_json's loop
        history += "\"" + t + "\"" if i == 0 else ", \"" + t + "\""
    return f"{history}\n "


@pytest.mark.parametrize("noun", ["game", "movie"])
def test_prompt_is_bigrecs_verbatim(noun):
    titles = ["Zelda", "Halo 3", 'Melissa & Doug 18" Doll']
    inp = bigrec_input(noun, titles)
    assert format_prompt(titles, noun) == BIGREC_INFERENCE.format(instruction=BIGREC_INSTRUCTION[noun], input=inp)
    sft = format_prompt(titles, noun, "train") + format_response("Doom")
    assert sft == BIGREC_TRAIN.format(instruction=BIGREC_INSTRUCTION[noun], input=inp, output='"Doom"')


def test_prompt_nouns_outside_bigrec():
    assert format_response("Doom") == '"Doom"'
    assert "toys the user has bought before, please recommend a new toy " in format_prompt(["A"], "toy")
    assert "books the user has interacted with before, please recommend a new book " in format_prompt(["A"], "book")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_truncation_drops_oldest_titles(tok):
    titles = [f"Movie Number {i} (19{i:02d})" for i in range(10)]
    full, dropped = encode_example(tok, titles, "movie", 10_000, target="Heat (1995)")
    assert dropped == 0 and full[-1] == tok.eos_token_id
    cutoff = len(full) - 5
    ids, dropped = encode_example(tok, titles, "movie", cutoff, target="Heat (1995)")
    assert len(ids) <= cutoff and dropped >= 1
    text = tok.decode(ids)
    assert '"Movie Number 0' not in text and f'"{titles[-1]}"' in text and text.endswith('"Heat (1995)"</s>')
    kept = titles[dropped:]
    assert ids == encode_example(tok, kept, "movie", 10_000, target="Heat (1995)")[0]
    # generation prompts: no response, no EOS; one title is always kept
    ids, dropped = encode_example(tok, titles, "movie", 5)
    assert dropped == 9 and tok.decode(ids).endswith("### Response:\n")


@pytest.mark.parametrize("raw, answer", [
    ('"Heat (1995)"', "Heat (1995)"),
    ('"Melissa & Doug 18" Doll"', 'Melissa & Doug 18" Doll'),  # an inch mark inside the title survives
    ('"Monitor 27""', 'Monitor 27"'),  # ... and at its end
    ('""Weird Al" Yankovic Live"', '"Weird Al" Yankovic Live'),
    ('  "Heat (1995)", "Fargo (1996)"', 'Heat (1995)", "Fargo (1996)'),  # one outer pair only, as BIGRec's strip
    ('"Heat (1995)"\n"Fargo (1996)"', "Heat (1995)"),  # only the first line is grounded
    ('\n"Heat (1995)"', "Heat (1995)"),
    ('"Heat (1995)\n### Input', "Heat (1995)"),  # cut short: the opening quote goes
    ("Heat (1995)\nmore text", "Heat (1995)"),
    ('""', ""),
    ("", ""),
])
def test_clean_generation(raw, answer):
    assert clean_generation(raw) == answer


@pytest.mark.parametrize("title, norm", [
    ("Doom", "Doom"), ('"Doom"', "Doom"), ("  Doom \n", "Doom"), ('Melissa & Doug 18" Doll', 'Melissa & Doug 18" Doll'),
    ('Monitor 27"', 'Monitor 27"'), ('"Weird Al" Yankovic Live', '"Weird Al" Yankovic Live'), ('""Quoted""', '"Quoted"'),
    ('"', '"'), (None, ""),
])
def test_normalize_title(title, norm):
    assert normalize_title(title) == norm


def test_a_perfect_generation_grounds_to_its_own_title():
    """The teacher is trained on format_response(title) of the normalised titles; generating that
    response exactly must give the title back after clean_generation, quotes inside or not."""
    titles = ['Melissa & Doug 18" Doll', '"Weird Al" Yankovic Live', 'Monitor 27"', '"Doom"', " Heat (1995) ", "Mario's \"Kart\""]
    table = pa.table({"item_id": list(range(len(titles))), "title": titles})
    for t in item_titles(table):
        assert clean_generation(format_response(t)) == t
        assert clean_generation(format_response(t) + "\nmore") == t
    assert item_titles(table)[3] == "Doom" and item_titles(table)[4] == "Heat (1995)"
