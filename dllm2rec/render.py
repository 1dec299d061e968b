"""The tables as people read them: an HTML page per table for the report, and Table 5 in markdown.

The CSV files in ``results/`` are the data (one number per cell, no markup); everything here is a
rendering of those rows and adds no number of its own but derived ones (gains, percentages).
The report (``snakemake --report``) shows an HTML result inline, so each table rule writes one
self-contained page (no script, no external style) beside its CSV: ``results/report/<table>.html``
(docs/tables.md says why plain HTML rather than datavzrd).

Standard library only.
"""
from __future__ import annotations

import html
import math

# a cell is a str, or (text, marks) with marks a subset of "bu" (bold, underline)
STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 12px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.gain td { color: #444; font-style: italic; }
.ci { color: #777; font-size: 85%; }
p.note { color: #444; max-width: 60em; }
"""


def is_missing(x) -> bool:
    return x is None or x == "" or (isinstance(x, float) and math.isnan(x))


def num(x, digits: int = 4) -> str:
    """A metric: fixed decimals; blank when missing."""
    return "" if is_missing(x) else f"{float(x):.{digits}f}"


def pct(x, digits: int = 2, sign: bool = False) -> str:
    """A fraction as a percentage: 0.2 -> 20.00 % (``sign``: +20.00 %)."""
    if is_missing(x):
        return ""
    return f"{float(x) * 100:{'+' if sign else ''}.{digits}f}%"


def p_value(p) -> str:
    if is_missing(p):
        return ""
    p = float(p)
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def seconds(x) -> str:
    return "" if is_missing(x) else f"{float(x):.4g}"


def integer(x) -> str:
    return "" if is_missing(x) else f"{int(float(x)):,}"


def speedup(slow, fast) -> str:
    """How many times faster ``fast`` seconds are than ``slow`` seconds: "8,275× faster"
    (or "3.2× slower" when ``fast`` is the slower one)."""
    if is_missing(slow) or is_missing(fast) or not float(slow) or not float(fast):
        return ""
    slow, fast = float(slow), float(fast)
    ratio, word = (slow / fast, "faster") if slow >= fast else (fast / slow, "slower")
    digits = 0 if ratio >= 100 else 1 if ratio >= 10 else 2
    return f"{ratio:,.{digits}f}× {word}"


def generic(value) -> str:
    """A cell of a table without a format of its own: numbers to 4 significant digits."""
    if is_missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cell_parts(cell) -> tuple[str, str, str]:
    """(text, marks, note) of a cell: a str, or a tuple (text, marks[, note]); marks is a subset
    of "bu" (bold, underline), the note is shown small after the text (an interval)."""
    if isinstance(cell, str):
        return cell, "", ""
    text, marks, *note = cell
    return text, marks, note[0] if note else ""


def _cell_html(cell) -> str:
    text, marks, note = cell_parts(cell)
    body = html.escape(text)
    if "u" in marks:
        body = f"<u>{body}</u>"
    if "b" in marks:
        body = f"<b>{body}</b>"
    if note:
        body += f' <span class="ci">{html.escape(note)}</span>'
    numeric = bool(text) and (text[0].isdigit() or (text[0] in "+-." and text[1:2].isdigit()))
    return f'<td class="num">{body}</td>' if numeric else f"<td>{body}</td>"


def html_page(title: str, header: list[str], rows: list[list], note: str = "", row_classes=None) -> str:
    """A self-contained HTML page with one table; ``rows`` of cells (str or (text, marks))."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
           f"<h3>{html.escape(title)}</h3>", "<table>", "<thead><tr>"
           + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        cls = (row_classes or {}).get(i)
        out.append((f'<tr class="{cls}">' if cls else "<tr>")
                   + "".join(_cell_html(c) for c in row) + "</tr>")
    out += ["</tbody></table>", f'<p class="note">{html.escape(note)}</p>' if note else "", "</body></html>"]
    return "\n".join(out) + "\n"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; marks as **bold** and _underline_ (the paper's)."""
    def cell(c):
        text, marks, note = cell_parts(c)
        text = text.replace("|", "\\|")
        if text and "u" in marks:
            text = f"_{text}_"
        if text and "b" in marks:
            text = f"**{text}**"
        return f"{text} {note}" if note else text

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
