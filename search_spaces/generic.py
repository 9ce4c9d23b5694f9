"""``generic``: a space for any network, drawn from every registered transform that applies to it.

Each transform is first tried alone on the base network (once per study, with its
:meth:`~compressor.transforms.Transform.applicability`); those that do not refuse it become
choices, each drawn by its own :meth:`~compressor.transforms.Transform.suggest`, in
:attr:`~compressor.transforms.Transform.search_order` (the paper's order: depth, skips, conv
kind, dilation, then pruning). Transforms of one ``search_group`` are alternatives: one
choice named after the group picks one of them or none (``conv``: ``standard``,
``separable`` or ``fire``). A transform of another package, registered through the
``compressor.transforms`` entry points, is sampled the same way (by default, one yes/no
choice named after it). A transform that refuses a trait an earlier step leaves (see
``refuses`` and ``produces``) is not drawn after it.

Choices of the built-in transforms (Optuna parameter names), where they apply:
``levels_removed`` (0..the most levels ``downsample_depth`` can cut, up to 3), ``skip``
(``concat``/``add``; ``skip_fusion`` after a cut is optional, since the cut may take every
concatenation with it), ``conv`` (``standard``/``separable``/``fire`` on every k x k conv),
``fire_squeeze``, ``fire_share3x3``, ``dilation``, ``prune`` (0..0.9). A combination can
still be refused (a pair that does not compose on that network); that trial fails with the
reason and the search goes on. The smallest candidate (what the budget check judges) leaves
out each step that does not compose on the network (:meth:`~Transform.unchanged`).
"""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from compressor.spaces import SearchContext, register_space
from compressor.transforms import TRANSFORMS, Recipe, Transform, TransformError, apply

__all__ = ["generic", "applicable", "sampled_transforms"]

#: the name of a group's "none of them" choice
UNCHANGED = {"conv": "standard"}


def sampled_transforms() -> list[type[Transform]]:
    """Every registered transform, in the order ``generic`` samples them."""
    classes = [TRANSFORMS.get(name) for name in TRANSFORMS.names()]
    return sorted(classes, key=lambda cls: (cls.search_order, cls.name))


def applicable(context: SearchContext) -> dict[str, Any]:
    """What each transform's :meth:`applicability` says of the base network, by name (falsy: it does not apply)."""
    return {cls.name: cls.applicability(context) for cls in sampled_transforms()}


def _choices(found: dict[str, Any]) -> list[tuple[str | None, list[type[Transform]]]]:
    """The choices in order, given :func:`applicable`'s answers: ``(group, members that apply)``, or
    ``(None, [transform])`` for one alone."""
    choices: list[tuple[str | None, list[type[Transform]]]] = []
    groups: dict[str, list[type[Transform]]] = {}
    for cls in sampled_transforms():
        if not found[cls.name]:
            continue
        if cls.search_group is None:
            choices.append((None, [cls]))
        elif cls.search_group in groups:
            groups[cls.search_group].append(cls)
        else:
            groups[cls.search_group] = [cls]
            choices.append((cls.search_group, groups[cls.search_group]))
    return choices


def _smallest(context: SearchContext) -> dict[str, Any]:
    """The choices of the smallest candidate: each transform's :meth:`~Transform.smallest` (the last
    member of a group), less the steps of that recipe that do not compose on the base network. A step
    whose output a later one refuses (``grouped`` leaves grouped convs, which ``prune`` refuses) keeps
    that later step out, so the candidate without it is weighed too, and the one with fewer
    parameters is the smallest."""
    found = applicable(context)
    smallest: dict[str, Any] = {}
    for group, members in _choices(found):
        if group is not None:
            smallest[group] = members[-1].name
        for cls in members:
            smallest.update(cls.smallest(found[cls.name]))
    steps = [step.name for step in generic(optuna.trial.FixedTrial(dict(smallest)), context).steps]
    chosen = [TRANSFORMS.get(name) for name in steps]
    blockers = [cls for cls in chosen  # a step that keeps a later transform of the space out
                if any(cls.produces & set(other.refuses) for other in sampled_transforms()
                       if found[other.name] and other.search_order > cls.search_order and other.name not in steps)]
    variants = [_buildable(smallest, found, context)]
    variants += [_buildable({**smallest, **_off(cls, found, smallest)}, found, context) for cls in blockers]
    # the first of the smallest (no blocker, unless leaving one out gives fewer parameters)
    choices, _network = min(variants, key=lambda variant: _params(variant[1]))
    return choices


def _off(cls: type[Transform], found: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """The choices that leave ``cls`` out: the member before it in its group (or the group's none), or
    its own :meth:`~Transform.unchanged`."""
    if cls.search_group is None:
        return cls.unchanged(found[cls.name])
    members = next(members for group, members in _choices(found) if group == cls.search_group)
    names = [member.name for member in members]
    index = names.index(choices[cls.search_group]) if choices.get(cls.search_group) in names else 0
    return {cls.search_group: names[index - 1] if index > 0 else UNCHANGED.get(cls.search_group, "none")}


def _params(network: nn.Module | None) -> int:
    """The parameters of a built candidate (a large number for one that could not be built)."""
    return 1 << 62 if network is None else sum(parameter.numel() for parameter in network.parameters())


def _buildable(
    choices: dict[str, Any], found: dict[str, Any], context: SearchContext
) -> tuple[dict[str, Any], nn.Module | None]:
    """``choices`` with each step of their recipe that fails on the base network turned off (the first
    failing one, then again; a group's step falls back to the member before it), and the candidate
    they build (None if a step that cannot be left out still fails): a transform of another package
    may not compose with the others in a way no trait declares, and the budget check should judge
    the smallest candidate that can be built rather than stop the search before its first trial."""
    tried: set[tuple[str, str]] = set()
    while True:
        recipe = generic(optuna.trial.FixedTrial(dict(choices)), context)
        network, failing = _built(recipe, context)
        off = None if failing is None else _off(TRANSFORMS.get(failing), found, choices)
        key = None if off is None else (failing, repr(sorted(off.items())))
        if off is None or key in tried:  # builds (or a step it cannot leave out: the budget check says so)
            return choices, network
        tried.add(key)
        choices = {**choices, **off}


def _built(recipe: Recipe, context: SearchContext) -> tuple[nn.Module | None, str | None]:
    """The candidate ``recipe`` builds step by step on the base network, or None and the name of the
    first step that refuses the network the steps before it left."""
    network = context.model
    for step in recipe.steps:
        try:
            network, _ = apply(network, Recipe.of([step]), context.example, count_flops=False, diagnostics=False)
        except TransformError:
            return None, step.name
    return network, None


@register_space("generic", smallest=_smallest)
def generic(trial: optuna.trial.BaseTrial, context: SearchContext) -> Recipe:
    """Any network: every registered transform that applies to it, in the paper's order, with their parameters."""
    found = applicable(context)
    steps: list[tuple[str, dict[str, Any]]] = []
    left: set[str] = set()  # the traits the steps so far leave (``separable``: no dense conv)
    for group, members in _choices(found):
        members = [cls for cls in members if not left & set(cls.refuses)]  # it would refuse what they left
        if not members:
            continue
        chosen = members[0]
        if group is not None:
            unchanged = UNCHANGED.get(group, "none")
            pick = trial.suggest_categorical(group, [unchanged, *(cls.name for cls in members)])
            if pick == unchanged:
                continue
            chosen = next(cls for cls in members if cls.name == pick)
        params = chosen.suggest(trial, found[chosen.name], steps)
        if params is not None:
            steps.append((chosen.name, params))
            left |= chosen.produces
    return Recipe.of(steps)
