"""Issue 21's generation levers, measured on a finished default run's own teacher and prompts.

Three checks, each on the real train prompts of the run (``--n`` of them) with the run's LoRA
adapter, greedy with the config's ``max_new_tokens``, ``engine: ours``:

- ``prefix``: :meth:`dllm2rec.teacher.beam.Decoder.shared_prefix` on (the pipeline) and forced
  off (every prompt prefilled whole): prompts/s and how many texts are identical;
- ``ground``: :func:`dllm2rec.teacher.ground.embed_texts` (the model's body, no LM head) against
  the PeftModel's full forward with ``logits_to_keep=1`` and ``output_hidden_states`` (the path
  before 2026-12-02), adapter disabled, on item titles: texts/s;
- ``batch``: prompts/s at several batch sizes, and the texts that stay the same as at the first.

    cd RUN && python /path/to/benchmarks/generation_levers.py --checks prefix ground batch \
        --dtype auto --n 128

Run it from the run's folder (the base model's pointer is relative to it), alone on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    import torch

    import finished_run
    from dllm2rec import dataset as ds
    from dllm2rec.teacher import beam
    from dllm2rec.teacher.generate import encode_example, generate_texts
    from dllm2rec.teacher.ground import embed_texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    finished_run.add_arguments(ap)
    ap.add_argument("--checks", nargs="+", default=["prefix", "ground", "batch"], choices=["prefix", "ground", "batch"])
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    ap.add_argument("--n", type=int, default=128, help="train prompts (titles for `ground`: 2x)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    args = ap.parse_args(argv)
    run = finished_run.load(args, dtype=args.dtype)
    tcfg, noun, dataset, titles, model, tok = run.teacher_cfg, run.noun, run.dataset, run.titles, run.model, run.tokenizer
    print(f"dtype {next(model.parameters()).dtype}, {args.threads} threads")
    rows = dataset.split("train").slice(0, args.n)
    prompts = [encode_example(tok, [titles[i] for i in h], noun, 512)[0] for h in ds.histories(rows)]
    print(f"{len(prompts)} train prompts, {np.mean([len(p) for p in prompts]):.1f} tokens on average")
    gen = {**tcfg["generation"], "num_beams": 1}
    generate_texts(model, tok, prompts[:16], {**gen, "batch_size": 16}, progress=False)  # warm-up

    def timed(g):
        t0 = time.time()
        texts = generate_texts(model, tok, prompts, g, progress=False)
        return texts, len(prompts) / (time.time() - t0)

    if "prefix" in args.checks:
        shared, off = beam.Decoder.shared_prefix, staticmethod(lambda ids, lengths: 0)
        on_texts, on_rate = timed(gen)
        beam.Decoder.shared_prefix = off
        try:
            off_texts, off_rate = timed(gen)
        finally:
            beam.Decoder.shared_prefix = staticmethod(shared)
        same = sum(a == b for a, b in zip(on_texts, off_texts))
        print(f"prefix: shared {on_rate:.2f} prompts/s, whole prompts {off_rate:.2f} prompts/s "
              f"({on_rate / off_rate:.2f}x); identical texts {same} of {len(prompts)}")
    if "ground" in args.checks:
        sample = titles[:2 * args.n]
        with model.disable_adapter():
            embed_texts(model, tok, sample[:32], 64)
            t0 = time.time()
            body = embed_texts(model, tok, sample, 64)
            body_rate = len(sample) / (time.time() - t0)
            t0 = time.time()
            with torch.inference_mode():
                for s in range(0, len(sample), 64):
                    batch = tok(sample[s:s + 64], return_tensors="pt", padding=True)
                    model(**batch, output_hidden_states=True, logits_to_keep=1)
            head_rate = len(sample) / (time.time() - t0)
        print(f"ground: body {body_rate:.1f} texts/s, PeftModel forward with the LM head {head_rate:.1f} texts/s "
              f"({body_rate / head_rate:.1f}x); {body.shape[0]} titles")
    if "batch" in args.checks:
        ref = None
        for bs in args.batch_sizes:
            texts, rate = timed({**gen, "batch_size": bs, "batch_tokens": 10**9})
            same = "" if ref is None else f", {sum(a == b for a, b in zip(texts, ref))} of {len(texts)} texts as at batch {args.batch_sizes[0]}"
            ref = ref or texts
            print(f"batch {bs}: {rate:.2f} prompts/s{same}")


if __name__ == "__main__":
    main()
