"""Errors that mean "the user asked for something that cannot be done".

The CLI turns any :class:`CompressorError` into one line on stderr and exit code 2,
so every message must name the thing at fault (file, key, layer, value) on its own.
A message says what is wrong, in the library's terms; what to type about it (a flag, a
command) is the CLI's to add (:mod:`compressor.cli.advice`), keyed by the error's class,
so the library's errors read right from Python too.
"""

from __future__ import annotations

__all__ = [
    "CompressorError", "ConfigError", "ModelLoadError", "BudgetError", "MissingStorageError", "StudyMismatchError",
    "NoWeightsError", "NothingToRepeatError", "OutputChoiceError", "ClassCountError", "UntrustedModelError",
    "RunFailedError", "InputSizeError", "ExportError", "MissingExtraError", "first_line", "typed_line",
    "is_wrapped_interrupt",
]


class CompressorError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class ConfigError(CompressorError, ValueError):
    """A configuration value (shape, unit, key) is malformed."""


class ModelLoadError(CompressorError):
    """A model name or import path cannot be turned into an ``nn.Module``."""


class BudgetError(ConfigError):
    """A budget limit is malformed (bad unit, negative or zero)."""


class MissingStorageError(ConfigError):
    """A study's storage (a SQLite file) does not exist."""


class StudyMismatchError(ConfigError):
    """A study of that name exists and was made with other settings."""


class NoWeightsError(ConfigError):
    """A trial kept no weights (only the front's trials keep theirs)."""


class NothingToRepeatError(ConfigError):
    """A confirmation asked for no further seed and no fold."""


class OutputChoiceError(ConfigError):
    """A model returns several tensors and none is declared the segmentation."""


class UntrustedModelError(ConfigError):
    """Loading a model file would run code of the file's choosing (a pickle, or an arbitrary builder)."""


class RunFailedError(CompressorError):
    """The work started and could not go on (a folder it writes turned read-only, a full disk): the
    CLI says why in one line, as for any error, with exit code 1 (a run that failed) instead of 2."""

    exit_code = 1


class MissingExtraError(CompressorError):
    """An optional dependency (an extra of ``setup.cfg``, e.g. ``deploy``) is not installed."""


class ExportError(ConfigError):
    """A network cannot be exported, or its export does not run or does not match it."""


class InputSizeError(ConfigError):
    """A captured network refuses an input size, as the network it was made from does."""


class ClassCountError(ConfigError):
    """A network outputs another number of classes than the data has (``classes``: the data's)."""

    def __init__(self, message: str, *, classes: int) -> None:
        super().__init__(message)
        self.classes = classes


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name if it has none): what a one-line
    error quotes of a failure raised by the user's model or a library.

    Example:
        >>> first_line(RuntimeError("shapes do not match\\nat node 3"))
        'shapes do not match'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def typed_line(error: BaseException) -> str:
    """``KeyError: 'conv1'``: the error's type and :func:`first_line` (the type alone when the
    message is empty), for a failure whose type says what went wrong.

    Example:
        >>> typed_line(KeyError("conv1")), typed_line(ValueError())
        ("KeyError: 'conv1'", 'ValueError')
    """
    text = first_line(error)
    return text if text == type(error).__name__ else f"{type(error).__name__}: {text}"


def is_wrapped_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is a Ctrl-C that torch wrapped in another error (a Python callback interrupted in C++)."""
    return "KeyboardInterrupt" in str(error) or isinstance(error.__cause__ or error.__context__, KeyboardInterrupt)
