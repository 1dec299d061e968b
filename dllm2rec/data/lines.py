"""Reading raw text files line by line, with the bad-input rules of docs/datasets.md.

* A gzip stream that ends early or is corrupt: :class:`UserError` (download the file again).
* A line that is not valid UTF-8: decoded with ``fallback`` (Latin-1 for GroupLens ``.dat``
  files) or with U+FFFD replacement characters, kept, and counted as ``non_utf8_lines``.
* Blank lines: skipped and counted as ``blank_lines``.
* Lines a reader cannot parse (truncated JSON, too few fields, ...): the reader calls
  :meth:`Report.drop`; the line is dropped and counted, and the first locations are kept.
"""
from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dllm2rec.io import UserError

MAX_EXAMPLES = 3


class Report:
    """Counts of every dropped or handled record, plus the first few places each happened."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def drop(self, kind: str, where: str = "", n: int = 1) -> None:
        self.counts[kind] += n
        if where:
            ex = self.examples.setdefault(kind, [])
            if len(ex) < MAX_EXAMPLES:
                ex.append(where)

    def set(self, kind: str, n: int) -> None:
        self.counts[kind] = int(n)

    def as_dict(self) -> dict:
        return {"counts": {k: int(v) for k, v in sorted(self.counts.items())},
                "examples": {k: v for k, v in sorted(self.examples.items())}}

    def first(self, *kinds: str) -> str:
        """' (first bad line: FILE:LINE)' for the first recorded example of ``kinds``, or ''."""
        for kind in kinds:
            if self.examples.get(kind):
                return f" (first bad line: {self.examples[kind][0]})"
        return ""

    def warn_summary(self, name: str) -> None:
        for kind, n in sorted(self.counts.items()):
            if n and kind in self.examples:
                print(f"[data {name}] {kind}: {n} (first at {', '.join(self.examples[kind])})", file=sys.stderr)


def require_file(params: dict, key: str, dataset: str, hint: str) -> Path:
    """The raw file named by ``paths.<key>``; a clear error when it is not configured or missing."""
    paths = params.get("paths") or {}
    value = paths.get(key)
    if not value:
        raise UserError(f"dataset {dataset!r} (source {params.get('source')!r}) needs datasets.{dataset}.paths.{key}: "
                        f"{hint}. See docs/datasets.md.")
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"dataset {dataset!r}: raw file paths.{key} not found: {path}. {hint}; "
                        f"then set datasets.{dataset}.paths.{key} to its location. See docs/datasets.md.")
    return path


def open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for reading bytes; gzip is detected from the magic bytes, not the name."""
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def read_bytes(path: Path) -> bytes:
    with open_binary(path) as fh:
        try:
            return fh.read()
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
            raise UserError(f"{path}: the gzip data is cut off or corrupt ({err}). Download the file again.") from None


def iter_lines(fh: BinaryIO | bytes, label: str, report: Report,
               fallback: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` (1-based, without the line end) for every non-blank line."""
    if isinstance(fh, (bytes, bytearray)):
        fh = io.BytesIO(fh)
    lineno = 0
    try:
        for raw in fh:
            lineno += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                report.drop("non_utf8_lines", f"{label}:{lineno}")
                text = raw.decode(fallback) if fallback else raw.decode("utf-8", "replace")
            text = text.rstrip("\r\n")
            if not text.strip():
                report.drop("blank_lines")
                continue
            yield lineno, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise UserError(f"{label}: the gzip data is cut off or corrupt after line {lineno} ({err}). "
                        f"Download the file again.") from None


def numeric_aware_order(values: list[str]) -> list[str]:
    """Sort raw ids: numerically when every id is a decimal integer (ties by text), else as text."""
    if values and all(v.isascii() and v.isdigit() for v in values):
        return sorted(values, key=lambda v: (int(v), v))
    return sorted(values)
