"""What every source reader returns: interactions in file order, item titles, and a report."""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from dllm2rec.data.lines import Report


@dataclass
class RawInteractions:
    """``frame`` has columns user (str), item (str), timestamp (int64), in file order.

    ``titles`` maps raw item id -> usable title (already filtered by the title rule), or is
    None for a source without titles. ``timestamps`` is "file" (real times from the source)
    or "none" (the source has none: the ``timestamp`` column is the line number, which orders
    each user's history but is never used as a time; the split is then per user).
    """

    frame: pl.DataFrame
    titles: dict[str, str] | None
    report: Report
    timestamps: str = "file"
    source_info: dict = field(default_factory=dict)


def usable_title(title) -> str | None:
    """A title stripped of surrounding blanks, or None when it is missing, not text, or blank.

    The length rule (docs/method.md §1.1) is applied afterwards by :func:`apply_title_rule`.
    """
    if not isinstance(title, str):
        return None
    title = title.strip()
    return title or None


# A title longer than this is cut to it (counted as ``titles_capped``; stats.json records the cap as
# ``max_title_chars``): every later stage tokenizes titles (prompts, grounding, the text encoder),
# and one 10,000-character title made the item-embeddings job need ~20 GB. 500 characters are at
# most ~500 tokens of a subword tokenizer in practice (2,000 UTF-8 bytes for a byte-level one).
MAX_TITLE_CHARS = 500


def apply_title_rule(titles: dict[str, str] | None, min_chars: int, report,
                     keep_short: bool = False) -> dict[str, str] | None:
    """docs/method.md §1.1: keep titles longer than ``min_chars`` characters (default 1); count the rest.
    A title over :data:`MAX_TITLE_CHARS` characters is cut to them (``titles_capped``).

    A short title drops its item (``items_with_short_title``, also in ``items_without_title``),
    never the other items' titles. ``keep_short`` (sources whose item ids and splits are fixed,
    such as the official format) keeps the item with its short title, counted as
    ``short_titles_kept``.
    """
    if titles is None:
        return None
    kept = {}
    for raw_id, title in titles.items():
        if len(title) > MAX_TITLE_CHARS:
            report.drop("titles_capped", f"item {raw_id} ({len(title)} characters)")
            title = title[:MAX_TITLE_CHARS].rstrip()
        if len(title) > min_chars:
            kept[raw_id] = title
        elif keep_short:
            kept[raw_id] = title
            report.drop("short_titles_kept", f"item {raw_id} (title {title!r})")
        else:
            report.drop("items_with_short_title", f"item {raw_id} (title {title!r})")
            report.drop("items_without_title", f"item {raw_id} (title {title!r})")
    return kept


def frame(users: list[str], items: list[str], timestamps: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"user": users, "item": items, "timestamp": timestamps},
                        schema={"user": pl.Utf8, "item": pl.Utf8, "timestamp": pl.Int64})
