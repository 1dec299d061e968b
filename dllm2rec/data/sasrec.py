"""The plain SASRec format: one ``user item`` pair per line, each user's lines in time order.

There are no timestamps: each user's lines give the order of that user's history, and the
split is per user (leave-one-out, docs/datasets.md); the samples carry no time (null).
Titles, when wanted, come from ``paths.titles`` (``item::title`` lines; ``title<TAB>item`` and
``item<TAB>title`` are read too).
"""
from __future__ import annotations

from dllm2rec.data.lines import Report, iter_lines, open_binary, require_file
from dllm2rec.data.official import read_id2name
from dllm2rec.data.raw import RawInteractions, frame, usable_title
from dllm2rec.io import UserError


def read_sasrec(params: dict, name: str) -> RawInteractions:
    path = require_file(params, "file", name, "a text file with one 'user item' pair per line, in time order")
    report = Report()
    users, items, stamps = [], [], []
    n = 0
    with open_binary(path) as fh:
        for lineno, text in iter_lines(fh, str(path), report):
            n += 1
            parts = text.split()
            if len(parts) < 2:
                report.drop("malformed_lines", f"{path}:{lineno}")
                continue
            users.append(parts[0])
            items.append(parts[1])
            stamps.append(lineno)  # orders each user's history only; never written out as a time
    report.set("lines_read", n)
    if not users:
        raise UserError(f"{path}: no 'user item' line found in {n} lines{report.first('malformed_lines')}. "
                        f"Is paths.file the right file?")
    titles = None
    if (params.get("paths") or {}).get("titles"):
        tpath = require_file(params, "titles", name, "a text file of 'item::title' lines")
        titles = {}
        for raw_id, title in read_id2name(tpath, report).items():
            title = usable_title(title)
            if title is None:
                report.drop("items_without_title", f"{tpath}: item {raw_id}")
            else:
                titles[raw_id] = title
    return RawInteractions(frame(users, items, stamps), titles, report, "none", {"file": str(path)})
