"""The networks users bring: segmentation_models_pytorch, torchvision and MONAI models.

Built with random weights (nothing is ever downloaded). Importing this module makes
torchvision importable on a CPU-only torch: PyPI's torchvision wheels for Linux are CUDA
builds whose compiled operators (``nms``, ``roi_align``, ...) cannot load beside the CPU
torch these machines install, and ``import torchvision`` then fails on
"operator torchvision::nms does not exist". The segmentation models are pure PyTorch
and never call those operators, so, only when torchvision's own library cannot load, the
operators' schemas are declared (with no kernel) and the rest of torchvision is the real
one. timm and segmentation_models_pytorch import torchvision, so they need this too.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["NETWORKS", "build", "available", "missing_reason"]

_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
    "SymInt width) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
_declared: list[torch.library.Library] = []


def _make_torchvision_importable() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or _declared:
        return
    for library in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(library))
            return  # a torchvision built for this torch: nothing to do
        except (OSError, RuntimeError):
            break
    declared = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_SCHEMAS:
        declared.define(schema)
    _declared.append(declared)


_make_torchvision_importable()


def _smp(architecture: str, encoder: str = "resnet18", **kwargs) -> Callable[..., nn.Module]:
    def builder(classes: int = 2, in_channels: int = 3) -> nn.Module:
        import segmentation_models_pytorch as smp

        return getattr(smp, architecture)(
            encoder, encoder_weights=None, classes=classes, in_channels=in_channels, **kwargs
        )

    return builder


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def builder(classes: int = 2, in_channels: int = 3) -> nn.Module:
        from torchvision.models import segmentation

        if in_channels != 3:
            raise ValueError("torchvision's segmentation models take 3 input channels")
        return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=classes)

    return builder


def _monai(name: str) -> Callable[..., nn.Module]:
    def builder(classes: int = 2, in_channels: int = 3) -> nn.Module:
        from monai.networks import nets

        if name == "BasicUNet":
            return nets.BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=classes,
                                  features=(8, 8, 16, 32, 64, 8))
        return nets.UNet(spatial_dims=2, in_channels=in_channels, out_channels=classes,
                         channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)

    return builder


# name -> (builder, the package it needs)
NETWORKS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "smp Unet-resnet18": (_smp("Unet"), "segmentation_models_pytorch"),
    "smp Unet-resnet34": (_smp("Unet", "resnet34"), "segmentation_models_pytorch"),
    "smp Unet-mobilenet_v2": (_smp("Unet", "mobilenet_v2"), "segmentation_models_pytorch"),
    "smp FPN": (_smp("FPN"), "segmentation_models_pytorch"),
    "smp DeepLabV3+": (_smp("DeepLabV3Plus"), "segmentation_models_pytorch"),
    "smp Linknet": (_smp("Linknet"), "segmentation_models_pytorch"),
    "smp UNet++": (_smp("UnetPlusPlus"), "segmentation_models_pytorch"),
    "tv DeepLabV3-MobileNetV3": (_torchvision("deeplabv3_mobilenet_v3_large"), "torchvision"),
    "tv LRASPP-MobileNetV3": (_torchvision("lraspp_mobilenet_v3_large"), "torchvision"),
    "MONAI UNet": (_monai("UNet"), "monai"),
    "MONAI BasicUNet": (_monai("BasicUNet"), "monai"),
}
# Networks on which a transform runs into its time limit (minutes): in the README's matrix,
# not in the default tests (test_prune_on_smps_manet_refuses_within_its_time_limit covers it).
SLOW_NETWORKS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "smp MAnet": (_smp("MAnet"), "segmentation_models_pytorch"),
}


def missing_reason(package: str) -> str | None:
    """Why ``package`` cannot be used here, or None."""
    try:
        importlib.import_module(package)
    except Exception as error:  # noqa: BLE001 - any import failure means: not here
        return f"{package} is not importable here ({type(error).__name__}: {error}); pip install -e '.[test]'"
    return None


def available(name: str) -> bool:
    return missing_reason({**NETWORKS, **SLOW_NETWORKS}[name][1]) is None


def build(name: str, *, classes: int = 2, in_channels: int = 3, seed: int = 0) -> nn.Module:
    """The network ``name`` of :data:`NETWORKS`, in eval mode, with seeded random weights."""
    builder, _ = {**NETWORKS, **SLOW_NETWORKS}[name]
    torch.manual_seed(seed)
    return builder(classes=classes, in_channels=in_channels).eval()


def small_smp_unet(classes: int = 2, in_channels: int = 3) -> nn.Module:
    """smp's Unet with a 3-level resnet18 encoder (0.8M params): a user's network small enough to
    train in a test. Its builder calls the classes ``classes``, as smp does."""
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8),
                    classes=classes, in_channels=in_channels)
