"""The limits on every number a user gives, in one place: the experiment file and the command line share them.

A value out of its bounds is a :class:`~compressor.errors.ConfigError` naming the key (or the
flag), the value and the range, raised before anything is built or written. The limits:

========================  ====================================================================
seeds                     integers in [0, 2**32 - 1] (what NumPy's and torch's generators take)
threads                   ``auto``, or 1 to :data:`THREADS_PER_CORE` x the machine's cores
                          (``os.cpu_count()``); torch crashes on 100000 and stalls on 5000
sides in pixels           (patches, windows, input sizes, strides) at most :data:`MAX_SIDE`
input shapes              3 or more positive integers, each at most :data:`MAX_SIDE`, at most
                          :data:`MAX_ELEMENTS` elements in all (1 GiB of float32)
batch sizes               at most :data:`MAX_BATCH`
steps                     at most :data:`MAX_STEPS`
counts                    (trials, repeats, batches, images, retries) at most :data:`MAX_COUNT`
seconds                   (time limits, heartbeats) at most :data:`MAX_SECONDS` (a year)
every float               finite: NaN and infinity are refused wherever a number is read
========================  ====================================================================

:data:`CONFIG_BOUNDS` maps each numeric key of an experiment (``train.seed``,
``cost.latency.threads``...) to its check; :func:`compressor.experiment.from_data` applies it to
every key a file or a ``--set`` gives. The CLI's options take their ``type=`` from
:meth:`Bound.argument` and :func:`threads_argument`, so ``--seed`` and ``search.seed`` are one rule.

Example:
    >>> SEED.check(7, "train.seed")
    7
    >>> SEED.check(-1, "train.seed")
    Traceback (most recent call last):
    ...
    compressor.errors.ConfigError: train.seed must be an integer in [0, 4294967295], got -1
    >>> SEED.argument("--seed")("12")
    12
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from compressor.errors import ConfigError

__all__ = [
    "MAX_SEED", "MAX_SIDE", "MAX_ELEMENTS", "MAX_BATCH", "MAX_STEPS", "MAX_COUNT", "MAX_SECONDS", "THREADS_PER_CORE",
    "Bound", "SEED", "SIDE", "BATCH", "STEPS", "COUNT", "POSITIVE_COUNT", "CONFIRM_COUNT", "SECONDS", "FRACTION",
    "NON_NEGATIVE", "POSITIVE", "max_threads", "check_threads", "parse_threads", "threads_argument", "check_shape",
    "output_argument", "shown", "CONFIG_BOUNDS", "check_config_value",
]

MAX_SEED = 2**32 - 1
#: the longest side in pixels of a patch, an evaluation window or an input
MAX_SIDE = 16384
#: the most elements of an input shape: 2**28 float32 values are 1 GiB
MAX_ELEMENTS = 2**28
MAX_BATCH = 4096
MAX_STEPS = 10**9
#: trials, timed repeats, calibration batches, images, retries...
MAX_COUNT = 10**6
#: a year
MAX_SECONDS = 366 * 24 * 3600
#: threads beyond this multiple of the machine's cores are refused
THREADS_PER_CORE = 4


@dataclass(frozen=True)
class Bound:
    """A closed (or, with ``open_low``, half-open) range of integers or of finite numbers.

    Example:
        >>> Bound(0, 1, integer=False, open_low=True).describe()
        'a number in (0, 1]'
        >>> Bound(0, math.inf, integer=False).describe()
        'a finite number >= 0'
    """

    low: float
    high: float
    integer: bool = True
    open_low: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else ("a finite number" if math.isinf(self.high) else "a number")
        if math.isinf(self.high):
            return f"{kind} {'>' if self.open_low else '>='} {_number(self.low)}"
        return f"{kind} in {'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}]"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        return above and value <= self.high

    def check(self, value: Any, name: str) -> Any:
        """``value``, if in range.

        Raises:
            ConfigError: ``"<name> must be <range>, got <value>"``.
        """
        if not self.contains(value):
            raise ConfigError(f"{name} must be {self.describe()}, got {shown(value)}")
        return value

    def parse(self, text: str, name: str) -> int | float:
        """``text`` (a command-line value) read as a number and checked."""
        try:
            value: int | float = int(text) if self.integer else float(text)
        except ValueError:
            raise ConfigError(f"{name} must be {self.describe()}, got {shown(text)}") from None
        if not self.contains(value):
            raise ConfigError(f"{name} must be {self.describe()}, got {shown(text)}")
        return value

    def argument(self, flag: str) -> Callable[[str], int | float]:
        """The ``type=`` of an argparse option ``flag`` holding such a number."""
        def parse(text: str) -> int | float:
            return self.parse(text, flag)

        parse.__name__ = flag
        return parse


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters (a huge integer: its size).

    Example:
        >>> shown(18446744073709551617)
        '18446744073709551617'
        >>> shown(10**100)
        'an integer of 101 digits'
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3.33 * limit:
        digits = int(value.bit_length() * math.log10(2)) + 1  # repr() refuses more than 4300 digits
        digits -= abs(value) < 10 ** (digits - 1)
        return f"an integer of {digits} digits"
    # never the whole of a container: a pickle may share one list 2**60 times over
    text = _SHORT.repr(value) if isinstance(value, (list, tuple, dict, set, frozenset)) else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def check_plain_size(value: Any, where: str, *, limit: int = 1 << 16, depth: int = 16, longest: int = 1024) -> None:
    """Refuses plain data (mappings, lists, values) of more than ``limit`` values or nested deeper than ``depth``,
    counting every visit: a pickle may share one list so that a 2 KB file holds 2**60 of them, which anything that
    walks it (a check, a message, a copy) would take forever over.

    Raises:
        ConfigError: ``"<where> holds more than <limit> values"``, or is nested too deep.
    """
    left = [limit]

    def visit(item: Any, level: int) -> None:
        left[0] -= 1
        if left[0] < 0:
            raise ConfigError(f"{where} holds more than {limit:,} values")
        if level > depth:
            raise ConfigError(f"{where} is nested deeper than {depth} levels")
        if isinstance(item, str) and len(item) > longest:  # a name, a pattern: each message would carry it whole
            raise ConfigError(f"{where} holds a string of {len(item):,} characters (at most {longest:,})")
        if isinstance(item, dict):
            for key, inner in item.items():
                visit(key, level + 1)
                visit(inner, level + 1)
        elif isinstance(item, (list, tuple, set, frozenset)):
            for inner in item:
                visit(inner, level + 1)

    visit(value, 0)


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, 2 * 40, 2 * 40, 2 * 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = short.maxdeque = 8
    return short


_SHORT = _short_repr()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SEED = Bound(0, MAX_SEED)
SIDE = Bound(1, MAX_SIDE)
BATCH = Bound(1, MAX_BATCH)
STEPS = Bound(1, MAX_STEPS)
COUNT = Bound(0, MAX_COUNT)
POSITIVE_COUNT = Bound(1, MAX_COUNT)
SECONDS = Bound(0, MAX_SECONDS, integer=False, open_low=True)
FRACTION = Bound(0, 1, integer=False)
NON_NEGATIVE = Bound(0, math.inf, integer=False)
POSITIVE = Bound(0, math.inf, integer=False, open_low=True)
#: front trials and further seeds of a confirmation
CONFIRM_COUNT = Bound(0, 10_000)


# -- threads --------------------------------------------------------------------------------

def max_threads() -> int:
    """The most threads a setting may ask for: :data:`THREADS_PER_CORE` x ``os.cpu_count()``."""
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def check_threads(value: Any, name: str) -> Any:
    """``value`` if it is ``auto``, None (as it is) or a count in [1, :func:`max_threads`].

    Raises:
        ConfigError: naming ``name``, the value and the range.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_threads():
        raise _threads_error(value, name)
    return value


def parse_threads(text: str, name: str = "threads") -> int | str:
    """A command line's threads: ``auto`` or a count in [1, :func:`max_threads`].

    Example:
        >>> parse_threads("auto"), parse_threads("1")
        ('auto', 1)
    """
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        raise _threads_error(text, name) from None
    if not 1 <= count <= max_threads():
        raise _threads_error(text, name)
    return count


def _threads_error(value: Any, name: str) -> ConfigError:
    return ConfigError(f"{name} must be 'auto' or a count in [1, {max_threads()}] "
                       f"({THREADS_PER_CORE} x the {os.cpu_count() or 1} cores here), got {shown(value)}")


def threads_argument(flag: str) -> Callable[[str], int | str]:
    """The ``type=`` of an argparse option ``flag`` giving threads."""
    def parse(text: str) -> int | str:
        return parse_threads(text, flag)

    parse.__name__ = flag
    return parse


# -- shapes and paths -----------------------------------------------------------------------

def check_shape(shape: Sequence[Any], name: str) -> tuple[int, ...]:
    """``shape`` as a tuple, if it holds at least 3 integers in [1, :data:`MAX_SIDE`] and at
    most :data:`MAX_ELEMENTS` elements in all.

    Example:
        >>> check_shape([1, 3, 64, 64], "--input-shape")
        (1, 3, 64, 64)
    """
    sizes = tuple(shape)
    if len(sizes) < 3 or not all(SIDE.contains(size) for size in sizes):
        raise ConfigError(f"{name} must be at least 3 integers in [1, {MAX_SIDE}] like 1,3,256,256, "
                          f"got {_shape_text(shape)}")
    if math.prod(sizes) > MAX_ELEMENTS:
        raise ConfigError(f"{name} {_shape_text(shape)} has {math.prod(sizes)} elements; "
                          f"at most {MAX_ELEMENTS} (1 GiB of float32)")
    return sizes


def _shape_text(shape: Any) -> str:
    return shown(shape, limit=80) if isinstance(shape, str) else ",".join(shown(size, limit=20) for size in shape)


def output_argument(flag: str) -> Callable[[str], str]:
    """The ``type=`` of an argparse option ``flag`` naming a file or folder to write: not empty."""
    def parse(text: str) -> str:
        if not text.strip():
            raise ConfigError(f"{flag} must name a file or folder, got {text!r}")
        return text

    parse.__name__ = flag
    return parse


# -- the experiment's keys ------------------------------------------------------------------

#: each numeric key of an experiment and its check (keys absent here: no numbers)
CONFIG_BOUNDS: dict[str, Bound | Callable[[Any, str], Any]] = {
    # data (the keys of every kind of dataset)
    "data.patch_size": Bound(8, MAX_SIDE),
    "data.seed": SEED,
    "data.train_images": POSITIVE_COUNT,
    "data.val_images": POSITIVE_COUNT,
    "data.val_size": SIDE,
    "data.stride": SIDE,
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.guard": Bound(0, MAX_SIDE),
    "data.folds": Bound(0, 1000),
    "data.fold": Bound(0, 999),
    "data.max_images": POSITIVE_COUNT,
    "data.mask_values": Bound(0, 2**16 - 1),
    "data.palette": Bound(0, 255),
    # train
    "train.steps": STEPS,
    "train.max_steps": STEPS,
    "train.patience": POSITIVE_COUNT,
    "train.eval_every": STEPS,
    "train.min_delta": NON_NEGATIVE,
    "train.smoothing": POSITIVE_COUNT,
    "train.lr_patience": POSITIVE_COUNT,
    "train.batch_size": BATCH,
    "train.lr": POSITIVE,
    "train.weight_decay": NON_NEGATIVE,
    "train.momentum": FRACTION,
    "train.warmup_fraction": FRACTION,
    "train.dice_weight": NON_NEGATIVE,
    "train.class_weights": NON_NEGATIVE,
    "train.grad_clip": POSITIVE,
    "train.seed": SEED,
    "train.threads": check_threads,
    "train.eval_window": SIDE,
    "train.eval_overlap": Bound(0, MAX_SIDE),
    "train.eval_batch_size": BATCH,
    "train.bn_reestimate": COUNT,
    "train.distill.weight": NON_NEGATIVE,
    "train.distill.temperature": POSITIVE,
    "train.distill.feature_weight": NON_NEGATIVE,
    # cost
    "cost.input_size": SIDE,
    "cost.latency_runs": COUNT,
    "cost.latency.threads": check_threads,
    "cost.latency.batch": BATCH,
    "cost.latency.input_size": SIDE,
    "cost.latency.repeats": POSITIVE_COUNT,
    "cost.latency.warmup": COUNT,
    # search
    "search.n_trials": POSITIVE_COUNT,
    "search.timeout": SECONDS,
    "search.seed": SEED,
    "search.rungs": FRACTION,
    "search.keep_fraction": FRACTION,
    "search.rung_share": FRACTION,
    "search.min_trials_at_rung": COUNT,
    "search.heartbeat_interval": Bound(1, MAX_SECONDS),
    "search.grace_period": Bound(1, MAX_SECONDS),
    "search.max_retry": Bound(0, 1000),
    "search.min_gain": FRACTION,
    "search.confirm.top": CONFIRM_COUNT,
    "search.confirm.seeds": CONFIRM_COUNT,
    # finetune
    "finetune.steps": STEPS,
    "finetune.lr": POSITIVE,
    "finetune.warmup_fraction": FRACTION,
    "finetune.bn_reestimate": COUNT,
    "finetune.calibrate": COUNT,
    "finetune.distill_weight": NON_NEGATIVE,
    "finetune.temperature": POSITIVE,
    "finetune.parent_steps": STEPS,
    "finetune.reconstruct_steps": STEPS,
    "finetune.reconstruct_batches": POSITIVE_COUNT,
    "finetune.feature_weight": NON_NEGATIVE,
    "finetune.max_start_error": POSITIVE,
}


def check_config_value(key: str, value: Any, *, where: str) -> Any:
    """``value`` of the experiment's dotted ``key`` checked against :data:`CONFIG_BOUNDS`.

    None (a key left unset) and words (``auto``) pass; in a list, every number is checked
    (``rungs``, ``class_weights``, ``palette``); a key without bounds passes as it is.

    Raises:
        ConfigError: ``"<where> must be <range>, got <value>"``.
    """
    check = CONFIG_BOUNDS.get(key)
    if check is None or value is None or isinstance(value, str):
        return value
    checker = check.check if isinstance(check, Bound) else check
    for item in _numbers(value):
        checker(item, where)
    return value


def _numbers(value: Any) -> list[Any]:
    """The numbers of ``value``: itself, or those of a (nested) list."""
    if isinstance(value, (list, tuple)):
        return [number for item in value for number in _numbers(item)]
    return [value]
