"""The compressor CLI with ``tests/third_party.py`` imported first.

On a machine whose torch is the CPU build (as the README installs), PyPI's torchvision is a
CUDA build whose compiled operators cannot load, and ``import torchvision`` (hence timm and
segmentation_models_pytorch) fails. ``tests/third_party.py`` declares those operators'
schemas so the rest of torchvision imports; the segmentation models never call them. With a
torchvision built for your torch, plain ``compressor`` does the same.

    python experiments/benchmarks/third_party_cli.py search experiments/quickstart.yaml \\
        --space generic --model segmentation_models_pytorch:Unet --model-arg encoder_name=resnet18 \\
        --model-arg encoder_weights=null --model-arg classes=2
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

import third_party  # noqa: E402,F401 - before anything imports torchvision

from compressor.cli import main  # noqa: E402

if __name__ == "__main__":
    warnings.filterwarnings("ignore", module="torchvision")
    sys.exit(main(sys.argv[1:]))
