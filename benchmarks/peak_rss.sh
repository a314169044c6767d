#!/usr/bin/env bash
# Peak resident memory of a real training run per method, each method in its own process (a sweep shares one
# process, so its records' peak RSS carries the heap of the runs before). The cpu/minilm_glue recipe on RTE (the
# task with the longest inputs), 20 updates and the dev evaluation, single-threaded, twice:
#   malloc_default   glibc as users run it: freed tensors below the (self-raising) mmap threshold stay in the heap,
#                    so the peak depends on the order of allocations as much as on the method;
#   malloc_mmap128k  MALLOC_MMAP_THRESHOLD_=131072: every tensor over 128 KiB is mapped and unmapped on free, so the
#                    peak follows the live tensors (slower; for measuring only).
# Records go to results/cpu_minilm_glue_memory/<setting>/; existing ones are skipped.
#
#   bash benchmarks/peak_rss.sh GLUE_DIR          # with the venv active; GLUE_DIR: a classic glue_data folder
#   qgoft-bench-tables runs --results results/cpu_minilm_glue_memory/malloc_mmap128k
set -euo pipefail
glue_dir=${1:?usage: bash benchmarks/peak_rss.sh GLUE_DIR (a classic glue_data folder)}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for setting in malloc_default malloc_mmap128k; do
  if [ "$setting" = malloc_mmap128k ]; then threshold=(env MALLOC_MMAP_THRESHOLD_=131072); else threshold=(); fi
  for method in full linear bitfit lora oft goft qgoft; do
    "${threshold[@]}" qgoft-bench experiment=cpu/minilm_glue task=glue/rte method="$method" seed=1 \
      trainer.max_steps=20 results_dir="results/cpu_minilm_glue_memory/$setting" data.glue_dir="$glue_dir"
  done
done
