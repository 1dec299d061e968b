"""Time the teacher's generation path against plain Hugging Face ``generate``.

A LLaMA-2-7B-shaped model with random weights (bf16, one GPU) gets ~200-token BIGRec prompts
and generates 32 new tokens with 4 beams, through

- ``ours``: :func:`dllm2rec.teacher.generate.generate_and_ground` (what ``run_shard`` runs after
  loading: prompts sorted by length, left-padded batches, LoRA adapter on, then grounding with
  the adapter off against a random item table), and
- ``hf``: one ``model.generate`` per batch of the same prompts in their original order, adapter
  on, no grounding,

at several batch sizes, and prints a markdown table. Random weights rarely emit EOS, so both
paths run close to all 32 new tokens.

    python benchmarks/teacher_generation.py                  # GPU: 7B shape, batches 8 16 32
    python benchmarks/teacher_generation.py --tiny           # CPU smoke test: a tiny model
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build(tiny: bool, device: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from tiny_llm import make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    if tiny:
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4}
    else:  # LLaMA-2-7B
        shape = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32}
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM")).eval()
    return model, tokenizer


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
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per measurement (default 4 x the largest batch)")
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--items", type=int, default=17408, help="items to ground against (Games has 17,408)")
    args = ap.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        sys.exit("no CUDA device: run with --tiny for a CPU smoke test")
    batch_sizes = args.batch_sizes or ([2, 4] if args.tiny else [8, 16, 32])
    n = args.prompts or 4 * max(batch_sizes)

    model, tokenizer = build(args.tiny, device)
    hist = histories(tokenizer, n, args.prompt_tokens)
    texts = [format_prompt(h, "movie") for h in hist]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    item_emb = torch.randn(args.items, model.config.hidden_size, device=device)
    targets = np.random.default_rng(1).integers(0, args.items, n)
    # warm-up (kernels, allocator, autotuning) on one full-length batch
    plain_hf(model, tokenizer, texts[:min(batch_sizes)], min(batch_sizes), args.beams, args.new_tokens)

    rows = []
    for bs in batch_sizes:
        params = {"generation": {"num_beams": args.beams, "max_new_tokens": args.new_tokens, "batch_size": bs},
                  "grounding": {"topn": 100, "batch_size": 64}}
        for path in ("hf", "ours"):
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            if path == "hf":
                plain_hf(model, tokenizer, texts, bs, args.beams, args.new_tokens)
                gen_s, ground_s = time.time() - t0, 0.0
            else:
                res = generate_and_ground(model, tokenizer, hist, targets, item_emb, params, "movie", progress=False)
                gen_s, ground_s = res["generation_seconds"], res["grounding_seconds"]
            if device == "cuda":
                torch.cuda.synchronize()
            wall = time.time() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
            rows.append((path, bs, n, gen_s, ground_s, wall, n / wall, peak))

    name = "tiny LLaMA (CPU)" if args.tiny else f"LLaMA-2-7B shape, random bf16 weights ({torch.cuda.get_device_name()})"
    print(f"\n{name}: {n} prompts of {min(lengths)}-{max(lengths)} tokens, {args.beams} beams, {args.new_tokens} new tokens\n")
    print("| path | batch | prompts | generation s | grounding s | wall s | prompts/s | peak GiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path, bs, count, g, gr, w, pps, peak in rows:
        print(f"| {path} | {bs} | {count} | {g:.1f} | {gr:.1f} | {w:.1f} | {pps:.2f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
