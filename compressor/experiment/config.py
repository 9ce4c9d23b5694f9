"""An experiment's sections (model, cost, data, train, budget, search...) and the YAML file they come from."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from compressor.budget import Budget
from compressor.data.base import DataConfig
from compressor.data.spacenet import SpacenetSampleConfig
from compressor.errors import ConfigError
from compressor.experiment.typed import from_data, to_data
from compressor.finetune import FinetuneConfig
from compressor.io import atomic_write_text, read_yaml
from compressor.keyvalue import parse_pair
from compressor.latency import LatencyConfig
from compressor.models import MODELS, build_model
from compressor.outputs import declare_output
from compressor.search_config import SearchConfig
from compressor.train import (
    TrainConfig,
)

__all__ = ["ModelConfig", "CostConfig", "Experiment", "load_experiment", "apply_overrides"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The model to train (the ``model:`` section).

    Attributes:
        name: ``unet``, ``micronet`` or an import path ``package.module:callable``.
        args: keyword arguments of the builder. For the built-in models ``norm``
            defaults to ``batch`` (what makes training from scratch on a CPU budget
            work), and ``in_channels`` and ``num_classes`` come from the data.
        output: for a model returning a dict or tuple, the key or index of the
            segmentation (None: ``out``, or the only tensor); see :mod:`compressor.outputs`.
    """

    omit_when_default = ("output",)

    name: str = "micronet"
    args: dict[str, Any] = field(default_factory=dict)
    output: str | int | None = None

    def builder_args(self, *, in_channels: int, num_classes: int) -> dict[str, Any]:
        """The keyword arguments the builder gets.

        A builder given by import path gets ``args`` as they are: it may not take
        ``in_channels`` or ``num_classes``, so give them in ``args`` if it does.

        Example:
            >>> ModelConfig(name="unet").builder_args(in_channels=1, num_classes=2)
            {'in_channels': 1, 'num_classes': 2, 'norm': 'batch'}
        """
        if self.name not in MODELS:
            return dict(self.args)
        return {"in_channels": in_channels, "num_classes": num_classes, "norm": "batch", **self.args}

    def build(self, *, in_channels: int, num_classes: int) -> nn.Module:
        """Builds the model for data with ``in_channels`` and ``num_classes``."""
        model = build_model(self.name, self.builder_args(in_channels=in_channels, num_classes=num_classes))
        return declare_output(model, self.output)

    @property
    def label(self) -> str:
        """A file-name-safe label: ``micronet``, ``mypkg.nets-build``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-") or "model"

    @property
    def full_label(self) -> str:
        """A file-name-safe label of the builder *and* its arguments, so that two models of one
        builder never share a folder: ``unet``, ``smp.Unet-encoder_name=resnet18``; a long one
        ends with a hash of the arguments instead.

        Example:
            >>> ModelConfig(name="smp:Unet", args={"encoder_name": "tu-resnet18", "classes": 2}).full_label
            'smp-Unet-classes=2-encoder_name=tu-resnet18'
        """
        if not self.args and self.output is None:
            return self.label
        parts = [f"{key}={_short(value)}" for key, value in sorted(self.args.items())]
        if self.output is not None:
            parts.append(f"output={self.output}")
        text = re.sub(r"[^A-Za-z0-9_.=-]+", "-", "-".join(parts)).strip("-")
        if len(text) > 80:
            digest = hashlib.sha256(json.dumps([self.args, self.output], sort_keys=True, default=str).encode()).hexdigest()
            text = f"args-{digest[:10]}"
        return f"{self.label}-{text}"


def _short(value: Any) -> str:
    """An argument's value in a folder name: lists joined by ``x``."""
    if isinstance(value, (list, tuple)):
        return "x".join(_short(item) for item in value)
    return str(value)


@dataclass(frozen=True, kw_only=True)
class CostConfig:
    """How costs are measured (the ``cost:`` section).

    Attributes:
        input_size: side of the square input that params, FLOPs and latency are
            measured at (FLOPs grow with it; budgets refer to it).
        latency_runs: forward passes timed for the median latency in eager PyTorch with the
            process's threads (0: not timed); ``latency`` replaces it.
        latency: how latency is measured: runtime (``torch`` or ``onnxruntime``), threads,
            batch, input size, repeats (:class:`~compressor.latency.LatencyConfig`). None: not
            timed, unless a latency budget or objective asks (then as ``latency_runs`` did).
    """

    omit_when_default = ("latency",)

    input_size: int = 224
    latency_runs: int = 0
    latency: LatencyConfig | None = None


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """One experiment file.

    Attributes:
        name: the experiment's name (default: the file name without suffix).
        run_dir: where results go (default: ``runs/<name>``, relative to the working folder).
        data: the dataset; ``name`` picks the kind (``spacenet_sample``, ``synthetic``, ``folder``).
        model: the model to train.
        train: the training recipe.
        budget: limits on params, FLOPs and latency.
        cost: how costs are measured.
        search: what ``compressor search`` explores, and how.
        finetune: how a network with inherited weights is fine-tuned (``compressor
            compress``, and a search with ``search.init: inherit`` or ``distill``).
    """

    name: str = ""
    run_dir: str = ""
    data: DataConfig = field(default_factory=SpacenetSampleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: Budget = field(default_factory=Budget)
    cost: CostConfig = field(default_factory=CostConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "experiment") -> Experiment:
        """Builds and validates an experiment from plain data; errors start with ``source``."""
        return from_data(cls, dict(data or {}), where="", source=source)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name or 'experiment'}")

    def cost_input_shape(self, in_channels: int) -> tuple[int, int, int, int]:
        return (1, in_channels, self.cost.input_size, self.cost.input_size)

    def to_dict(self) -> dict[str, Any]:
        """The resolved experiment as plain data (every default filled in)."""
        return to_data(self)

    def save(self, path: str | Path) -> Path:
        """Writes the resolved experiment as YAML, atomically."""
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_experiment(path: str | Path, *, overrides: Sequence[str] = ()) -> Experiment:
    """Reads and validates an experiment file.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings applied on top (values read as YAML),
            e.g. ``train.steps=50``.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key is unknown, missing or
            of the wrong type (naming the file and the dotted key).
    """
    path = Path(path)
    source = str(path)
    raw = read_yaml(path, what="experiment file")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides, source=source)
    raw.setdefault("name", path.stem)
    return Experiment.from_dict(raw, source=source)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], *, source: str = "experiment") -> dict[str, Any]:
    """Sets ``dotted.key=value`` pairs in a copy of nested plain data (values read as YAML).

    Example:
        >>> apply_overrides({"train": {"lr": 0.1}}, ["train.steps=5", "model.args.norm=null"])
        {'train': {'lr': 0.1, 'steps': 5}, 'model': {'args': {'norm': None}}}
    """
    result = copy.deepcopy(raw)
    for override in overrides:
        key, value = parse_pair(override, what=f"{source}: override", form="section.key=value")
        parts = [part.strip() for part in key.split(".")]
        if not all(parts):
            raise ConfigError(f"{source}: override {override!r} must look like section.key=value")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: override {override!r}: {part!r} is not a section")
        target[parts[-1]] = value
    return result
