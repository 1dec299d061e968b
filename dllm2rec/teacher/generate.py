"""BIGRec inference: batched beam-search generation of a title per sequence, then grounding.

One shard of one split per call (the workflow scatters a split over ``shards`` jobs and
:func:`gather_shards` concatenates them). Rows of the split, in seq_id order, go to shards
round-robin: row r belongs to shard ``r % shards + 1``.

Per sequence the top beam's response is decoded (``generated``: the raw response text), its
answer (first line, one outer pair of quotes stripped, see :func:`~dllm2rec.teacher.prompts.clean_generation`) is embedded
by the base model with the LoRA adapter disabled, and the ``topn`` nearest items by squared L2
are kept together with the distance to the target item. With ``grounding.popularity_gamma`` > 0
the ranking injects item popularity (counts as a target in the dataset's train split) as BIGRec's
second grounding step does (see :mod:`dllm2rec.teacher.ground`).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dllm2rec import teacher_artifacts as ta
from dllm2rec import dataset as ds
from dllm2rec.io import ProgressStream, UserError, parquet_metadata, read_parquet, write_parquet
from dllm2rec.io import progress as progress_line
from dllm2rec.settings import GenerationSettings, GroundingSettings, SFTSettings, parse, teacher_dtype, teacher_section
from dllm2rec.teacher import coverage
from dllm2rec.teacher.ground import embed_texts, item_popularity, nearest_items
from dllm2rec.teacher.prompts import clean_generation, encode_example, item_titles


def generation_cutoff(params: dict) -> int:
    """Prompt token budget: generation.cutoff_len, else sft.cutoff_len (dllm2rec/settings.py)."""
    return teacher_section(GenerationSettings, params, "generation").cutoff(teacher_section(SFTSettings, params, "sft"))


def popularity_gamma(params: dict) -> float:
    """grounding.popularity_gamma (0, the default, = plain nearest-item grounding)."""
    return teacher_section(GroundingSettings, params, "grounding").popularity_gamma


def generate_texts(model, tokenizer, prompts: list[list[int]], gen: GenerationSettings | dict, progress: bool = True,
                   trie=None, beams: bool = False):
    """Decoded top-beam responses (new tokens only, special tokens skipped) for tokenised prompts.

    Beam search (greedy for ``num_beams: 1``) is deterministic and stops a beam at EOS or once
    its answer is closed (:func:`~dllm2rec.teacher.beam.answer_closed`). ``gen["engine"]``:
    ``ours`` (default, :mod:`dllm2rec.teacher.beam`: shared prompt cache, merged LoRA, CUDA graph
    on a GPU, batches of at most ``batch_tokens`` cached tokens and ``batch_size`` prompts) or
    ``hf`` (transformers ``generate`` on batches of ``batch_size`` prompts); both give the same
    beams. Prompts are taken longest first, so memory problems show at once.

    With ``trie`` (a :class:`~dllm2rec.teacher.constrained.TitleTrie`, ``generation.constrained``)
    every beam is restricted to catalogue titles. With ``beams`` the result is, per prompt, every
    finished beam's token ids (best first, up to and including EOS) instead of the top text.
    ``gen``: the teacher's ``generation`` settings (a dict is read as :class:`GenerationSettings`).
    """
    if not isinstance(gen, GenerationSettings):
        gen = parse(GenerationSettings, gen, "generation")
    if gen.engine == "ours":
        return _generate_ours(model, tokenizer, prompts, gen, progress, trie, beams)
    return _generate_hf(model, tokenizer, prompts, gen, progress, trie, beams)


def _generate_ours(model, tokenizer, prompts, gen, progress, trie=None, beams=False):
    from tqdm.auto import tqdm

    from dllm2rec.teacher.beam import Decoder, supports, token_batches

    if not supports(model):
        arch = getattr(getattr(model, "config", None), "model_type", "?")
        raise UserError(f"generation engine 'ours' runs LLaMA-architecture models only, not {arch!r}: "
                        f"set teachers.<name>.generation.engine: hf in the config")
    num_beams, max_new = gen.num_beams, gen.max_new_tokens
    decoder = Decoder(model, tokenizer, num_beams, max_new, gen.length_penalty, gen.early_stopping, trie=trie)
    batches = token_batches([len(p) for p in prompts], num_beams, max_new, gen.batch_tokens, gen.batch_size)
    texts: list = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, mininterval=5,
               file=ProgressStream())
    for idx in batches:
        found = decoder.run([prompts[i] for i in idx])
        if beams:
            for i, seqs in zip(idx, found.tokens):
                texts[i] = [_through_eos(t, tokenizer.eos_token_id) for t in seqs]
        else:
            top = [b[0] for b in found.tokens]
            for i, text in zip(idx, tokenizer.batch_decode(top, skip_special_tokens=True)):
                texts[i] = text.strip()
        bar.update(len(idx))
    bar.close()
    return texts


def _through_eos(tokens: list[int], eos: int) -> list[int]:
    """A beam's tokens up to and including its first EOS (padding after it dropped)."""
    return tokens[:tokens.index(eos) + 1] if eos in tokens else list(tokens)


def _generate_hf(model, tokenizer, prompts, gen, progress, trie=None, beams=False):
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    from dllm2rec.teacher.beam import AnswerStop, answer_table
    from dllm2rec.teacher.constrained import hf_processor

    config = GenerationConfig(
        num_beams=gen.num_beams, max_new_tokens=gen.max_new_tokens, do_sample=False,
        num_return_sequences=gen.num_beams if beams else 1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, length_penalty=gen.length_penalty, early_stopping=gen.early_stopping,
    )
    batch_size = gen.batch_size
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    device = next(model.parameters()).device
    table = answer_table(tokenizer, model.get_output_embeddings().weight.shape[0]).to(device)
    texts: list = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, mininterval=5,
               file=ProgressStream())
    k = config.num_return_sequences
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            processors = LogitsProcessorList([hf_processor(trie, width)] if trie is not None else [])
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config, logits_processor=processors,
                                 stopping_criteria=StoppingCriteriaList([AnswerStop(table, width)]))
            if beams:
                for j, row in enumerate(idx):
                    texts[row] = [_through_eos(out[j * k + b, width:].tolist(), tokenizer.eos_token_id)
                                  for b in range(k)]
            else:
                for row, text in zip(idx, tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)):
                    texts[row] = text.strip()
            bar.update(len(idx))
    bar.close()
    return texts


def constrained(params: dict) -> bool:
    """generation.constrained (false, the default, = free beams grounded by nearest items)."""
    return teacher_section(GenerationSettings, params, "generation").constrained


def generate_and_ground(model, tokenizer, histories: list[list[str]], targets, item_emb, params: dict,
                        noun: str, progress: bool = True, popularity=None, titles: list[str] | None = None) -> dict:
    """The in-memory core of :func:`run_shard` (also used by benchmarks/teacher_generation.py).

    ``histories``: the history titles per sequence (oldest first); ``targets``: target item ids;
    ``item_emb``: torch [n_items, d] on the model's device. ``model`` may be a PeftModel (its
    adapter is disabled for grounding) or a plain model. ``popularity``: [n_items] in [0, 1]
    (:func:`~dllm2rec.teacher.ground.item_popularity`), needed when ``grounding.popularity_gamma`` > 0.

    With ``generation.constrained`` (``titles``: every item's title, the catalogue) the beams are
    restricted to catalogue titles (:mod:`dllm2rec.teacher.constrained`); each row's list then
    starts with its beams' items in beam-score order and is completed by grounding the top
    beam's answer (``n_beam_items``: how many of each row's list came from its beams).
    """
    cutoff = generation_cutoff(params)
    t0 = time.time()
    encoded = [encode_example(tokenizer, h, noun, cutoff) for h in histories]
    prompts = [ids for ids, _ in encoded]
    n_truncated = sum(1 for _, dropped in encoded if dropped)
    beam_items = None
    if constrained(params):
        from dllm2rec.teacher.constrained import TitleTrie

        if titles is None:
            raise UserError("generation.constrained needs the catalogue's titles")
        trie = TitleTrie(tokenizer, titles, model.get_output_embeddings().weight.shape[0])
        beams = generate_texts(model, tokenizer, prompts, params["generation"], progress, trie=trie, beams=True)
        generated = [tokenizer.decode(b[0], skip_special_tokens=True).strip() for b in beams]
        beam_items = [[i for seq in b for i in trie.items_of(seq)] for b in beams]
    else:
        generated = generate_texts(model, tokenizer, prompts, params["generation"], progress)
    t1 = time.time()
    answers = [clean_generation(g) for g in generated]
    base_only = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with base_only:
        emb = embed_texts(model, tokenizer, answers, int(params["grounding"]["batch_size"]),
                          desc="ground" if progress else None)
    import torch
    q = torch.from_numpy(emb).to(item_emb.device)
    topk_items, topk_dist, target_dist = nearest_items(q, item_emb, int(params["grounding"]["topn"]), targets,
                                                       popularity=popularity, gamma=popularity_gamma(params))
    n_beam_items = None
    if beam_items is not None:
        from dllm2rec.teacher.constrained import beams_first

        topk_items, topk_dist, n_beam_items = beams_first(beam_items, topk_items, topk_dist, q, item_emb)
    t2 = time.time()
    return {
        "generated": generated, "answers": answers, "embeddings": emb, "topk_items": topk_items,
        "topk_dist": topk_dist, "target_dist": target_dist, "generation_seconds": t1 - t0,
        "grounding_seconds": t2 - t1, "n_truncated_prompts": n_truncated,
        "n_empty_generations": sum(1 for a in answers if not a), "n_beam_items": n_beam_items,
    }


def shard_rows(dataset: ds.Dataset, split: str, shard: int, shards: int, train_coverage=coverage.ALL,
               coverage_seed: int = 0) -> pa.Table:
    """Rows of ``split`` in seq_id order that belong to ``shard`` (1-based) of ``shards``.

    For the train split only the covered rows are dealt out (``train_coverage``, see
    :mod:`dllm2rec.teacher.coverage`); valid and test are always complete."""
    if not 1 <= shard <= shards:
        raise UserError(f"shard {shard} is not in 1..{shards}")
    rows = dataset.split(split, by_seq_id=True)
    if rows.num_rows == 0:
        raise UserError(f"split {split!r} has no sequences; check the data stage's output")
    if split == "train" and coverage.is_partial(train_coverage):
        rows = rows.take(coverage.covered_positions(rows.num_rows, train_coverage, coverage_seed))
        if rows.num_rows < shards:
            raise UserError(f"generation.{coverage.KEY} covers {rows.num_rows} training sequences, fewer than the "
                            f"{shards} teacher shards: cover more sequences or lower teacher_shards.")
    return rows.take(np.arange(shard - 1, rows.num_rows, shards))


def coverage_info(dataset: ds.Dataset, split: str, gen: GenerationSettings) -> dict:
    """What the split's teacher files cover, recorded in their metadata (the students read it
    through :func:`dllm2rec.teacher_artifacts.read_coverage`)."""
    n = dataset.split(split).num_rows
    value = gen.train_coverage if split == "train" else coverage.ALL
    seed = gen.train_coverage_seed
    return {coverage.KEY: coverage.parse_coverage(value), "seed": seed, "n_rows": n,
            "n_covered": coverage.covered_count(n, value)}


def _tables(seq_ids, res: dict, dim: int) -> tuple[pa.Table, pa.Table]:
    n = len(seq_ids)
    ranks = ta.ranks_table(seq_ids, res)
    emb = ta.generated_embeddings_table(seq_ids, np.asarray(res["embeddings"]).reshape(n, dim))
    return ranks, emb


def run_shard(base: str, adapter: str, data: str, item_emb: str, split: str, shard: int, shards: int,
              params: dict, noun: str, out_ranks: str, out_emb: str) -> None:
    """Generate and ground shard ``shard`` of ``shards`` of ``split``; write ranks and embeddings."""
    import torch
    from peft import PeftModel

    from dllm2rec.teacher.model import load_base

    shard, shards = int(shard), int(shards)
    if not Path(adapter).exists():
        raise UserError(f"LoRA adapter not found: {adapter}. Run the sft rule first.")
    dataset = ds.load_dataset(data)
    dataset.require_titles()  # a UserError for a source without titles
    titles = item_titles(dataset.items)  # normalised as the generations are (prompts.normalize_title)
    gen = teacher_section(GenerationSettings, params, "generation")
    rows = shard_rows(dataset, split, shard, shards, gen.train_coverage, gen.train_coverage_seed)
    popularity = None
    if popularity_gamma(params) > 0:  # BIGRec's popularity-adjusted grounding: train target counts
        popularity = item_popularity(ds.targets(dataset.split("train")), len(titles))
    model, tokenizer = load_base(base, dtype=teacher_dtype(params))
    model = PeftModel.from_pretrained(model, adapter).eval()
    device = next(model.parameters()).device
    emb_items = torch.from_numpy(ta.read_item_embeddings(item_emb, len(titles))).to(device)
    histories = [[titles[i] for i in h] for h in ds.histories(rows)]
    targets = ds.targets(rows)
    res = generate_and_ground(model, tokenizer, histories, targets, emb_items, params, noun, popularity=popularity,
                              titles=titles)
    ranks, emb = _tables(ds.seq_ids(rows), res, emb_items.shape[1])
    meta = {k: res[k] for k in ("generation_seconds", "grounding_seconds", "n_truncated_prompts", "n_empty_generations")}
    if res["n_beam_items"] is not None:  # generation.constrained: list entries that came from the beams
        meta["n_beam_items"] = int(np.sum(res["n_beam_items"]))
    meta.update(split=split, shard=shard, shards=shards, n_sequences=rows.num_rows, params=params, noun=noun,
                base=str(base), adapter=str(adapter), device=str(device),
                coverage=coverage_info(dataset, split, gen), dataset=dataset.name,
                dataset_fingerprint=dataset.fingerprint)
    write_parquet(emb, out_emb, metadata=meta)
    write_parquet(ranks, out_ranks, metadata=meta)
    progress_line(f"{split} shard {shard}/{shards}: {rows.num_rows} sequences, generation {meta['generation_seconds']:.1f}s, "
          f"grounding {meta['grounding_seconds']:.1f}s, {meta['n_truncated_prompts']} truncated prompts, "
          f"{meta['n_empty_generations']} empty generations")


SUMMED = ("generation_seconds", "grounding_seconds", "n_truncated_prompts", "n_empty_generations", "n_sequences",
          "n_beam_items")


def gather_shards(ranks: list[str], embs: list[str], out_ranks: str, out_emb: str) -> None:
    """Concatenate shard files in seq_id order; timings and counts in the metadata are summed."""
    ranks = [ranks] if isinstance(ranks, str) else list(ranks)
    embs = [embs] if isinstance(embs, str) else list(embs)
    metas = [parquet_metadata(p, "teacher shard", "teacher_shard") for p in ranks]
    r = ta.concat_by_seq_id([read_parquet(p, "teacher shard", "teacher_shard") for p in ranks])
    e = ta.concat_by_seq_id([read_parquet(p, "teacher shard", "teacher_shard") for p in embs])
    ids = ta.seq_ids(r)
    if len(np.unique(ids)) != len(ids):
        raise UserError(f"duplicate seq_id across teacher shards {ranks}: were shards of different runs mixed?")
    if not np.array_equal(ids, ta.seq_ids(e)):
        raise UserError(f"teacher ranks {ranks} and generated embeddings {embs} hold different seq_ids")
    meta = {k: sum(m.get(k, 0) for m in metas) for k in SUMMED}
    first = metas[0] if metas else {}
    fingerprints = {m.get("dataset_fingerprint") for m in metas}
    if len(fingerprints) > 1:
        raise UserError(f"teacher shards {ranks} were made from different datasets (fingerprints "
                        f"{sorted(map(str, fingerprints))}): rerun the rule 'teacher_shard' for them.")
    meta.update({k: first.get(k) for k in ("split", "params", "noun", "base", "adapter", "device", "coverage",
                                            "dataset", "dataset_fingerprint")}, shards=len(ranks))
    meta["shard_seconds"] = [m.get("generation_seconds", 0) + m.get("grounding_seconds", 0) for m in metas]
    write_parquet(e.replace_schema_metadata(None), out_emb, metadata=meta)
    write_parquet(r.replace_schema_metadata(None), out_ranks, metadata=meta)
