"""What a model costs: parameters, FLOPs (through fvcore), activation memory, latency.

FLOPs follow fvcore's convention: **one fused multiply-add counts as one flop**, so a
k x k convolution costs ``k*k*C_in/groups*C_out*H_out*W_out`` flops per image. Operators
fvcore cannot count are listed in :attr:`Cost.unsupported_ops`, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count
from torch import nn

from compressor.api_inputs import as_network
from compressor.errors import ConfigError, first_line
from compressor.latency import LatencyConfig, measure_latency
from compressor.models.construction import check_runs_within
from compressor.outputs import returned_tensors
from compressor.threads import timing_threads
from compressor.units import parse_shape

__all__ = ["Cost", "ModuleCost", "measure", "FLOP_CONVENTION"]

FLOP_CONVENTION = "FLOPs: fvcore count, one multiply-add = one flop"


@dataclass(frozen=True)
class ModuleCost:
    """Parameters and FLOPs of one submodule (children included)."""

    params: int
    flops: int


@dataclass(frozen=True)
class Cost:
    """The cost of a model for one input shape.

    Attributes:
        params: total number of parameters.
        trainable_params: parameters with ``requires_grad``.
        flops: fvcore's count for one forward pass of ``input_shape`` (one multiply-add =
            one flop), the whole batch.
        input_shape: the shape the model was measured at.
        by_module: per-submodule params and FLOPs, keyed by dotted module name as in
            fvcore's ``by_module()`` (``""`` is the whole model).
        unsupported_ops: operator name -> number of calls fvcore could not count.
        activation_bytes: estimate of activation memory for a training step: the bytes
            of every distinct leaf-module output for ``input_shape`` (what autograd keeps
            for backward; in-place outputs counted once). An upper bound for inference.
        latency_ms: median CPU latency of one forward pass, if it was timed.
        latency_runs: how many timed runs the median is over (0 if not timed).
        latency_p90_ms: the 90th percentile of those runs.
        latency_runtime: what ran them: ``torch`` or ``onnxruntime``.
    """

    params: int
    trainable_params: int
    flops: int
    input_shape: tuple[int, ...]
    by_module: Mapping[str, ModuleCost] = field(default_factory=dict)
    unsupported_ops: Mapping[str, int] = field(default_factory=dict)
    activation_bytes: int = 0
    latency_ms: float | None = None
    latency_runs: int = 0
    latency_p90_ms: float | None = None
    latency_runtime: str | None = None

    def ratios_to(self, baseline: Cost) -> dict[str, float]:
        """How many times smaller this model is than ``baseline`` (``> 1`` means smaller)."""
        return {
            "params": baseline.params / self.params if self.params else float("inf"),
            "flops": baseline.flops / self.flops if self.flops else float("inf"),
        }

    def top_level(self) -> dict[str, ModuleCost]:
        """The direct children of the model (names without a dot), in model order."""
        return {name: cost for name, cost in self.by_module.items() if name and "." not in name}

    def to_dict(self, *, modules: bool = True) -> dict[str, Any]:
        """Plain-data form for JSON and trial attributes."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["by_module"] = (
            {name: asdict(cost) for name, cost in self.by_module.items()} if modules else {}
        )
        data["unsupported_ops"] = dict(self.unsupported_ops)
        return data


def measure(
    model: nn.Module,
    input_shape: tuple[int, ...] | str | torch.Tensor = (1, 3, 224, 224),
    *,
    latency_runs: int = 0,
    warmup_runs: int = 2,
    threads: int | str | None = None,
    latency: LatencyConfig | None = None,
) -> Cost:
    """Measures ``model`` at ``input_shape``.

    FLOPs come from fvcore's ``FlopCountAnalysis`` (one multiply-add = one flop); ops it
    cannot count are returned in ``unsupported_ops``. The model is run in eval mode under
    ``torch.no_grad()`` and put back in its previous mode.

    Args:
        model: any ``nn.Module`` taking one tensor.
        input_shape: ``(N, C, H, W)``, a string ``"1,3,224,224"``, or an example input (its shape).
        latency_runs: if > 0, time this many forward passes after ``warmup_runs`` and
            report the median in milliseconds.
        warmup_runs: untimed passes before timing.
        threads: torch intra-op threads while timing (``auto`` or None: the cores this process may use,
            :func:`compressor.threads.timing_threads`, whatever the load).
        latency: time the model as this says instead (runtime, threads, batch, input size,
            repeats; :mod:`compressor.latency`); its input size defaults to ``input_shape``'s.

    Returns:
        A :class:`Cost`.

    Raises:
        ConfigError: if the shape is malformed or the model cannot run on it.

    Example:
        >>> from compressor.models import unet
        >>> measure(unet(), (1, 3, 224, 224)).params
        31024960
    """
    model = as_network(model, "measure")
    if isinstance(input_shape, torch.Tensor):  # an example input: its shape (apply takes a tensor too)
        input_shape = tuple(input_shape.shape)
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    parse_shape(shape)
    check_runs_within(model, shape)  # a network read from a file without trust: its memory at this shape first
    device = _device_of(model)
    example = torch.zeros(shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops, by_module_flops, unsupported, activation_bytes = _count(model, example)
        if latency is not None:
            timed = measure_latency(model, latency, latency.input_shape(shape[1], shape[-1]))
        elif latency_runs > 0:  # eager torch at the cost's own shape
            eager = LatencyConfig(repeats=latency_runs, warmup=warmup_runs,
                                  threads=timing_threads(threads))
            timed = measure_latency(model, eager, shape)
        else:
            timed = None
    finally:
        model.train(was_training)
    params_by_module = parameter_count(model)
    names = [name for name, _ in model.named_modules()]
    by_module = {
        name: ModuleCost(params=int(params_by_module.get(name, 0)), flops=int(by_module_flops.get(name, 0)))
        for name in names
    }
    return Cost(
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops=int(flops),
        input_shape=shape,
        by_module=by_module,
        unsupported_ops=dict(unsupported),
        activation_bytes=activation_bytes,
        latency_ms=timed.median_ms if timed else None,
        latency_runs=timed.repeats if timed else 0,
        latency_p90_ms=timed.p90_ms if timed else None,
        latency_runtime=timed.runtime if timed else None,
    )


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _run_or_explain(model: nn.Module, example: torch.Tensor) -> Any:
    try:
        return model(example)
    except Exception as error:  # noqa: BLE001 - a shape the model does not accept
        raise ConfigError(
            f"model {type(model).__name__} cannot run on input shape {tuple(example.shape)}: "
            f"{first_line(error)}"
        ) from error


def _count(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int], dict[str, int], int]:
    """fvcore's FLOP count and the activation bytes, from one forward pass: fvcore's trace runs the
    model eagerly, and the leaf modules' outputs are read as it goes (two passes took twice as long:
    0.4 s of a 224x224 U-Net candidate on 1 thread, most of what an over-budget search trial costs)."""
    # In-place layers (ReLU(inplace=True)) return their input's storage: count each once.
    # The tensors are kept alive so that no address is reused during the pass.
    kept: dict[int, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        for tensor in returned_tensors(output):
            kept[tensor.untyped_storage().data_ptr()] = tensor

    analysis = FlopCountAnalysis(model, example)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles: list[Any] = []
    try:
        handles.extend(leaf.register_forward_hook(hook) for leaf in leaves)
        total = analysis.total()
    except BaseException as error:  # jit tracing fails on some models; Ctrl-C too must leave no hook behind
        for handle in handles:
            handle.remove()
        kept.clear()  # before the model runs again
        _remove_fvcore_hooks(model)  # fvcore leaves its scope hooks on a model it failed to trace
        if not isinstance(error, Exception):
            raise
        _run_or_explain(model, example)  # a model that cannot run on the shape says that, not fvcore's words
        raise ConfigError(
            f"fvcore cannot trace {type(model).__name__} at input shape {tuple(example.shape)}: "
            f"{first_line(error)}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    activation_bytes = sum(t.numel() * t.element_size() for t in kept.values())
    kept.clear()
    return total, dict(analysis.by_module()), dict(analysis.unsupported_ops()), activation_bytes


def _remove_fvcore_hooks(model: nn.Module) -> None:
    """Removes the forward hooks fvcore registered on ``model``'s modules (its scope hooks), and no other."""
    for module in model.modules():
        for hooks, extras in ((module._forward_pre_hooks, (module._forward_pre_hooks_with_kwargs,)),
                              (module._forward_hooks, (module._forward_hooks_with_kwargs, module._forward_hooks_always_called))):
            for key in [key for key, hook in hooks.items() if type(hook).__module__.startswith("fvcore.")]:
                hooks.pop(key, None)
                for extra in extras:
                    extra.pop(key, None)
