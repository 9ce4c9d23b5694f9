"""Transforms: the Micro-Net recipe as pluggable steps on any ``nn.Module``.

Importing this package registers every built-in transform in :data:`TRANSFORMS`; transforms
of other packages join it through the ``compressor.transforms`` entry points.
"""

from __future__ import annotations

from compressor.transforms import (  # noqa: F401  (importing registers them)
    dilation,
    downsample_depth,
    fire,
    prune,
    separable,
    skip_fusion,
)
from compressor.transforms.base import (
    NETWORK_TRAITS,
    TRANSFORMS,
    Change,
    Trait,
    Transform,
    TransformError,
    TransformRecord,
    network_traits,
    register_transform,
    traits_found,
)
from compressor.transforms.engine import apply
from compressor.transforms.recipe import Recipe, TransformSpec, parse_transform_option

__all__ = [
    "NETWORK_TRAITS",
    "Trait",
    "network_traits",
    "traits_found",
    "TRANSFORMS",
    "Change",
    "Transform",
    "TransformError",
    "TransformRecord",
    "register_transform",
    "apply",
    "Recipe",
    "TransformSpec",
    "parse_transform_option",
]
