"""How a study's candidates are built: how they start (:class:`Init`) and one builder
(:class:`CandidateBuilder`) for a search trial, its confirmation, the budget check and export."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from compressor.candidates.versions import BUILD_VERSION, as_built_for
from compressor.experiment import Experiment, ModelConfig
from compressor.finetune import with_calibration
from compressor.models.construction import steps_budget
from compressor.models.policy import current_source
from compressor.train import seed_everything
from compressor.transforms import Recipe, apply
from compressor.transforms.engine import input_output_shape

__all__ = ["Init", "CandidateBuilder", "build_candidate", "candidate_example"]


@dataclass(frozen=True)
class Init:
    """How a study's candidates start (``search.init``), decided once and read everywhere.

    ``random``: the base network untrained, new layers PyTorch's initialization; ``inherit``: the
    base network trained once as the parent, each candidate built from it, new layers the closest
    to what they replace, then fine-tuned (the ``finetune:`` section); ``distill``: as
    ``inherit``, the parent also the distillation teacher.
    """

    name: str = "random"

    @property
    def inherits(self) -> bool:
        """Candidates are built from a trained parent (which then exists) and fine-tuned."""
        return self.name != "random"

    @property
    def distills(self) -> bool:
        """The parent is the teacher of every candidate's fine-tuning."""
        return self.name == "distill"

    @property
    def weights(self) -> str:
        """How :func:`~compressor.transforms.apply` starts the layers it makes: ``inherit`` or ``random``."""
        return "inherit" if self.inherits else "random"


@dataclass(frozen=True)
class CandidateBuilder:
    """Everything a study's candidate is built from: the base network (the trained parent when
    candidates inherit), how new layers start, the calibration images, and the rules of the
    study's version. :meth:`build` is the one way a search trial, its confirmation, the budget
    check and ``compressor export`` build a candidate."""

    experiment: Experiment
    model_config: ModelConfig
    in_channels: int
    num_classes: int
    base: nn.Module | None = None
    init: Init = Init()
    calibration: list[torch.Tensor] | None = None
    build_version: int = BUILD_VERSION
    #: the base network's output shape at the build's example, found at the first build (every build starts from it)
    _base_output: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def build(self, recipe: Recipe, *, sampled: bool = False) -> nn.Module:
        """The candidate of ``recipe`` (:func:`build_candidate`, by the rules of the study's version:
        :func:`~compressor.candidates.versions.as_built_for`). ``sampled``: drawn here from the space, every
        parameter within its distribution, so not built under a file's budget even for a study read as data
        (the budget doubles a build's time)."""
        if self.base is not None and len(recipe) and "shape" not in self._base_output:  # an empty recipe runs nothing
            self._base_output["shape"] = input_output_shape(self.base, candidate_example(self.experiment, self.in_channels))
        return build_candidate(
            self.experiment, self.model_config, as_built_for(recipe, self.build_version), in_channels=self.in_channels,
            num_classes=self.num_classes, base=self.base, init=self.init.weights, calibration=self.calibration,
            base_output_shape=self._base_output.get("shape"), budget=not sampled,
        )


def candidate_example(experiment: Experiment, in_channels: int) -> torch.Tensor:
    """The input a candidate is built at (traced, checked): one patch of zeros."""
    return torch.zeros(1, in_channels, experiment.data.patch_size, experiment.data.patch_size)


def build_candidate(
    experiment: Experiment, model_config: ModelConfig, recipe: Recipe | None, *, in_channels: int, num_classes: int,
    base: nn.Module | None = None, init: str = "random", calibration: list[torch.Tensor] | None = None,
    base_output_shape: tuple[int, ...] | None = None, budget: bool = True,
) -> nn.Module:
    """The candidate network exactly as a search builds it: seeded base, then the seeded recipe.

    Both the search and ``compressor export`` go through here, so an exported trial has
    the very architecture (and pruned channels) that was trained. ``base`` is the trained
    parent when candidates inherit (``init`` ``inherit``, :attr:`Init.weights`): pruning then ranks
    the parent's trained channels, so export needs that parent too. ``calibration`` images are
    given to the steps that ask for calibration. ``base_output_shape``: ``base``'s output shape at the
    build's example where the caller knows it (:attr:`CandidateBuilder.build` finds it once).
    """
    if base is None:
        seed_everything(experiment.train.seed)
        base = model_config.build(in_channels=in_channels, num_classes=num_classes)
    if recipe is None or not len(recipe):
        return base
    seed_everything(experiment.train.seed)
    example = candidate_example(experiment, in_channels)
    if calibration:
        recipe = with_calibration(recipe, experiment.finetune.calibrate)
    # a study read as data (export, confirm, report): a recipe it stored is built under a file's budget
    source = current_source() if budget else None
    with contextlib.nullcontext() if source is None else steps_budget(source.name):
        network, _records = apply(  # the records are not shown: no layer or output errors measured for them
            base, recipe, example, count_flops=False, init=init,
            calibration=calibration, diagnostics=False, check_each_step=False, known_output_shape=base_output_shape,
        )
    return network
