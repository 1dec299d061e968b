"""Config-time checks of a dataset entry (torch-free; called by the workflow's check_config).

They catch, before any job runs, a dataset that cannot feed the teacher: the BIGRec teacher
generates and grounds item titles, so a dataset in ``tables.datasets`` needs a source of titles.
What only the data can tell (too few sequences for a split, a title file that misses items) is
checked by the data stage itself, which fails with the reason and the fix (docs/datasets.md).
"""
from __future__ import annotations

from pathlib import Path

from dllm2rec import layout
from dllm2rec.data.sources import SOURCES_WITH_TITLES


def _first_line(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.readline().decode("utf-8", "replace").rstrip("\r\n")


def title_problem(params: dict) -> str | None:
    """Why this dataset entry gives no item titles, or None when it does (as far as the config and
    the header lines of existing files tell)."""
    source = params.get("source")
    paths = params.get("paths") or {}
    if source == "sasrec" and not paths.get("titles"):
        return "source sasrec has titles only from paths.titles (a file of 'item::title' lines)"
    if source == "official" and not paths.get("titles"):
        folder = Path(str(paths.get("dir", ""))).expanduser()
        if folder.is_dir() and not (folder / "id2name.txt").exists():
            return f"the official folder {folder} has no id2name.txt and paths.titles is not set"
    if source == "recbole":
        if not paths.get("item"):
            return "source recbole has titles only from the .item file (paths.item)"
        item = Path(paths["item"]).expanduser()
        if item.is_file():
            from dllm2rec.data.recbole import title_field
            fields = [h.rsplit(":", 1)[0] for h in _first_line(item).split("\t")]
            wanted = (params.get("fields") or {}).get("title")
            if title_field(fields, wanted) is None:
                what = f"field {wanted!r}" if wanted else "field named like 'title'"
                return f"{item} has no {what} among its fields {', '.join(fields)} (set fields.title)"
    return None


def dataset_problem(name: str, params: dict, needs_titles: bool) -> str | None:
    """A config error message for dataset ``name`` (reason and fix), or None."""
    if needs_titles:
        why = title_problem(params)
        if why:
            return (f"datasets.{name} cannot feed the BIGRec teacher, which needs item titles: {why}. "
                    f"Fix: add the titles (sources with titles: {SOURCES_WITH_TITLES}), or take {name!r} out "
                    f"of tables.datasets (students alone can still train on it: snakemake "
                    f"{layout.student_file('metrics', dataset=name)} with a method that needs no teacher). "
                    f"See docs/datasets.md.")
    return None
