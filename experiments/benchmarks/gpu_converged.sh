#!/usr/bin/env bash
# Issue 26's table (converged.py) for one SpaceNet task on a lent GPU machine, in calls of at most
# 10 minutes. That machine has PyTorch but none of torch-pruning, optuna or fvcore, and reaches no
# network, so the packages it lacks and the data wheel travel with the call:
#
#   here, once:   experiments/benchmarks/gpu_converged.sh prepare [PYTHON_VERSION]   (default 3.12, the GPU image's;
#                 with the project's environment active, so that python3 imports compressor)
#                 -> .gpu/whl (the wheels: 5.5 MB), .gpu/cache (the solaris wheel the SpaceNet tasks read: 18 MB,
#                    and the land-use scene as decoded here: 2.7 MB, read there without rasterio or pyogrio)
#   there:        run(command="bash experiments/benchmarks/gpu_converged.sh run spacenet_roads 540", carry=[".gpu"])
#                 -> $OUT/<task>-jobs.tar.gz: every finished job's record (and the log); the jobs folder, the
#                    parent's weights and a cut-short job's state stay on the machine, so a call made while
#                    it is still warm (30 s) goes on where the last one stopped
#   here, after:  mkdir -p runs/converged-gpu && tar -xzf <files_at>/<task>-jobs.tar.gz -C runs/converged-gpu
#                 python experiments/benchmarks/converged.py --summarize --run-dir runs/converged-gpu
#
# The land-use task's bands and polygons take rasterio and pyogrio to decode (69 MB of wheels for
# Python 3.12, over a call's 64 MiB): they are decoded here (the `geo` extra) and the decoded scene
# travels instead (compressor.data.decoded). Extra arguments after SECONDS go to converged.py (by
# default its own rule, the one the CPU runs use).
# GPU_RUN_DEVICE=cpu runs the same steps on the CPU (how this script is checked without a GPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?usage: gpu_converged.sh prepare [PYTHON_VERSION] | run TASK SECONDS [converged.py args]}
shift

if [ "$mode" = prepare ]; then
    version=${1:-3.12}
    mkdir -p .gpu/whl .gpu/cache
    platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    # the versions this project is tested with; what the GPU image lacks (device KINDS.md's package list)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        "${platforms[@]}" -d .gpu/whl torch-pruning==1.6.1 optuna==5.1.0 alembic==1.20.1 SQLAlchemy==2.1.9 \
        Mako==1.4.3 colorlog==6.12.0 yacs==0.1.8 termcolor==3.3.0
    python3 -m pip wheel -q --no-deps -w .gpu/whl fvcore==0.1.5.post20221221 iopath==0.1.10  # sdists: pure Python
    python3 - <<'EOF'
import shutil
from pathlib import Path
from compressor.data.cache import cache_dir, fetch_wheel
from compressor.data.spacenet import SOLARIS_SAMPLE

wheel = fetch_wheel(SOLARIS_SAMPLE.wheel, directory=cache_dir())  # fetched and checked here once, if not cached yet
shutil.copy2(wheel, Path(".gpu/cache") / wheel.name)
print(f"{wheel.name} -> .gpu/cache")

from compressor.data.sentinel2 import landuse_decoded_path, read_landuse_scene

read_landuse_scene()  # the converged runs' bands, decoded here once (the geo extra) if not in the cache yet
decoded = landuse_decoded_path()
(Path(".gpu/cache") / "decoded").mkdir(exist_ok=True)
shutil.copy2(decoded, Path(".gpu/cache") / "decoded" / decoded.name)
print(f"{decoded.name} -> .gpu/cache/decoded")
EOF
    du -sh .gpu
    exit 0
fi

[ "$mode" = run ] || { echo "gpu_converged.sh: unknown mode $mode (prepare or run)" >&2; exit 2; }
task=${1:?usage: gpu_converged.sh run TASK SECONDS [converged.py args]}
seconds=${2:?usage: gpu_converged.sh run TASK SECONDS [converged.py args]}
shift 2
out=${OUT:-runs/gpu-out}
mkdir -p "$out"
site=/tmp/compressor-site
if [ ! -d "$site" ]; then  # once per machine; a half-done install is not taken for a whole one
    rm -rf "$site.partial"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site.partial" .gpu/whl/*.whl
    mv "$site.partial" "$site"
fi
export PYTHONPATH="$site:$PWD" COMPRESSOR_CACHE_DIR="$PWD/.gpu/cache" PYTHONUNBUFFERED=1
device=${GPU_RUN_DEVICE:-cuda}
python3 -c "import torch, optuna, fvcore, torch_pruning; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
run_dir=runs/converged-gpu
mkdir -p "$run_dir"
rule=("$@")  # converged.py's defaults unless given
status=0
timeout --signal=INT --kill-after=20 "$seconds" python3 experiments/benchmarks/converged.py --task "$task" \
    --device "$device" --threads 8 --run-dir "$run_dir" \
    ${rule[@]+"${rule[@]}"} 2>&1 | tee -a "$run_dir/$task.log" || status=$?
# 124: stopped by the time limit; the job it was in goes on from its last evaluation next call
cp "$run_dir/$task.log" "$run_dir/$task/" 2>/dev/null || true
# the records only: the weights, a job's state, the search's study and its kept weights stay on the machine
# (a file over 16 MiB would not come back, and with it no record)
tar -czf "$out/$task-jobs.tar.gz" -C "$run_dir" --exclude='*.state' --exclude='*.pt' --exclude='*.db' --exclude=artifacts "$task"
echo "packed $(ls "$run_dir/$task/jobs"/*.json 2>/dev/null | wc -l) finished jobs into $out/$task-jobs.tar.gz (exit $status)"
