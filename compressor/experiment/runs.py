"""Training one model of an experiment: build, transform, train, measure, and write the run's files."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.cost import Cost, measure
from compressor.data.base import SegmentationData
from compressor.errors import ConfigError
from compressor.experiment.config import Experiment, ModelConfig
from compressor.floor import Floor
from compressor.io import atomic_write_text
from compressor.metrics import SegmentationMetrics
from compressor.saving import save_model
from compressor.train import (
    Callback,
    TrainResult,
    evaluate,
    seed_everything,
    train,
)

__all__ = ["TrainedModel", "model_label", "train_model"]


@dataclass
class TrainedModel:
    """A model trained by :func:`train_model`, with its cost and where its files went.

    ``test_metrics``: its evaluation on the data's test region (None: the data has none),
    made once after training; nothing in training looked at it. ``floor``: what a model must score
    on the validation pixels to have learned anything (the best constant prediction plus
    ``search.min_gain``, by ``search.floor``; None where not measured).
    """

    label: str
    model: nn.Module
    result: TrainResult
    cost: Cost
    output_dir: Path | None
    recipe: str | None = None
    test_metrics: SegmentationMetrics | None = None
    floor: Floor | None = None

    @property
    def learned(self) -> bool | None:
        """Whether its validation score is above the floor (None: no floor measured)."""
        return None if self.floor is None else self.floor.passes(self.result.metrics.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "recipe": self.recipe,
            **({"learned": self.learned, "floor": {"constant": self.floor.constant, "threshold": self.floor.threshold}}
               if self.floor is not None else {}),
            **self.result.to_dict(),
            **({"test_metrics": self.test_metrics.to_dict()} if self.test_metrics is not None else {}),
            "cost": self.cost.to_dict(modules=False),
        }


def model_label(model: ModelConfig, recipe: Any = None) -> str:
    """How a trained model is named in results.

    ``micronet``; ``unet+fire`` with a recipe file ``fire.yaml``; ``unet+recipe-<hash>``
    with an in-memory :class:`~compressor.transforms.Recipe`; the builder's arguments are part
    of it (:attr:`ModelConfig.full_label`), so two models of one builder are two names.

    Example:
        >>> model_label(ModelConfig(name="unet"), "recipes/fire.yaml")
        'unet+fire'
    """
    if recipe is None:
        return model.full_label
    if isinstance(recipe, (str, Path)):
        return f"{model.full_label}+{Path(recipe).stem}"
    return f"{model.full_label}+recipe-{recipe.hash()[:8]}"


def train_model(
    experiment: Experiment,
    *,
    model: ModelConfig | None = None,
    recipe: Any = None,
    data: SegmentationData | None = None,
    cache_dir: str | Path | None = None,
    evaluate_at: Sequence[float | int] = (),
    callback: Callback | None = None,
    output_dir: str | Path | None = None,
    label: str | None = None,
    test: bool = True,
    teacher: nn.Module | None = None,
    resume: str | Path | None = None,
) -> TrainedModel:
    """Builds, optionally transforms, trains, evaluates and costs one model of an experiment.

    Args:
        experiment: the experiment.
        model: the model (default: the experiment's ``model`` section).
        recipe: a transform recipe applied to the model before training: a YAML
            file or a :class:`~compressor.transforms.Recipe`.
        data: already built data (default: built from ``experiment.data``).
        cache_dir: the download cache (see :func:`compressor.data.cache_dir`).
        evaluate_at: intermediate evaluations; see :func:`compressor.train.train`.
        callback: called after each intermediate evaluation; may stop training.
        output_dir: where to write ``metrics.json``, ``config.yaml`` and ``model.pt``
            (None: write nothing).
        label: name of the model in results (default: :func:`model_label`).
        test: evaluate the trained model once on the data's test region, if it has one
            (``test_metrics``); callers that only choose by the model leave it out.
        teacher: the distillation teacher when ``train.distill`` is on (given: the baselines are
            trained here; :func:`compressor.train_model`, :mod:`compressor.experiment.distilled`,
            finds the one ``train.distill.teacher`` names).
        resume: a file that keeps the training's state, so that the same call again goes on
            where an interrupted one stopped (:func:`compressor.train.train`'s ``resume``).

    Returns:
        The trained model (moved back to the CPU), its result, its cost.

    Raises:
        CompressorError: bad data, model, recipe, or a failed training.
    """
    model_config = model or experiment.model
    if experiment.train.distill.active and teacher is None:
        raise ConfigError("train.distill is on and no teacher was given: pass teacher=..., or call "
                          "compressor.train_model, which finds the one train.distill.teacher names")
    loaded_recipe = None
    if recipe is not None:  # read first: a bad recipe fails before any download or training
        from compressor.transforms import Recipe, apply

        loaded_recipe = Recipe.load(recipe) if isinstance(recipe, (str, Path)) else recipe
    data = data or experiment.data.build(cache_dir=cache_dir)
    seed_everything(experiment.train.seed)
    network = model_config.build(in_channels=data.in_channels, num_classes=data.num_classes)
    if loaded_recipe is not None:  # a network trained from scratch: new layers keep PyTorch's initialization
        example = torch.zeros(1, data.in_channels, experiment.data.patch_size, experiment.data.patch_size)
        # the records are not shown: no layer errors measured (the same network, the random state alike, 1.6x faster)
        network, _records = apply(network, loaded_recipe, example, init="random", count_flops=False, diagnostics=False,
                                  check_each_step=False)
    label = label or model_label(model_config, recipe)
    result = train(
        network, data, experiment.train, evaluate_at=evaluate_at, callback=callback, description=label, teacher=teacher,
        resume=resume,
    )
    tested = test and data.test and not result.stopped_early
    test_metrics = evaluate(network, data, experiment.train, split="test") if tested else None
    cost = measure(network.cpu(), experiment.cost_input_shape(data.in_channels), latency_runs=experiment.cost.latency_runs,
                   latency=experiment.cost.latency)
    recipe_name = None if loaded_recipe is None else (str(recipe) if isinstance(recipe, (str, Path)) else loaded_recipe.short())
    floor = Floor.by_rule(experiment.search.floor, data, "score", margin=experiment.search.min_gain)
    trained = TrainedModel(label, network, result, cost, Path(output_dir) if output_dir else None, recipe_name, test_metrics,
                           floor)
    if output_dir is not None:
        _write_run(trained, experiment, model_config, loaded_recipe)
    return trained


def _write_run(trained: TrainedModel, experiment: Experiment, model_config: ModelConfig, recipe: Any) -> None:
    """``config.yaml`` (the resolved experiment), ``metrics.json``, and ``model.pt`` (:func:`compressor.save_model`)."""
    folder = trained.output_dir
    assert folder is not None
    dataclasses.replace(experiment, model=model_config).save(folder / "config.yaml")
    atomic_write_text(folder / "metrics.json", json.dumps(trained.to_dict(), indent=2) + "\n")
    save_model(
        folder / "model.pt", trained.model, recipe=recipe, base=model_config.name,
        input_shape=trained.cost.input_shape,
        metadata={"model_args": model_config.args, "metrics": trained.result.metrics.to_dict(),
                  "steps": trained.result.steps_done, "experiment": experiment.name},
    )
