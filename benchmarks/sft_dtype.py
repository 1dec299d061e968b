"""Seconds per LoRA SFT step of the default teacher in fp32 and bf16 on this CPU, with
transformers' loss (``labels=``: the logits of every position) and with the SFT's own
(:func:`dllm2rec.teacher.lm_loss.token_loss`: no logits held, the same loss).

    python benchmarks/sft_dtype.py resources/models/smollm2-135m/base.json [--steps 2] \
        [--dtypes float32,bfloat16] [--losses transformers,chunked]

One step = forward + backward + AdamW on a micro batch like the default config's (16 examples of
``--tokens`` tokens, LoRA r=8 on q_proj/v_proj), after one warm-up step. The SFT of the default
config is 16 such steps plus 3 evaluations of 16 examples (forward only).

To see what a CPU without native bf16 (AVX2 only, no AVX512-BF16/AMX) does, cap the kernels'
instruction sets (docs/benchmarks.md): ``ATEN_CPU_CAPABILITY=avx2`` (torch's own kernels),
``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN: bf16 matmuls), ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (MKL:
fp32 matmuls). ``ATEN_CPU_CAPABILITY`` alone changes nothing for matmuls: oneDNN still uses
AVX512-BF16.
"""
from __future__ import annotations

import argparse
import time


def step_seconds(base: str, dtype: str, steps: int, tokens: int, batch: int, threads: int,
                 loss_kind: str = "chunked") -> tuple[float, float]:
    """(best seconds per step, the last step's loss)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from dllm2rec.teacher.lm_loss import token_loss
    from dllm2rec.teacher.model import load_base

    torch.set_num_threads(threads)
    model, _ = load_base(base, device="cpu", dtype=dtype)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(100, 40000, (batch, tokens), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    times = []
    for i in range(steps + 1):
        torch.manual_seed(i)  # the same LoRA dropout masks for either loss
        t0 = time.perf_counter()
        loss = token_loss(model, inputs) if loss_kind == "chunked" else model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - t0)
        print(f"  {dtype} {loss_kind} step {i}: {time.perf_counter() - t0:.1f}s, loss {loss.item():.6f}", flush=True)
    return min(times), loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--losses", default="transformers,chunked")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from dllm2rec.teacher.model import cpu_bf16_is_fast

    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"auto: {cpu_bf16_is_fast()}", flush=True)
    for dtype in args.dtypes.split(","):
        for kind in args.losses.split(","):
            s, loss = step_seconds(args.base, dtype, args.steps, args.tokens, args.batch, args.threads, kind)
            print(f"{dtype} {kind}: {s:.2f} s/step (best of {args.steps}), last loss {loss:.6f}", flush=True)


if __name__ == "__main__":
    main()
