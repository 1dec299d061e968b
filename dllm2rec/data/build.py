"""``build_dataset``: raw files of one configured dataset -> items.parquet, sequences.parquet, stats.json."""
from __future__ import annotations

import sys
import time

from dllm2rec.data import samples as S
from dllm2rec.data.raw import MAX_TITLE_CHARS, apply_title_rule
from dllm2rec.data.sources import SOURCES as DATA_SOURCES
from dllm2rec.dataset import write_dataset
from dllm2rec.io import UserError
from dllm2rec.settings import DatasetSettings

SOURCES = {name: source.describe() for name, source in DATA_SOURCES.items()}


def read_raw(source: str, params: dict, name: str, cache: str):
    if source in ("ml-100k", "ml-1m"):
        from dllm2rec.data.movielens import read_embedded
        return read_embedded(source, cache)
    if source == "ml-10m":
        from dllm2rec.data.movielens import read_ml10m
        return read_ml10m(params, name)
    if source in ("games", "toys"):
        from dllm2rec.data.amazon import read_amazon
        return read_amazon(source, params, name)
    if source == "recbole":
        from dllm2rec.data.recbole import read_recbole
        return read_recbole(params, name)
    from dllm2rec.data.sasrec import read_sasrec
    return read_sasrec(params, name)


def _with_untitled_items(err: UserError, raw, report) -> UserError:
    """``err`` (a split came out empty) plus, when interactions were dropped for items without a
    title, which items those are: a titles file naming few of the items is the likely cause."""
    dropped = report.counts.get("interactions_dropped_untitled_item", 0)
    if raw is None or raw.titles is None or not dropped:
        return err
    items = raw.frame["item"].unique()
    missing = sorted(set(items.to_list()) - set(raw.titles))
    shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
    return UserError(f"{err} Likely cause: {len(missing)} of the {len(items)} items have no usable title "
                     f"({shown}), so their {dropped} interactions were dropped; add their titles to the titles "
                     f"file (paths.titles / the metadata file).")


def build_dataset(name: str, params: dict, out: str, cache: str = "resources/downloads") -> None:
    """Build dataset ``name`` from its config entry ``params`` into the folder ``out``."""
    start = time.perf_counter()
    if not isinstance(params, dict):
        raise UserError(f"datasets.{name} must be a mapping, got {type(params).__name__}")
    source = params.get("source")
    if source not in SOURCES:
        raise UserError(f"datasets.{name}.source {source!r} is unknown; use one of: "
                        + "; ".join(f"{k} ({v})" for k, v in SOURCES.items()) + ". See docs/datasets.md.")
    L = S.max_history(params, name)
    rule = params.get("sample_rule", DatasetSettings.sample_rule)
    min_chars = params.get("min_title_chars", DatasetSettings.min_title_chars)
    if not isinstance(min_chars, int) or isinstance(min_chars, bool) or min_chars < 0:
        raise UserError(f"datasets.{name}.min_title_chars must be a non-negative integer, got {min_chars!r}")
    if source == "official":
        from dllm2rec.data.official import read_official
        order, titles, samples, report, base, seq_size, info = read_official(params, name, L)
        # ids and splits are fixed by the release: a short title is kept (and counted), never dropped
        titles = apply_title_rule(titles, min_chars, report, keep_short=True)
        timestamps = "row_order"
    else:
        if rule not in S.RULES:
            raise UserError(f"datasets.{name}.sample_rule {rule!r} is unknown; use amazon or movielens "
                            f"(docs/method.md §1.3)")
        raw = read_raw(source, params, name, cache)
        report, timestamps, info = raw.report, raw.timestamps, raw.source_info
        titles = raw.titles = apply_title_rule(raw.titles, min_chars, report)
        df = S.clean_interactions(raw, params, report)
        if df.height == 0:
            raise UserError(f"dataset {name!r}: no interaction left after dropping those on untitled items "
                            f"(see the counts above). Check that paths.* name matching review and metadata files.")
        samples, order, base = S.make_samples(df, rule, L, report, S.drop_duplicates_setting(params, rule, name),
                                              timed=timestamps == "file")
        seq_size = L
    try:
        seqs, split_stats = S.finish(samples, params, name)
    except UserError as err:
        raise _with_untitled_items(err, raw if source != "official" else None, report) from None
    items = S.items_table(order, titles)
    has_titles = titles is not None and items.column("title").null_count == 0
    report.warn_summary(name)
    stats = {
        "dataset": name, "source": source, "source_info": info,
        "sample_rule": rule if source != "official" else "official",
        "max_history": L, "seq_size": seq_size, "timestamps": timestamps, "has_titles": has_titles,
        "max_title_chars": MAX_TITLE_CHARS,
        **base, "density": S.density(base["users"], base["items"], base["interactions"]),
        **split_stats, **report.as_dict(),
    }
    meta = {"stage": "data", "dataset": name, "params": params, "seq_size": seq_size,
            "has_titles": has_titles, "source_info": info}
    write_dataset(out, items, seqs, stats, meta)
    print(f"[data {name}] {base['items']} items, {split_stats['rows']} rows in {time.perf_counter() - start:.1f}s",
          file=sys.stderr)
