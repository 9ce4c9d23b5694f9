"""The ``deploy`` extra: onnx and onnxruntime, imported only when a deployment asks for them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from compressor.errors import MissingExtraError

__all__ = ["DEPLOY_PACKAGES", "deploy_available", "require_deploy", "missing_deploy"]

#: import name -> the distribution pip installs it from
DEPLOY_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime"}


def missing_deploy() -> list[str]:
    """The distributions of the ``deploy`` extra that are not installed."""
    return [dist for module, dist in DEPLOY_PACKAGES.items() if importlib.util.find_spec(module) is None]


def deploy_available() -> bool:
    """Whether onnx and onnxruntime can be imported."""
    return not missing_deploy()


def require_deploy(what: str) -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, or a one-line error naming what is missing and for what.

    Raises:
        MissingExtraError: ``<what> needs onnx, onnxruntime (the deploy extra), not installed``.
    """
    missing = missing_deploy()
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)} (the deploy extra), which is not installed")
    return importlib.import_module("onnx"), importlib.import_module("onnxruntime")
