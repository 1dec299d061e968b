"""Amazon review datasets: ``games`` (2018 Video_Games 5-core) and ``toys`` (2014 Toys_and_Games 5-core).

Reviews: one record per line (JSON; 2014 files may also hold Python dict literals), fields
``reviewerID`` (user), ``asin`` (item), ``unixReviewTime`` (timestamp). Metadata: one record per
line, ``asin`` and ``title``; 2018 lines are JSON, 2014 lines are Python dict literals
(parsed with :func:`ast.literal_eval`, never ``eval``). Files may be gzipped or plain.
"""
from __future__ import annotations

import ast
import json
import re

from dllm2rec.data.lines import Report, iter_lines, open_binary, require_file
from dllm2rec.data.raw import RawInteractions, frame, usable_title
from dllm2rec.io import UserError

ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")

HINTS = {
    "games": (("download Video_Games_5.json.gz from the Amazon Review Data (2018) page, "
               "https://nijianmo.github.io/amazon/index.html (5-core, Video Games)"),
              "download meta_Video_Games.json.gz from the same page (metadata, Video Games)"),
    "toys": (("download reviews_Toys_and_Games_5.json.gz from the Amazon 2014 page, "
              "https://jmcauley.ucsd.edu/data/amazon/links.html (5-core, Toys and Games)"),
             "download meta_Toys_and_Games.json.gz from the same page (metadata, Toys and Games)"),
}


def parse_record(text: str, literal_first: bool) -> dict | None:
    """A JSON object or Python dict literal; None when the line is neither (e.g. truncated)."""
    parsers = (ast.literal_eval, json.loads) if literal_first else (json.loads, ast.literal_eval)
    for parse in parsers:
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    return None


def read_reviews(path, report: Report, literal_first: bool):
    users, items, stamps = [], [], []
    n = 0
    with open_binary(path) as fh:
        for lineno, text in iter_lines(fh, str(path), report):
            n += 1
            rec = parse_record(text, literal_first)
            if rec is None:
                report.drop("malformed_lines", f"{path}:{lineno}")
                continue
            user, item, ts = rec.get("reviewerID"), rec.get("asin"), rec.get("unixReviewTime")
            if not isinstance(user, str) or not user or not isinstance(item, str) or not item:
                report.drop("records_missing_field", f"{path}:{lineno}")
                continue
            if (isinstance(ts, str) and ts.strip().isdigit()) or (isinstance(ts, float) and ts.is_integer()):
                ts = int(ts)
            if not isinstance(ts, int) or isinstance(ts, bool):
                report.drop("records_missing_field", f"{path}:{lineno}")
                continue
            users.append(user)
            items.append(item)
            stamps.append(ts)
    report.set("lines_read", n)
    if not users:
        where = report.first("malformed_lines", "records_missing_field")
        raise UserError(f"{path}: no readable review in {n} lines{where} (each line must be a JSON object with "
                        f"reviewerID, asin and unixReviewTime). Is paths.reviews the right file?")
    return frame(users, items, stamps)


def read_meta(path, report: Report, wanted: set[str], literal_first: bool) -> dict[str, str]:
    titles: dict[str, str] = {}
    seen: set[str] = set()
    with open_binary(path) as fh:
        for lineno, text in iter_lines(fh, str(path), report):
            m = ASIN.search(text)
            if m and m.group(1) not in wanted:
                continue  # an item nobody reviewed: skip the costly parse
            rec = parse_record(text, literal_first)
            if rec is None:
                report.drop("malformed_meta_lines", f"{path}:{lineno}")
                continue
            asin = rec.get("asin")
            if not isinstance(asin, str) or not asin:
                report.drop("meta_records_missing_asin", f"{path}:{lineno}")
                continue
            if asin not in wanted:
                continue
            if asin in seen:
                report.drop("duplicate_meta_records", f"{path}:{lineno}")
                continue
            seen.add(asin)
            title = usable_title(rec.get("title"))
            if title is None:
                report.drop("items_without_title", f"{path}:{lineno}")
                continue
            titles[asin] = title
    report.set("reviewed_items_without_meta", len(wanted - seen))
    return titles


def read_amazon(source: str, params: dict, name: str) -> RawInteractions:
    hint_reviews, hint_meta = HINTS[source]
    reviews = require_file(params, "reviews", name, hint_reviews)
    meta = require_file(params, "meta", name, hint_meta)
    report = Report()
    df = read_reviews(reviews, report, literal_first=False)
    titles = read_meta(meta, report, set(df["item"].unique().to_list()), literal_first=(source == "toys"))
    return RawInteractions(df, titles, report, "file", {"reviews": str(reviews), "meta": str(meta)})
