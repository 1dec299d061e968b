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
    or "row_order" (the source has none: the line number stands in).
    """

    frame: pl.DataFrame
    titles: dict[str, str] | None
    report: Report
    timestamps: str = "file"
    source_info: dict = field(default_factory=dict)


def usable_title(title) -> str | None:
    """SPEC §1.1: a title counts when, stripped of surrounding blanks, it is longer than 1 character."""
    if not isinstance(title, str):
        return None
    title = title.strip()
    return title if len(title) > 1 else None


def frame(users: list[str], items: list[str], timestamps: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"user": users, "item": items, "timestamp": timestamps},
                        schema={"user": pl.Utf8, "item": pl.Utf8, "timestamp": pl.Int64})
