#!/bin/bash
# The GPU figures of issue 13 in one run (one GPU, no network, no model weights needed):
#   bash benchmarks/gpu.sh [OUT_DIR]            # on the device tool: bash benchmarks/gpu.sh "$OUT"
# 1. students: one dros+dllm2rec epoch at teacher width 4096, eager against `student.compile`
#    (CUDA graphs), same run, on real ml-100k if benchmarks/data/ml-100k-full exists (build it
#    with the command below and carry it), else on a synthetic dataset of its shape (the output
#    says which);
# 2. teacher generation: LLaMA-2-7B shape with random bf16 weights, 4 beams, ~200-token prompts,
#    32 new tokens, batches 8 / 32 / 64: plain HF generate against our engines, same run.
# 3. fused students: 50 members as one stacked group (benchmarks/student_fused.py).
# Writes OUT_DIR/{gpu,student_epoch,student_fused,teacher_generation}.txt and prints them; docs/benchmarks.md
# says where the figures go. Needs torch with CUDA, transformers, peft, pyarrow, pyyaml, tqdm
# (polars and snakemake are not needed). Real ml-100k, built here (a few MB):
#   python -m dllm2rec data --name ml-100k --out benchmarks/data/ml-100k-full \
#     --params '{"source": "ml-100k", "sample_rule": "movielens", "noun": "movie", "max_history": 10, "sample": null}'
set -u
out=${1:-benchmarks/out}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
data=()
[ -f benchmarks/data/ml-100k-full/sequences.parquet ] && data=(--data benchmarks/data/ml-100k-full)
$py benchmarks/student_epoch.py "${data[@]}" --device cuda --threads 4 --widths 4096 --epochs 3 --compile both \
    2>&1 | tee "$out/student_epoch.txt"
# fused students (issue 20): 50 members of the DLLM2Rec grid as one stacked group, whole split
$py benchmarks/student_fused.py "${data[@]}" --device cuda --sample 0 --members 50 --epochs 3 --separate none \
    2>&1 | tee "$out/student_fused.txt"
$py benchmarks/teacher_generation.py 2>&1 | tee "$out/teacher_generation.txt"
