"""Two narrow teacher jobs or one wide one: the default run's teacher generating its own train
prompts with all the threads in one process, then as ``--procs`` processes of
``threads / procs`` threads each, started together, each on its own part of the prompts.

Greedy, the config's ``max_new_tokens`` and batch size, ``engine: ours``, the run's LoRA adapter
(``--base-only``: the base model, as KAR's knowledge stage runs it). Prints prompts/s of the wide
job and the narrow jobs together, and how many texts are identical. Run it from a finished default
run's folder, alone on the machine:

    cd RUN && python /path/to/benchmarks/teacher_threads.py --n 128 --threads 2 --procs 2

The result decides ``teacher_threads()`` in ``workflow/rules/paths.smk`` (docs/benchmarks.md,
"Teacher jobs: two narrow or one wide").
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def generate(args) -> None:
    """One job: prompts ``--offset`` .. ``--offset + --n`` at ``--threads`` threads; writes
    {"texts", "seconds"} to ``--out``."""
    import finished_run
    from dllm2rec import dataset as ds
    from dllm2rec.teacher.generate import generate_texts
    from dllm2rec.teacher.prompts import encode_example

    run = finished_run.load(args, dtype=args.dtype, adapter=not args.base_only)
    dataset, titles, noun, model, tok = run.dataset, run.titles, run.noun, run.model, run.tokenizer
    rows = dataset.split("train").slice(args.offset, args.n)
    prompts = [encode_example(tok, [titles[i] for i in h], noun, 512)[0] for h in ds.histories(rows)]
    gen = {**run.teacher_cfg["generation"], "num_beams": 1}
    generate_texts(model, tok, prompts[:8], {**gen, "batch_size": 8}, progress=False)  # warm-up
    t0 = time.time()
    texts = generate_texts(model, tok, prompts, gen, progress=False)
    Path(args.out).write_text(json.dumps({"texts": texts, "seconds": time.time() - t0}))


def main(argv=None):
    import finished_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    finished_run.add_arguments(ap)
    ap.add_argument("--n", type=int, default=128, help="train prompts in all")
    ap.add_argument("--procs", type=int, default=2, help="narrow jobs")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    ap.add_argument("--base-only", action="store_true", help="the base model, no adapter")
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.out:  # one job, started by the code below
        return generate(args)
    common = [sys.executable, __file__, "--results", args.results, "--config", args.config, "--dataset", args.dataset,
              "--teacher", args.teacher, "--dtype", args.dtype] + (["--base-only"] if args.base_only else [])
    narrow = max(1, args.threads // args.procs)
    part = args.n // args.procs
    with tempfile.TemporaryDirectory() as tmp:
        wide = Path(tmp) / "wide.json"
        subprocess.run(common + ["--threads", str(args.threads), "--n", str(part * args.procs), "--out", str(wide)],
                       check=True)
        outs = [Path(tmp) / f"narrow{i}.json" for i in range(args.procs)]
        jobs = [subprocess.Popen(common + ["--threads", str(narrow), "--n", str(part), "--offset", str(i * part),
                                           "--out", str(out)]) for i, out in enumerate(outs)]
        if any(j.wait() for j in jobs):
            raise SystemExit("a narrow job failed")
        w = json.loads(wide.read_text())
        parts = [json.loads(o.read_text()) for o in outs]
    texts = [t for p in parts for t in p["texts"]]
    wide_rate = len(w["texts"]) / w["seconds"]
    narrow_rate = len(texts) / max(p["seconds"] for p in parts)
    same = sum(a == b for a, b in zip(w["texts"], texts))
    print(f"one job, {args.threads} threads: {wide_rate:.2f} prompts/s; {args.procs} jobs of {narrow} thread(s) "
          f"at once: {narrow_rate:.2f} prompts/s together ({narrow_rate / wide_rate:.2f}x); identical texts {same} "
          f"of {len(texts)}")


if __name__ == "__main__":
    main()
