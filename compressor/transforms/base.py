"""The transform contract: a base class, the registry, errors and records."""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from compressor.bounds import shown
from compressor.errors import CompressorError, ConfigError
from compressor.registry import Registry
from compressor.schema import Parameter, check_arguments, parameters_of
from compressor.transforms.calibration import Counterpart

__all__ = [
    "Transform", "TransformError", "TransformRecord", "Change", "TRANSFORMS", "register_transform", "NETWORK_TRAITS",
    "Trait", "network_traits", "traits_found",
]

#: the largest integer a transform parameter takes (2**53: exact as a float, far past any count or width)
MAX_INTEGER = 1 << 53

#: What in a network can make a transform refuse it. A transform lists the traits it refuses
#: in :attr:`Transform.refuses` (with the refusal's message) and the traits its output has in
#: :attr:`Transform.produces`; the contract suite expects exactly those refusals on networks
#: that have the traits, and success everywhere else.
NETWORK_TRAITS = {
    "no-concat": "no torch.cat in its forward pass",
    "concat-into-other": "a concatenation feeds something other than a plain dense Conv2d "
                         "(an activation, a transposed or grouped conv)",
    "no-resolution-pair": "no down-sampling paired with an up-sampling back to its resolution (a classifier)",
    "no-conv-run": "no stride-1 k x k conv that shares its resolution with another",
    "no-dense-conv": "no dense (groups=1) k x k conv: only depthwise and 1 x 1 convs",
    "grouped-conv": "grouped (not depthwise) convs coupled to every layer prune could narrow",
    "one-level": "a single down-sampling level (cutting it would leave nothing at a coarser resolution)",
}


@dataclass(frozen=True)
class Trait:
    """A network trait a transform declares (:attr:`Transform.traits`) beyond :data:`NETWORK_TRAITS`.

    Attributes:
        description: what a network with it has (or lacks), as ``compressor transforms`` says it.
        found: whether a network has it, checked on the network as built (the contract suite
            expects the refusal exactly there); None: only a transform's output has it (``produces``).
    """

    description: str
    found: Callable[[nn.Module], bool] | None = None


def network_traits() -> dict[str, str]:
    """Every trait a refusal may name: :data:`NETWORK_TRAITS` and those the registered transforms
    declare (a plugin's own, without editing compressor), name -> description."""
    declared = {name: trait.description for transform in TRANSFORMS.names()
                for name, trait in TRANSFORMS.get(transform).traits.items()}
    return {**NETWORK_TRAITS, **declared}


def traits_found(model: nn.Module) -> set[str]:
    """The declared traits (:attr:`Transform.traits` with a check) that ``model`` has."""
    return {name for transform in TRANSFORMS.names() for name, trait in TRANSFORMS.get(transform).traits.items()
            if trait.found is not None and trait.found(model)}


class TransformError(CompressorError):
    """A transform cannot be applied; the message names the layer (or node) and why."""


@dataclass
class Change:
    """What one transform did to a model, before costs are attached.

    Attributes:
        changed: dotted names of the layers replaced, modified or added.
        removed: dotted names of layers taken out.
        skipped: layer name -> why a selected layer was left alone.
        notes: anything else worth telling the user.
        counterparts: for a changed layer that does not simply replace the layer of the
            same name (a new bridge, a conv taking ``a + b`` instead of ``cat([a, b])``),
            where its input and the output it should reproduce are in the input model;
            the engine measures (and calibrates) every changed layer through these;
            None for a layer nothing in the input model compares with.
    """

    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counterparts: dict[str, Counterpart | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TransformRecord:
    """One applied step of a recipe: its configuration, what changed, and costs around it.

    Costs are fvcore counts at the example input's shape (one multiply-add = one flop).
    ``errors`` holds, per changed layer, the relative output error of the replacement
    against the layer it replaced, on the calibration images (or the example input), and
    ``output_error`` the same for the whole network's output; None where not measurable.
    An optional step that did not apply has ``skipped_step`` (the refusal) and changes nothing.
    """

    transform: str
    params: dict[str, Any]
    changed: list[str]
    removed: list[str]
    skipped: dict[str, str]
    notes: list[str]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    errors: dict[str, float] = field(default_factory=dict)
    output_error: float | None = None
    #: for an optional step that did not apply: why (the model went on unchanged)
    skipped_step: str | None = None

    def max_error(self) -> tuple[str, float] | None:
        """The changed layer with the largest relative output error, or None."""
        if not self.errors:
            return None
        name = max(self.errors, key=self.errors.__getitem__)
        return name, self.errors[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Transform(abc.ABC):
    """Base class of every transform.

    A transform is configured by plain keyword values (so it can live in YAML and on an
    Optuna trial) and declares them in its ``__init__`` signature with type hints and
    defaults: that signature is its schema (see :meth:`parameters`).

    The engine (:func:`compressor.transforms.apply`) calls, on a private deep copy of
    the model:

    1. :meth:`check` - validate and raise :class:`TransformError` naming the layer; the
       default does nothing.
    2. :meth:`transform` - change the copy and return ``(model, Change)``; the returned
       model may be the same object or a new one (a ``torch.fx.GraphModule``).

    A transform that would change nothing must raise :class:`TransformError` saying so,
    never return silently.
    """

    name: ClassVar[str] = ""
    #: parameters added after studies were stored: left out of a recipe's hash while at their
    #: default, so a stored recipe keeps its hash (and its finished twin) across versions
    omit_when_default: ClassVar[tuple[str, ...]] = ()
    #: parameters added after model files recorded their steps, with the value a step recorded
    #: without them was built with (a saved model is rebuilt as it was made)
    recorded_before: ClassVar[dict[str, Any]] = {}
    params: dict[str, Any]

    # -- how it describes itself (listings, the contract suite, the ``generic`` search space) --

    #: parameters that show it at work: ``compressor transforms`` prints them, the contract
    #: suite applies them to every test network, a search probes whether it applies with them
    example: ClassVar[dict[str, Any]] = {}
    #: the :data:`NETWORK_TRAITS` it refuses, each with a regular expression its message matches
    refuses: ClassVar[dict[str, str]] = {}
    #: the :data:`NETWORK_TRAITS` a network has after it (``separable`` leaves no dense conv)
    produces: ClassVar[frozenset[str]] = frozenset()
    #: traits of its own that ``refuses`` and ``produces`` may name (:func:`network_traits`)
    traits: ClassVar[dict[str, Trait]] = {}
    #: where ``generic`` samples it, in the paper's order: depth 10, skips 20, conv kinds 30,
    #: dilation 40, pruning 50 (last: it prunes what the others built); others 45 by default
    search_order: ClassVar[int] = 45
    #: transforms that are alternatives to one another (``separable`` and ``fire`` both
    #: replace convs): ``generic`` picks one of the group, or none, with one choice of that name
    search_group: ClassVar[str | None] = None

    @classmethod
    def applicability(cls, context: Any) -> Any:
        """Whether (and how far) it applies to the search's base network, probed once per study;
        falsy: ``generic`` leaves it out. ``context`` is a :class:`compressor.spaces.SearchContext`.

        The default applies :attr:`example` to the network alone.
        """
        return context.applies(cls.name, **cls.example)

    @classmethod
    def suggest(cls, trial: Any, applicability: Any, steps: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
        """Its parameters drawn from the Optuna ``trial``, or None to leave it out of this recipe.

        ``applicability`` is what :meth:`applicability` returned; ``steps`` the recipe so far. Each
        choice is a named Optuna parameter. The default is one yes/no choice named after the
        transform, with :attr:`example` as its parameters.
        """
        return dict(cls.example) if trial.suggest_categorical(cls.name, [False, True]) else None

    @classmethod
    def smallest(cls, applicability: Any) -> dict[str, Any]:
        """The choices of :meth:`suggest` that make the smallest network (the search refuses a
        budget that even these miss). The default: use it."""
        return {cls.name: True}

    @classmethod
    def unchanged(cls, applicability: Any) -> dict[str, Any]:
        """The choices of :meth:`suggest` that leave it out of a recipe (``generic`` drops a step of
        its smallest recipe that does not compose on the network so). The default: not used."""
        return {cls.name: False}

    @classmethod
    def parameters(cls) -> list[Parameter]:
        """The transform's parameters, gathered from ``__init__`` along the class hierarchy."""
        seen: dict[str, Parameter] = {}
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass) and issubclass(klass, Transform) and klass is not Transform:
                for parameter in parameters_of(vars(klass)["__init__"]):
                    seen[parameter.name] = parameter
        return list(seen.values())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each subclass's ``__init__`` records the arguments it was called with as :attr:`params`
        (the outermost call), so an instance made in Python can be put in a recipe."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_params", False):
            return

        @functools.wraps(init)
        def recording(self: Transform, *args: Any, **params: Any) -> None:
            outermost = "params" not in self.__dict__
            if outermost:
                bound = inspect.signature(init).bind(self, *args, **params)
                given = {name: value for name, value in bound.arguments.items() if name != "self"}
                for name, parameter in inspect.signature(init).parameters.items():
                    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                        given.update(given.pop(name, {}))
                self.params = given
            init(self, *args, **params)

        recording._records_params = True  # type: ignore[attr-defined]
        cls.__init__ = recording  # type: ignore[method-assign]

    def to_data(self) -> dict[str, Any]:
        """This configured transform as a recipe step: ``{"name": ..., **params}``.

        Raises:
            ConfigError: its class is not registered (no name a recipe could refer to).
        """
        if not self.name or TRANSFORMS.get_or_none(self.name) is not type(self):
            raise ConfigError(f"{type(self).__name__} is not a registered transform; decorate its class with "
                              "@register_transform(NAME) (or declare a compressor.transforms entry point)")
        return {"name": self.name, **self.params}

    @classmethod
    def from_params(cls, params: dict[str, Any], *, where: str | None = None) -> Transform:
        """Builds the transform after checking ``params`` against :meth:`parameters`."""
        where = where or f"transform {cls.name!r}"
        checked = check_arguments(cls.parameters(), params, where=where)
        for key, value in checked.items():  # a count, a width, a rank: far below this (Python's ints have no end)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
                raise ConfigError(f"{where}: {key}: {shown(value)} is out of range (at most {MAX_INTEGER:,} in size)")
        instance = cls(**checked)
        instance.params = checked
        return instance

    def replay(self, model: nn.Module) -> dict[str, Any]:
        """Parameters that rebuild exactly what this step made of ``model`` (its result) from the
        same architecture whatever its weights, beyond :attr:`params`; recorded in the network's
        :mod:`~compressor.origin` so a saved model is rebuilt as data. The default: none, the
        parameters decide the architecture. ``prune`` returns the widths it left, which depend on
        the weights it ranked."""
        return {}

    def check(self, model: nn.Module, example_input: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Validates ``model`` before anything changes. Raises :class:`TransformError`."""

    @abc.abstractmethod
    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        """Changes ``model`` (a copy the engine owns) and says what changed."""


def _check_transform(name: str, cls: type[Transform]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise TypeError(f"transform {name!r} must be a Transform subclass, got {cls!r}")
    cls.name = name


TRANSFORMS: Registry[type[Transform]] = Registry(
    "transform", entry_points="compressor.transforms", on_register=_check_transform)


def register_transform(name: str):
    """Class decorator: registers a :class:`Transform` subclass under ``name``.

    A transform in another package can instead be declared as a ``compressor.transforms``
    entry point (``name = package.module:Class``); it is registered under that name.
    """
    return TRANSFORMS.register(name)
