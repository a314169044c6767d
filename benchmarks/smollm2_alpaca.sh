#!/usr/bin/env bash
# The CPU instruction-tuning grid of experiment=cpu/smollm2_alpaca (qGOFT Table 2's layout at SmolLM2 scale), two
# jobs at a time with one torch thread each; every step skips what a completed record already holds, so running it
# again after a stop finishes the grid.
#   1. train LoRA r=16, OFT b=16, GOFT and qGOFT, then their MMLU under the harness scoring (save_adapter=true);
#   2. the base row (nothing trained) under both scorings;
#   3. each trained adapter scored under letter_logits with eval_only=true adapter=FILE (no second training);
#   4. the tables, one per scoring, into $RESULTS.
# Usage: benchmarks/smollm2_alpaca.sh [INSTRUCT_FILE] [MMLU_DIR]   (defaults: ../shared/data/...)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
INSTRUCT=${1:-../shared/data/alpaca/alpaca_en_demo.json}
MMLU=${2:-../shared/data/mmlu}
RESULTS=results/cpu_smollm2_alpaca
DATA=(data.instruct_path="$INSTRUCT" data.mmlu_dir="$MMLU")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # the xargs jobs below: one thread each, two at a time

"$BIN/qgoft-bench" -m experiment=cpu/smollm2_alpaca hydra/launcher=joblib hydra.launcher.n_jobs=2 "${DATA[@]}"

# eval_only jobs, one per line of arguments (paths without spaces), two at a time
{
    echo "method=full eval.mmlu_scoring=harness"
    echo "method=full eval.mmlu_scoring=letter_logits"
    for label in lora_r16 oft_b16 goft qgoft; do
        file=$(ls "$RESULTS"/instruct/alpaca_mmlu/smollm2_135m/"$label"/seed1-*.adapter.safetensors 2>/dev/null || true)
        if [[ -z "$file" ]]; then  # the committed results hold the records, not the adapters
            echo "no saved adapter for $label: its letter_logits row needs one (add overwrite=true to step 1)" >&2
            continue
        fi
        echo "method=$label eval.mmlu_scoring=letter_logits adapter=$file"
    done
} | xargs -P 2 -L 1 "$BIN/qgoft-bench" experiment=cpu/smollm2_alpaca eval_only=true "${DATA[@]}"

for scoring in harness letter_logits; do
    "$BIN/qgoft-bench-tables" llama --results "$RESULTS" --protocol "$scoring" --paper all \
        --out "$RESULTS/table2_$scoring.md"
done
"$BIN/qgoft-bench-tables" runs --results "$RESULTS" --by eval.mmlu_scoring --out "$RESULTS/runs.md"
