"""The default's teacher with and without title-constrained decoding (``generation.constrained``).

Runs the teacher of a finished default run (its base model, LoRA adapter and item embeddings)
on the same sequences twice, ``constrained: false`` then ``true`` (every other generation and
grounding setting from the config), through :func:`dllm2rec.teacher.generate.generate_and_ground`
as the ``teacher_shard`` rule does, and prints a markdown table per split:

- exact-title share: answers that are a catalogue title exactly (after the normalisation the
  grounding uses);
- distinct items in the top-10 lists (over all rows) and the most frequent top-1 item's share;
- HR@20 / NDCG@20 with the title-equivalence of the teacher row (:mod:`dllm2rec.teacher.metrics`);
- seconds per prompt, generation plus grounding, and how many list entries came from the beams.

    python benchmarks/teacher_constrained.py --results results --splits valid test

Run it from the run's folder (the base model's pointer is relative to it), alone on the machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    import torch

    import finished_run
    from dllm2rec import dataset as ds
    from dllm2rec import teacher_artifacts as ta
    from dllm2rec.evaluate import metric_name, metrics_from_ranks
    from dllm2rec.teacher.generate import generate_and_ground
    from dllm2rec.teacher.metrics import hit_ranks

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    finished_run.add_arguments(ap)
    ap.add_argument("--splits", nargs="+", default=["valid", "test"])
    ap.add_argument("--n", type=int, default=None, help="the first N sequences of each split (default: all)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    run = finished_run.load(args)
    tcfg, noun, dataset, titles, model, tokenizer = run.teacher_cfg, run.noun, run.dataset, run.titles, run.model, run.tokenizer
    title_set = set(titles)
    item_emb = torch.from_numpy(ta.read_item_embeddings(str(run.teacher_dir / "item_embeddings.parquet"), len(titles)))
    out = {}
    for split in args.splits:
        rows = dataset.split(split)
        if args.n:
            rows = rows.slice(0, args.n)
        histories = [[titles[i] for i in h] for h in ds.histories(rows)]
        targets = ds.targets(rows)
        print(f"\n{split}: {rows.num_rows} sequences\n")
        print("| decoding | exact titles | distinct items in top-10 | top-1 item's share | HR@20 | NDCG@20 | s / prompt | entries from beams |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for constrained in (False, True):
            params = copy.deepcopy({k: tcfg[k] for k in ("generation", "grounding")})
            params["generation"]["constrained"] = constrained
            t0 = time.time()
            res = generate_and_ground(model, tokenizer, histories, targets, item_emb, params, noun, progress=False,
                                      titles=titles)
            seconds = time.time() - t0
            top = np.asarray(res["topk_items"])
            exact = float(np.mean([a in title_set for a in res["answers"]]))
            distinct = len(np.unique(top[:, :10]))
            top1 = Counter(top[:, 0].tolist()).most_common(1)[0][1] / len(top)
            m = metrics_from_ranks(hit_ranks(top.tolist(), targets.tolist(), titles))
            hr, ndcg = m[metric_name("HR", 20)], m[metric_name("NDCG", 20)]
            beams = None if res["n_beam_items"] is None else int(np.sum(res["n_beam_items"]))
            name = "constrained" if constrained else "free (the default)"
            print(f"| {name} | {exact:.1%} | {distinct} | {top1:.1%} | {hr:.4f} | {ndcg:.4f} | "
                  f"{seconds / len(top):.3f} | {beams if beams is not None else '—'} |", flush=True)
            out[f"{split}/{'constrained' if constrained else 'free'}"] = {
                "exact_title_share": exact, "distinct_top10": distinct, "top1_share": top1, "HR@20": hr, "NDCG@20": ndcg,
                "seconds_per_prompt": seconds / len(top), "beam_entries": beams,
                "n": len(top)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
