"""``--study NAME`` and ``--storage URL``: which study a command reads (``report``, ``confirm``, ``export``)."""

from __future__ import annotations

import argparse

from compressor.study import default_storage_url
from compressor.study.storage import find_storage_url

__all__ = ["add_study_arguments", "add_trust_argument", "storage_from_args"]


def add_study_arguments(parser: argparse.ArgumentParser, *, help_study: str = "the study's name") -> None:
    parser.add_argument("--study", required=True, metavar="NAME", help=help_study)
    parser.add_argument("--storage", metavar="URL", default=None,
                        help=f"Optuna storage URL (default: {default_storage_url(study='NAME')}, else the one "
                             "runs/.../search.db that holds a study of that name, where a search with search.study or "
                             "run_dir set put it)")


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust``: build the study's network and use its folders as stored (see :mod:`compressor.candidates.stored`)."""
    parser.add_argument("--trust", action="store_true",
                        help="build the network the study names with the arguments it stores, and use the folders it "
                             "names, whatever they are (a study is otherwise read as data: a registered model or a "
                             "model class of a known package, plain architecture arguments, no downloads); only when "
                             "you trust everyone who can write to its storage")


def storage_from_args(args: argparse.Namespace) -> str:
    """``--storage``, else where ``compressor search`` put the study of that name (:func:`find_storage_url`)."""
    return args.storage or find_storage_url(args.study)
