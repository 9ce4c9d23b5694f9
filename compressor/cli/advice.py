"""What to type about an error: the CLI's advice after the library's one-line message.

The library's messages say what is wrong; the command line knows its own flags and adds,
for some kinds of error, what to do about it.
"""

from __future__ import annotations

from compressor.errors import (
    ClassCountError,
    CompressorError,
    MissingStorageError,
    NothingToRepeatError,
    NoWeightsError,
    OutputChoiceError,
    StudyMismatchError,
    UntrustedModelError,
)

__all__ = ["ADVICE", "with_advice"]

#: per kind of error, the advice (for every command, or per command); ``{error.<attr>}`` is filled in
ADVICE: dict[type[CompressorError], str | dict[str, str]] = {
    MissingStorageError: "run `compressor search` first, or pass --storage URL",
    StudyMismatchError: "pass --study NEW_NAME for a new study (or restore the settings to resume it)",
    NoWeightsError: "pass --untrained to export its architecture alone",
    NothingToRepeatError: {
        "confirm": "give --seeds N (further seeds) or --folds (with data.folds >= 2)",
        "search": "set search.confirm.seeds to N (further seeds) or search.confirm.folds (with data.folds >= 2)",
    },
    OutputChoiceError: "declare it with --model-output KEY (model.output in an experiment)",
    UntrustedModelError: {
        **dict.fromkeys(("compress", "deploy", "search", "apply", "cost"),
                        "pass --trust to load it anyway, if you trust where the file came from"),
        **dict.fromkeys(("worker", "export", "confirm"),
                        "pass --trust to build it anyway, if you trust everyone who can write to the study's storage"),
        **dict.fromkeys(("train", "baseline"),
                        "if you trust it, load it once in Python (compressor.load_model(PATH, trust=True)) and "
                        "save it again with compressor.save_model, which writes the safe form"),
    },
    ClassCountError: {
        **dict.fromkeys(("train", "search", "baseline", "compress", "cost", "apply", "confirm", "worker", "export"),
                        "build it for {error.classes} (e.g. --model-arg classes={error.classes}, as its builder names it)"),
        "deploy": "give --experiment the file it was trained with (or --set the data's classes)",
    },
}


def with_advice(error: CompressorError, command: str) -> str:
    """``error``'s message, with ``; <advice>`` when the CLI has some for its kind and ``command``.

    Example:
        >>> with_advice(NoWeightsError("trial 3 has no kept weights"), "export")
        'trial 3 has no kept weights; pass --untrained to export its architecture alone'
    """
    message = str(error)
    for kind in type(error).__mro__:
        advice = ADVICE.get(kind)
        if isinstance(advice, dict):
            advice = advice.get(command)
        if advice:
            return f"{message}; {advice.format(error=error)}"
    return message
