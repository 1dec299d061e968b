"""RecBole atomic files: ``<name>.inter`` (interactions) and optionally ``<name>.item`` (titles).

Each file is tab-separated with a header of ``field:type`` names (RecBole's atomic-file format,
https://recbole.io/docs/user_guide/data/atomic_files.html), e.g.
``user_id:token  item_id:token  rating:float  timestamp:float`` and
``item_id:token  movie_title:token_seq  release_year:token``. Which fields hold the user, item,
timestamp and title is configurable (``fields``); the defaults are RecBole's usual names and,
for the title, the ``.item`` field called ``title`` or else the first one whose name contains
``title``. An ``.inter`` file without the timestamp field is a source without timestamps: the
split is then per user (docs/datasets.md).
"""
from __future__ import annotations

from pathlib import Path

from dllm2rec.data.lines import Report, iter_lines, read_bytes, require_file
from dllm2rec.data.movielens import RECBOLE_INTER_FIELDS, read_interactions, read_titles
from dllm2rec.data.raw import RawInteractions, frame
from dllm2rec.io import UserError

DEFAULT_FIELDS = dict(zip(("user", "item", "timestamp"), RECBOLE_INTER_FIELDS))


def header_fields(data: bytes) -> list[str]:
    """Field names of an atomic file's header line, without their ``:type``."""
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    return [h.rsplit(":", 1)[0] if ":" in h else h for h in header.split("\t")]


def title_field(fields: list[str], wanted: str | None) -> str | None:
    """The configured title field, or the one called ``title``, or the first containing ``title``."""
    if wanted:
        return wanted if wanted in fields else None
    if "title" in fields:
        return "title"
    return next((f for f in fields[1:] if "title" in f.lower()), None)


def read_untimed(data: bytes, label: str, u: int, i: int, report: Report):
    users, items, stamps = [], [], []
    n = 0
    for lineno, text in iter_lines(data, label, report):
        if lineno == 1:
            continue
        n += 1
        parts = text.split("\t")
        if len(parts) <= max(u, i) or not parts[u] or not parts[i]:
            report.drop("malformed_lines", f"{label}:{lineno}")
            continue
        users.append(parts[u])
        items.append(parts[i])
        stamps.append(lineno)
    report.set("lines_read", n)
    if not users:
        raise UserError(f"{label}: no readable interaction in {n} lines{report.first('malformed_lines')}. "
                        f"Is paths.inter the right file?")
    return frame(users, items, stamps)


def read_recbole(params: dict, name: str) -> RawInteractions:
    hint = "a RecBole atomic .inter file (tab-separated, header of field:type names)"
    inter = require_file(params, "inter", name, hint)
    fields = {**DEFAULT_FIELDS, **(params.get("fields") or {})}
    report = Report()
    data = read_bytes(inter)
    present = header_fields(data)
    for key in ("user", "item"):
        if fields[key] not in present:
            raise UserError(f"{inter}:1: the header has no field {fields[key]!r} for the {key} (fields: "
                            f"{', '.join(present)}). Set datasets.{name}.fields.{key} to one of them.")
    timed = fields["timestamp"] in present
    if not timed and "timestamp" in (params.get("fields") or {}):
        raise UserError(f"{inter}:1: the header has no field {fields['timestamp']!r} (fields: "
                        f"{', '.join(present)}). Set datasets.{name}.fields.timestamp to one of them, or leave "
                        f"it out to import the file without timestamps (split per user).")
    if timed:
        cols = (present.index(fields["user"]), present.index(fields["item"]), present.index(fields["timestamp"]))
        df = read_interactions(data, str(inter), "\t", cols, True, report)
    else:  # no time: the line number orders each user's history, and is never written out as a time
        df = read_untimed(data, str(inter), present.index(fields["user"]), present.index(fields["item"]), report)
    info = {"inter": str(Path(inter))}
    titles = None
    if (params.get("paths") or {}).get("item"):
        item = require_file(params, "item", name, "the RecBole .item file that goes with paths.inter")
        idata = read_bytes(item)
        ifields = header_fields(idata)
        key = ifields[0] if fields["item"] not in ifields else fields["item"]
        tfield = title_field(ifields, (params.get("fields") or {}).get("title"))
        if tfield is None:
            raise UserError(f"{item}:1: no title field among {', '.join(ifields)}. Set datasets.{name}.fields.title "
                            f"to the field that holds the item names.")
        k, t = ifields.index(key), ifields.index(tfield)
        titles = read_titles(idata, str(item), "\t", report, True,
                             lambda p: (p[k], p[t]) if len(p) > max(k, t) else None)
        info.update(item=str(Path(item)), title_field=tfield)
    return RawInteractions(df, titles, report, "file" if timed else "none", info)
