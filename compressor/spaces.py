"""What a search space is: a function ``(trial, context) -> Recipe`` with a name and a smallest point.

The spaces themselves live outside the core (the top-level ``search_spaces`` package, or
another installed package) and reach :data:`SPACES` through the ``compressor.search_spaces``
entry points, so the search never imports them by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.registry import Registry
from compressor.transforms import Recipe, TransformError, apply

__all__ = ["SPACES", "SearchContext", "SearchSpace", "register_space"]

Sampler = Callable[[optuna.trial.BaseTrial, "SearchContext"], Recipe]


@dataclass
class SearchContext:
    """What a space may look at while it samples: the base network and an example input.

    Attributes:
        model: the base network (never modified).
        example: an input it accepts (shape ``(1, C, H, W)``).
        model_name: how the base network was named (``unet``, an import path).
        as_built: the study's own rules for a recipe (:func:`compressor.candidates.versions.as_built_for` at
            its build version), so a study made by an earlier version probes what its trials were built by
            (where a transform refuses more now, its space stays the one the study was made with).
    """

    model: nn.Module
    example: torch.Tensor
    model_name: str = ""
    as_built: Callable[[Recipe], Recipe] | None = field(default=None, repr=False)
    _probes: dict[str, bool] = field(default_factory=dict, repr=False)

    def applies(self, name: str, **params: Any) -> bool:
        """True if the transform ``name`` with ``params`` applies to the base network on its own.

        Each answer is computed once (by applying it to a copy) and remembered.
        """
        key = json.dumps({"name": name, **params}, sort_keys=True)
        if key not in self._probes:
            try:
                # whether it refuses is all a probe asks: no FLOPs counted, no errors measured
                probe = Recipe.of([(name, params)])
                probe = self.as_built(probe) if self.as_built is not None else probe
                apply(self.model, probe, self.example, count_flops=False, diagnostics=False)
                self._probes[key] = True
            except TransformError:
                self._probes[key] = False
        return self._probes[key]


@dataclass(frozen=True)
class SearchSpace:
    """A named search space.

    Attributes:
        name: the registered name.
        sample: ``(trial, context) -> Recipe``; draws every choice from ``trial``.
        smallest: ``context -> params``: the choices of the space's smallest candidate
            (used to refuse a budget nothing in the space can meet, before any training).
        starts: ``context -> [params, ...]``: candidates worth trying first (enqueued
            when a study starts), such as the paper's own recipe.
        describe: ``choices -> str``: a short line for tables (default: the recipe's own).
        model: the base network the space is written for (None: any network).
        description: one line for listings.
        legend: how to read the short lines of ``describe`` (stored on each study, printed under its tables);
            empty where they read as they are.
    """

    name: str
    sample: Sampler
    smallest: Callable[[SearchContext], Mapping[str, Any]]
    starts: Callable[[SearchContext], list[Mapping[str, Any]]] = lambda context: []
    describe_choices: Callable[[Mapping[str, Any]], str] | None = None
    model: str | None = None
    description: str = ""
    legend: str = ""

    def __call__(self, trial: optuna.trial.BaseTrial, context: SearchContext) -> Recipe:
        return self.sample(trial, context)

    def fixed(self, params: Mapping[str, Any], context: SearchContext) -> Recipe:
        """The recipe the choices ``params`` give (through Optuna's ``FixedTrial``)."""
        try:
            return self.sample(optuna.trial.FixedTrial(dict(params)), context)
        except ValueError as error:  # FixedTrial: a choice missing or out of its range
            raise ConfigError(f"search space {self.name!r}: {error}") from None

    def describe(self, choices: Mapping[str, Any], recipe: Recipe | None = None) -> str:
        """A short line for ``choices`` (the space's own form, else ``recipe.short()``)."""
        if self.describe_choices is not None:
            return self.describe_choices(choices)
        return recipe.short() if recipe is not None else ", ".join(f"{key}={value}" for key, value in choices.items())

    def smallest_recipe(self, context: SearchContext) -> Recipe:
        return self.fixed(self.smallest(context), context)


SPACES: Registry[SearchSpace] = Registry("search space", entry_points="compressor.search_spaces")


def register_space(
    name: str,
    *,
    smallest: Callable[[SearchContext], Mapping[str, Any]],
    starts: Callable[[SearchContext], list[Mapping[str, Any]]] | None = None,
    describe: Callable[[Mapping[str, Any]], str] | None = None,
    model: str | None = None,
    legend: str = "",
) -> Callable[[Sampler], Sampler]:
    """Registers ``sample`` as the search space ``name`` (its docstring's first line describes it)."""

    def decorator(sample: Sampler) -> Sampler:
        description = (sample.__doc__ or "").strip().splitlines()[0] if sample.__doc__ else ""
        space = SearchSpace(
            name=name, sample=sample, smallest=smallest, starts=starts or (lambda context: []),
            describe_choices=describe, model=model, description=description, legend=legend,
        )
        SPACES.register(name)(space)
        return sample

    return decorator
