"""Recipes: ordered lists of transform specs, as plain data, YAML or JSON."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compressor.errors import ConfigError
from compressor.io import atomic_write_text, read_yaml
from compressor.keyvalue import parse_pairs, split_outside_brackets
from compressor.registry import UnknownNameError
from compressor.transforms.base import TRANSFORMS, Transform

__all__ = ["Recipe", "TransformSpec", "parse_transform_option", "plain_params"]


@dataclass(frozen=True)
class TransformSpec:
    """One step of a recipe: a registered transform name and its parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: a step that does not apply to the network is skipped (and reported) instead of refused
    optional: bool = False

    def build(self, *, where: str | None = None) -> Transform:
        """The configured :class:`Transform`; raises ``ConfigError`` on a bad name or parameter."""
        where = where or f"transform {self.name!r}"
        try:
            cls = TRANSFORMS.get(self.name)
        except UnknownNameError as error:
            raise ConfigError(f"{where}: {error}") from None
        return cls.from_params(dict(self.params), where=where)

    def short(self) -> str:
        """A compact one-word form: ``fire(squeeze_ratio=0.125)``; an optional step ends in ``?``."""
        mark = "?" if self.optional else ""
        if not self.params:
            return self.name + mark
        values = ",".join(f"{key}={_short_value(value)}" for key, value in self.params.items())
        return f"{self.name}({values}){mark}"

    def to_data(self) -> dict[str, Any]:
        """``{"name": ..., **params}``, with ``optional: true`` if set."""
        return {"name": self.name, **plain_params(self.params), **({"optional": True} if self.optional else {})}


@dataclass(frozen=True)
class Recipe:
    """An ordered list of :class:`TransformSpec`.

    On disk (YAML or JSON) a recipe is a list under ``transforms``, one mapping per step
    with its ``name`` and parameters side by side::

        transforms:
          - name: downsample_depth
            levels: 2
            optional: true      # skipped, and reported, where it does not apply
          - name: fire
            squeeze_ratio: 0.25

    ``strict: false`` beside ``transforms`` makes every step optional.

    Example:
        >>> recipe = Recipe.from_data({"transforms": [{"name": "separable"}]})
        >>> recipe.steps[0].name
        'separable'
        >>> recipe.hash() == Recipe.from_data([{"name": "separable", "mid_norm": None}]).hash()
        True
    """

    steps: tuple[TransformSpec, ...] = ()

    @classmethod
    def from_data(cls, data: Any, *, source: str = "recipe") -> Recipe:
        """Builds a recipe from plain data; every step is validated.

        Raises:
            ConfigError: naming ``source``, the step and the key at fault.
        """
        strict = True
        if isinstance(data, Mapping):
            unknown = [key for key in data if key not in ("transforms", "strict")]
            if unknown:
                raise ConfigError(f"{source}: unknown key {unknown[0]!r}; a recipe has only 'transforms' and 'strict'")
            strict = data.get("strict", True)
            if not isinstance(strict, bool):
                raise ConfigError(f"{source}: strict must be true or false, got {strict!r}")
            data = data.get("transforms") or []
        if not isinstance(data, list):
            raise ConfigError(f"{source}: expected a list of transforms, got {type(data).__name__}")
        steps = []
        for index, item in enumerate(data):
            where = f"{source}: transforms[{index}]"
            if isinstance(item, str):
                item = {"name": item}
            elif isinstance(item, Transform):
                item = item.to_data()
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise ConfigError(f"{where}: expected a mapping with a 'name', got {item!r}")
            params = {key: value for key, value in item.items() if key not in ("name", "optional")}
            optional = item.get("optional", False)
            if not isinstance(optional, bool):
                raise ConfigError(f"{where}: optional must be true or false, got {optional!r}")
            spec = TransformSpec(item["name"], params, optional or not strict)
            spec.build(where=f"{where} ({spec.name})")
            steps.append(spec)
        return cls(tuple(steps))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Reads a recipe from a YAML or JSON file.

        Raises:
            ConfigError: the file is missing, not YAML/JSON, or invalid (naming the file).
        """
        return cls.from_data(read_yaml(path, what="recipe", formats="YAML or JSON"), source=str(path))

    @classmethod
    def of(cls, specs: Iterable[TransformSpec | Transform | tuple[str, Mapping[str, Any]]]) -> Recipe:
        """Builds a recipe from specs, configured transforms or ``(name, params)`` pairs, validating each."""
        items = [spec.to_data() if isinstance(spec, (TransformSpec, Transform)) else {"name": spec[0], **spec[1]}
                 for spec in specs]
        return cls.from_data(items)

    def to_data(self) -> dict[str, Any]:
        """The on-disk form: ``{"transforms": [{"name": ..., **params}, ...]}``."""
        return {"transforms": [step.to_data() for step in self.steps]}

    def save(self, path: str | Path) -> None:
        """Writes the recipe as YAML (or JSON when the suffix is ``.json``), atomically."""
        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(self.to_data(), indent=2) + "\n"
        else:
            text = yaml.safe_dump(self.to_data(), sort_keys=False)
        atomic_write_text(path, text)

    def normalized(self) -> list[dict[str, Any]]:
        """Every step with all its parameters, defaults filled in.

        ``optional`` is left out: it decides whether a step that does not apply is refused, not
        what a step that applies builds, so it does not change a recipe's result.
        """
        normalized = []
        for step in self.steps:
            transform = step.build()
            defaults = {parameter.name: parameter.default for parameter in transform.parameters()}
            params = {
                key: value for key, value in plain_params(transform.params).items()
                if not (key in transform.omit_when_default and value == plain_params(defaults).get(key))
            }
            normalized.append({"name": step.name, **params})
        return normalized

    def hash(self) -> str:
        """A stable 16-hex-digit hash of the normalized recipe, for caching.

        Two recipes that differ only in parameters left at their defaults hash alike.
        """
        canonical = json.dumps(self.normalized(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def short(self) -> str:
        """One line for tables: ``downsample_depth(levels=2) > fire``."""
        return " > ".join(step.short() for step in self.steps) or "(identity)"

    def __len__(self) -> int:
        return len(self.steps)


def parse_transform_option(text: str) -> TransformSpec:
    """Parses the command line's form of a step, ``NAME[:key=value,key=value]``; lists in brackets.

    Example:
        >>> parse_transform_option("dilation:rates=[1,2,5],include=encoder.*")
        TransformSpec(name='dilation', params={'rates': [1, 2, 5], 'include': 'encoder.*'}, optional=False)

    Raises:
        ConfigError: a pair without ``=``.
    """
    name, _, rest = text.partition(":")
    params = parse_pairs(split_outside_brackets(rest), what=f"transform step {text!r}: parameter")
    return TransformSpec(name.strip(), params)


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in params.items()}


def _short_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
