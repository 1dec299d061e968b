"""Writers of tiny raw files for the data-stage tests, and the worked example they encode.

The worked example (max_history = 3). Users and their interactions (item, timestamp) in
file order; every item has a title unless noted.

  A: I1@10 I2@20 I3@30 Z1@35 I4@40 I5@50 I6@60 I7@70 I8@80 I9@90   (Z1: meta without title)
  B: J1@15 J3@45 J2@45                     (tie at 45: file order J3 then J2)
  C: C1@12                                 (one interaction: empty history)
  D: K1@5 Z2@30 K2@25 K3@35 K4@55 K5@85    (Z2: title " x ", too short; K2 listed late)
  E: E1@1 E2@2 E3@3 E4@45 E4@45            (the second E4 line is a duplicate)

Item ids in sorted order of raw id: C1=0, E1..E4=1..4, I1..I9=5..13, J1..J3=14..16, K1..K5=17..21.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

INTERACTIONS = [
    ("A", "I1", 10), ("A", "I2", 20), ("A", "I3", 30), ("A", "Z1", 35), ("A", "I4", 40),
    ("A", "I5", 50), ("A", "I6", 60), ("A", "I7", 70), ("A", "I8", 80), ("A", "I9", 90),
    ("B", "J1", 15), ("B", "J3", 45), ("B", "J2", 45),
    ("C", "C1", 12),
    ("D", "K1", 5), ("D", "Z2", 30), ("D", "K2", 25), ("D", "K3", 35), ("D", "K4", 55), ("D", "K5", 85),
    ("E", "E1", 1), ("E", "E2", 2), ("E", "E3", 3), ("E", "E4", 45), ("E", "E4", 45),
]
TITLED = ["C1", "E1", "E2", "E3", "E4"] + [f"I{k}" for k in range(1, 10)] + ["J1", "J2", "J3"] + \
    [f"K{k}" for k in range(1, 6)]
ID = {raw: i for i, raw in enumerate(sorted(TITLED))}


def title(raw: str) -> str:
    return f"Title of {raw}"


def ids(*raws: str) -> list[int]:
    return [ID[r] for r in raws]


# (user, history, target, timestamp) in chronological order, per rule
AMAZON_EXPECTED = [
    ("A", ids("I1", "I2", "I3"), ID["I4"], 40),
    ("B", ids("J1", "J3"), ID["J2"], 45),
    ("E", ids("E1", "E2", "E3"), ID["E4"], 45),
    ("A", ids("I2", "I3", "I4"), ID["I5"], 50),
    ("D", ids("K1", "K2", "K3"), ID["K4"], 55),
    ("A", ids("I3", "I4", "I5"), ID["I6"], 60),
    ("A", ids("I4", "I5", "I6"), ID["I7"], 70),
    ("A", ids("I5", "I6", "I7"), ID["I8"], 80),
    ("D", ids("K2", "K3", "K4"), ID["K5"], 85),
    ("A", ids("I6", "I7", "I8"), ID["I9"], 90),
]
AMAZON_SPLITS = ["train"] * 8 + ["valid", "test"]
MOVIELENS_EXPECTED = [row for row in AMAZON_EXPECTED if row[0] != "B"]
MOVIELENS_SPLITS = ["train"] * 7 + ["valid", "test"]


def meta_records() -> list[dict]:
    recs = [{"asin": raw, "title": title(raw), "categories": [["Toys"]]} for raw in TITLED]
    recs.append({"asin": "Z1", "brand": "no title here"})
    recs.append({"asin": "Z2", "title": " x "})
    recs.append({"asin": "Q9", "title": "Never reviewed"})
    return recs


def review_records() -> list[dict]:
    return [{"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5.0, "reviewText": "ok"}
            for u, i, t in INTERACTIONS]


def write_lines(path: Path, lines: list[bytes], gz: bool) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_games(tmp: Path, extra_reviews: list[bytes] = (), extra_meta: list[bytes] = ()) -> dict:
    """Amazon 2018 style: gzipped JSON lines for reviews and metadata."""
    reviews = [json.dumps(r).encode() for r in review_records()] + list(extra_reviews)
    meta = [json.dumps(r).encode() for r in meta_records()] + list(extra_meta)
    return {"reviews": str(write_lines(tmp / "Video_Games_5.json.gz", reviews, True)),
            "meta": str(write_lines(tmp / "meta_Video_Games.json.gz", meta, True))}


def write_toys(tmp: Path) -> dict:
    """Amazon 2014 style: JSON review lines, metadata lines as Python dict literals."""
    reviews = [json.dumps(r).encode() for r in review_records()]
    meta = [repr(r).encode() for r in meta_records()]
    return {"reviews": str(write_lines(tmp / "reviews_Toys_and_Games_5.json.gz", reviews, True)),
            "meta": str(write_lines(tmp / "meta_Toys_and_Games.json.gz", meta, True))}


def write_sasrec(tmp: Path, titles: bool = True) -> dict:
    """The example as 'user item' lines in per-user time order (Z items and duplicates left out)."""
    rows = sorted([(u, i, t) for u, i, t in dict.fromkeys(INTERACTIONS) if not i.startswith("Z")],
                  key=lambda r: (r[0], r[2]))
    path = tmp / "sasrec.txt"
    path.write_text("".join(f"{u} {i}\n" for u, i, _ in rows))
    out = {"file": str(path)}
    if titles:
        tpath = tmp / "titles.txt"
        tpath.write_text("".join(f"{raw}::{title(raw)}\n" for raw in TITLED))
        out["titles"] = str(tpath)
    return out


def params(source: str, paths: dict | None = None, rule: str = "amazon", max_history: int = 3,
           sample: dict | None = None) -> dict:
    # the worked example drops its duplicate E4@45 (the default keeps duplicates, as BIGRec does)
    p = {"source": source, "sample_rule": rule, "noun": "item", "max_history": max_history, "sample": sample,
         "drop_duplicates": True}
    if paths is not None:
        p["paths"] = paths
    return p


def write_official(tmp: Path, n: int = 5, seq_size: int = 4) -> Path:
    """A hand-made official folder: 10 train rows, 2 valid, 2 test; padding id n."""
    d = tmp / "official"
    d.mkdir()

    def pad(h):
        return h + [n] * (seq_size - len(h))
    train = [([0, 1], 2), ([1, 2, 3], 4), ([0], 1), ([4, 3, 2, 1], 0), ([2], 2),
             ([3, 3], 1), ([0, 1, 2], 3), ([4], 0), ([1, 4], 2), ([2, 0, 1, 3], 4)]
    pd.DataFrame({"seq": [pad(h) for h, _ in train], "len_seq": [len(h) for h, _ in train],
                  "next": [t for _, t in train]}).to_pickle(d / "train_data.df")
    for name, rows in (("val_data.csv", [([0, 1, 2], 3), ([4], 1)]), ("test_data.csv", [([1, 2], 0), ([3], 4)])):
        pd.DataFrame({"seq": [pad(h) for h, _ in rows], "len_seq": [len(h) for h, _ in rows],
                      "next": [float(t) for _, t in rows]}).to_csv(d / name, index=False)
    pd.DataFrame({"seq_size": [seq_size], "item_num": [n]}).to_pickle(d / "data_statis.df")
    (d / "id2name.txt").write_text("".join(f"{i}::Item number {i}\n" for i in range(n)))
    return d


def write_llara_release(tmp: Path, n: int = 5, seq_size: int = 4) -> Path:
    """A release in the shape of the LLaRA / DLLM2Rec family as it is found in the wild:
    no data_statis.df; validation and test as pandas pickles named Val_data.df / Test_data.df;
    a first interaction written as len_seq = 1 with an all-padding seq; one-character titles.
    Padding id n. Train: 6 rows (one padding-only), valid 2 (one padding-only), test 2."""
    d = tmp / "release"
    d.mkdir()

    def frame(rows):
        return pd.DataFrame({"seq": [h + [n] * (seq_size - len(h)) if h else [n] * seq_size for h, _ in rows],
                             "len_seq": [max(len(h), 1) for h, _ in rows], "next": [t for _, t in rows]})
    frame([([], 2), ([2], 1), ([2, 1], 0), ([0, 1, 2], 3), ([3], 4), ([1, 4, 3, 2], 0)]).to_pickle(d / "train_data.df")
    frame([([], 4), ([0, 1], 2)]).to_pickle(d / "Val_data.df")
    frame([([4, 0], 1), ([3, 2, 1], 4)]).to_pickle(d / "Test_data.df")
    names = {0: "M", 1: "Up", 2: "Heat", 3: "X", 4: "Alien"}  # "M" and "X": valid one-character names
    (d / "id2name.txt").write_text("".join(f"{i}::{t}\n" for i, t in names.items()))
    return d
