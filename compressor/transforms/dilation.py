"""``dilation``: cascades of atrous rates over the successive convs of each stage."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from compressor.annotations import network_name
from compressor.errors import ConfigError
from compressor.transforms.base import Change, TransformError, register_transform
from compressor.transforms.selection import LayerTransform
from compressor.transforms.shapes import ConvCall, conv_calls

__all__ = ["Dilation", "set_dilation"]


@register_transform("dilation")
class Dilation(LayerTransform):
    """Lays a cascade of dilation rates over each stage's k x k convs (k > 1, stride 1).

    A *stage* is a run of consecutive such convs (in execution order) at one input
    resolution, found by running the model on the example input. Encoder stages (at a
    resolution no larger than the stage before) get ``rates``; decoder stages (after an
    up-sampling) get ``decoder_rates``, by default ``rates`` reversed, as Micro-Net does
    (1,1,2,3 down, 3,2,1 up). A stage longer than its cascade repeats it. Padding is
    set to ``dilation * (k - 1) / 2`` so spatial sizes do not change; a conv whose
    padding is not "same" is skipped (or refused with ``strict``).

    A conv that already has a rate other than 1 (DeepLab's ASPP, a dilated backbone
    stage) keeps it unless ``overwrite`` is true; it still takes its place in the
    cascade. Only convs whose rate actually changes are reported as changed; a conv
    given the rate it already has is left out of the count.

    Args:
        rates: the encoder cascade, e.g. ``[1, 1, 2, 3]`` or ``[1, 2, 5]``.
        decoder_rates: the cascade for decoder stages; None means ``rates`` reversed.
        overwrite: re-rate convs that already have a rate other than 1.
    """

    example = {"rates": [1, 2, 3]}
    # each stride-1 3x3 conv alone at its resolution: the cascade's first rate, 1, is its rate already
    refuses = {"no-conv-run": r"already has the rate it gives .*nothing to change"}
    search_order = 40
    #: the cascades a search draws from, by name (``none``: no dilation)
    CASCADES = {"none": None, "1-2": [1, 2], "1-2-3": [1, 2, 3], "1-1-2-3": [1, 1, 2, 3], "1-2-5": [1, 2, 5]}

    @classmethod
    def applicability(cls, context):
        return context.applies(cls.name, rates=[1, 2])

    @classmethod
    def suggest(cls, trial, applicability, steps):
        rates = cls.CASCADES[trial.suggest_categorical("dilation", list(cls.CASCADES))]
        return {"rates": rates} if rates else None

    @classmethod
    def smallest(cls, applicability):
        return {"dilation": "none"}

    unchanged = smallest  # no dilation: no parameter, and the same network size

    omit_when_default = ("overwrite",)

    def __init__(
        self, *, rates: list[int] = (1, 1, 2, 3), decoder_rates: list[int] | None = None, overwrite: bool = False,
        **selection,
    ) -> None:
        super().__init__(**selection)
        rates = list(rates)
        decoder_rates = list(reversed(rates)) if decoder_rates is None else list(decoder_rates)
        for key, cascade in (("rates", rates), ("decoder_rates", decoder_rates)):
            if not cascade or any(rate < 1 for rate in cascade):
                raise ConfigError(f"dilation: {key} must be a non-empty list of integers >= 1, got {cascade}")
        self.rates, self.decoder_rates, self.overwrite = rates, decoder_rates, overwrite

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        change = Change()
        selected = {name for name, _ in self.selected(model)}
        if not selected:
            self.require_changes(model, change)
        stages = _stages([call for call in conv_calls(model, example_input) if _is_spatial(call)])
        previous_area = None
        for index, stage in enumerate(stages):
            area = stage[0].input_size[0] * stage[0].input_size[1]
            is_decoder = previous_area is not None and area > previous_area
            previous_area = area
            cascade = itertools.cycle(self.decoder_rates if is_decoder else self.rates)
            kind = "decoder" if is_decoder else "encoder"
            rates_used = []
            for call, rate in zip(stage, cascade):
                if call.name not in selected:
                    continue
                before = call.module.dilation
                if before != (1, 1) and not self.overwrite:
                    change.skipped[call.name] = f"already has rate {before[0]}; kept (overwrite: true re-rates it)"
                    continue
                reason = set_dilation(call.module, rate)
                if reason:
                    self.skip(change, call.name, reason)
                    continue
                rates_used.append(rate)
                if call.module.dilation != before:
                    change.changed.append(call.name)
            if rates_used:
                size = "x".join(map(str, stage[0].input_size))
                change.notes.append(f"{kind} stage {index} at {size}: rates {rates_used}")
        in_stages = {call.name for stage in stages for call in stage}
        for name, conv in self.selected(model):
            if name not in in_stages and max(conv.kernel_size) > 1:
                change.skipped[name] = "is strided or never runs in forward(); its rate is left alone"
        if not change.changed and change.notes:
            raise TransformError(
                f"{self.name}: every conv of {network_name(model)} the cascade reached already has the rate it "
                f"gives ({'; '.join(change.notes[:2])}); nothing to change"
            )
        self.require_changes(model, change)
        return model, change


def _is_spatial(call: ConvCall) -> bool:
    conv = call.module
    return max(conv.kernel_size) > 1 and conv.stride == (1, 1)


def _stages(calls: list[ConvCall]) -> list[list[ConvCall]]:
    stages: list[list[ConvCall]] = []
    for call in calls:
        if stages and stages[-1][-1].input_size == call.input_size:
            stages[-1].append(call)
        else:
            stages.append([call])
    return stages


def set_dilation(conv: nn.Conv2d, rate: int) -> str | None:
    """Sets ``conv``'s dilation to ``rate`` with "same" padding; returns why not, or None."""
    if isinstance(conv.padding, str):
        if conv.padding == "same":
            conv.dilation = (rate, rate)
            return None
        return f"has padding {conv.padding!r}"
    kernel = conv.kernel_size
    same = all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, kernel))
    if not same or any(k % 2 == 0 for k in kernel):
        return f"has padding {conv.padding} that is not 'same' for kernel {kernel} and dilation {conv.dilation}"
    conv.dilation = (rate, rate)
    conv.padding = tuple(rate * (k - 1) // 2 for k in kernel)
    return None

