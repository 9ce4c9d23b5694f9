"""The ``compressor`` command line: thin argument parsing over the library.

Each subcommand lives in its own module with ``COMMAND`` (its name, help and description),
``add_arguments(parser)`` and ``run(args)``.
A :class:`~compressor.errors.CompressorError` (a user mistake) becomes one line on stderr
and exit code 2, without a traceback (1 for a :class:`~compressor.errors.RunFailedError`: a
run that started and could not go on, such as a full disk).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from compressor import __version__
from compressor.cli import (
    apply_command,
    baseline_command,
    compress_command,
    confirm_command,
    cost_command,
    deploy_command,
    export_command,
    report_command,
    search_command,
    train_command,
    transforms_command,
    worker_command,
)
from compressor.cli.advice import with_advice
from compressor.cli.console import configure_logging
from compressor.errors import CompressorError

__all__ = ["main", "build_parser"]

_COMMANDS = (
    cost_command, apply_command, transforms_command, train_command, baseline_command, compress_command, search_command,
    worker_command, confirm_command, export_command, deploy_command, report_command,
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _BadOption(Exception):
    """An option's value refused by its ``type=`` with a :class:`CompressorError` (see :class:`_Parser`)."""

    def __init__(self, prog: str, error: CompressorError) -> None:
        super().__init__(str(error))
        self.prog = prog
        self.error = error


class _Parser(argparse.ArgumentParser):
    """argparse, except that an option's value refused by its ``type=`` with a
    :class:`CompressorError` (a bound of :mod:`compressor.bounds`: ``--threads 100000``) is our one
    line, ``compressor CMD: error: <message>`` and exit code 2, without argparse's usage and its
    "invalid value" wording; :func:`main` prints it."""

    def error(self, message: str) -> NoReturn:
        cause = sys.exc_info()[1]  # argparse calls this while handling the ArgumentError it raised
        while cause is not None and not isinstance(cause, CompressorError):
            cause = cause.__context__
        if cause is not None:
            raise _BadOption(self.prog, cause)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="compressor",
        description="Make segmentation networks small: transforms, budgets, search, reports.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        subparser = subparsers.add_parser(**command.COMMAND)
        command.add_arguments(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _BadOption as bad:
        print(f"{bad.prog}: error: {with_advice(bad.error, bad.prog.split()[-1])}", file=sys.stderr)
        return EXIT_USER_ERROR
    configure_logging()  # the library's progress notes, as `compressor: ...` lines on stderr
    try:
        return int(args.run(args) or 0)
    except CompressorError as error:
        print(f"compressor {args.command}: error: {with_advice(error, args.command)}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"compressor {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
