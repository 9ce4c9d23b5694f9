#!/usr/bin/env bash
# The GPU check of training (the project never needs a GPU; this shows it uses one when asked).
#
#   experiments/benchmarks/gpu_check.sh OUTDIR [--cache-dir DIR]   (the tests read $COMPRESSOR_CACHE_DIR)
#
# 1. the quickstart's Micro-Net trained twice on the GPU (train.device=cuda), same seed: the
#    metrics must be identical; then once on the CPU;
# 2. a 4-trial search on the GPU (baselines, cost before training, rung stopping, Pareto weights
#    kept as Optuna artifacts), run twice in two folders: the same trials with the same IoUs;
#    the report written; the first trial of its Pareto front exported and reloaded on the CPU;
# 3. the default test suite with train.device left at `auto`, so every training test runs on
#    the GPU (GPU_CHECK_TESTS=0 leaves it out).
# Logs go to OUTDIR; runs to a temporary folder. Exits non-zero on the first difference.
set -euo pipefail
out=${1:?usage: gpu_check.sh OUTDIR [--cache-dir DIR]}
shift
mkdir -p "$out"
run=$(mktemp -d)
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"
metrics() { grep -E '^(background|building|mean|overall)' "$1"; }
trials() { grep -E '^trial [0-9]' "$1" | sed -E 's/  [0-9]+ s  /  /'; }

echo "== 1. Micro-Net, quickstart recipe: GPU twice, then CPU"
for name in cuda cuda_again; do
    python3 -m compressor train experiments/quickstart.yaml "$@" --set "run_dir=$run/$name" --set train.device=cuda \
        | tee "$out/train_$name.txt"
done
diff <(metrics "$out/train_cuda.txt") <(metrics "$out/train_cuda_again.txt") || { echo "GPU training differs" >&2; exit 1; }
echo "GPU training: same metrics twice"
python3 -m compressor train experiments/quickstart.yaml "$@" --set "run_dir=$run/cpu" --set train.device=cpu --threads 8 \
    | tee "$out/train_cpu.txt"

echo "== 2. search on the GPU (twice), export, report"
for name in search search_again; do
    python3 -m compressor search experiments/quickstart.yaml "$@" --set "run_dir=$run/$name" --set train.device=cuda \
        --storage "sqlite:///$run/$name/search.db" --n-trials 4 2>&1 | tee "$out/$name.txt"
done
diff <(trials "$out/search.txt") <(trials "$out/search_again.txt") || { echo "GPU search differs" >&2; exit 1; }
echo "GPU search: same trials twice"
db="sqlite:///$run/search/search.db"
python3 -m compressor report --study quickstart --storage "$db" --out "$run/report" | tee "$out/report.txt"
first=$(python3 -c "import sys, pandas; print(int(pandas.read_csv(sys.argv[1])['number'][0]))" "$run/report/pareto.csv")
python3 -m compressor export --study quickstart --storage "$db" --trial "$first" --out "$run/front.pt" | tee "$out/export.txt"
python3 - "$run/front.pt" <<'EOF' | tee -a "$out/export.txt"
import sys
import torch
from compressor.saving import load_model
model = load_model(sys.argv[1])
device = next(model.parameters()).device
channels = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
logits = model.eval()(torch.rand(1, channels, 64, 64))
print(f"reloaded on {device}: output {tuple(logits.shape)}, finite {bool(torch.isfinite(logits).all())}")
EOF

if [ "${GPU_CHECK_TESTS:-1}" != 0 ]; then
    echo "== 3. the test suite, training on the GPU"
    python3 -m pytest -q -n 8 -p no:cacheprovider 2>&1 | tee "$out/pytest.txt"
fi
