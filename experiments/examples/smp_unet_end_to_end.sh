#!/usr/bin/env bash
# A user's own network end to end, as the README shows it: smp's Unet-resnet18 trained on the
# quickstart's SpaceNet tile, a search that starts from that file, its report against it, and the
# winner exported and deployed. Run from the repository root; about 15 minutes on 2 idle cores.
# (experiments/benchmarks/third_party_cli.py is the compressor CLI with tests/third_party.py
# imported first: see the README on torchvision's CUDA wheel; with a torchvision built for your
# torch, plain `compressor` does the same.)
set -euo pipefail
PYTHON=${PYTHON:-python}
CLI="$PYTHON experiments/benchmarks/third_party_cli.py"
RUN=runs/smp-example
NET=(--model segmentation_models_pytorch:Unet --model-arg encoder_name=resnet18 --model-arg encoder_weights=null
     --model-arg in_channels=1 --model-arg classes=2)
FILE=$RUN/train/segmentation_models_pytorch-Unet-classes=2-encoder_name=resnet18-encoder_weights=None-in_channels=1/model.pt

[ -f "$FILE" ] || $CLI train experiments/quickstart.yaml "${NET[@]}" --set run_dir=$RUN
$CLI search experiments/quickstart.yaml --set run_dir=$RUN --model "$FILE" --space generic --study smp-unet \
    --n-trials 8 --set search.timeout=null --set search.confirm.top=2 --set search.confirm.seeds=2
$CLI report --study smp-unet --storage sqlite:///$RUN/search.db --out reports/smp-unet-example
WINNER=$($PYTHON - <<PY
import optuna
from compressor.report import confirmed_frame
study = optuna.load_study(study_name="smp-unet", storage="sqlite:///$RUN/search.db")
frame = confirmed_frame(study)
front = frame[frame["on_confirmed_front"].astype(bool) & frame["number"].notna()]  # the best confirmed mean
print(int(front.sort_values("confirmed_mean").iloc[-1]["number"]))
PY
)
$CLI export --study smp-unet --storage sqlite:///$RUN/search.db --trial "$WINNER" --out $RUN/winner.pt
$CLI deploy $RUN/winner.pt --out $RUN/winner.onnx --experiment experiments/quickstart.yaml
