"""``compressor worker``: join a running search from another process or machine."""

from __future__ import annotations

import argparse

from compressor.bounds import POSITIVE_COUNT, SECONDS, SEED, threads_argument
from compressor.cli.console import echo
from compressor.cli.search_summary import summary
from compressor.cli.study_args import add_study_arguments, add_trust_argument, storage_from_args
from compressor.pipeline import join_search

COMMAND = {"name": "worker", "help": "join a running search (same storage) as one more worker",
           "description": "Run trials of an existing study until it holds its target number of finished "
                          "trials."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--n-trials", type=POSITIVE_COUNT.argument("--n-trials"), metavar="N", help="the study's target (default: as created)")
    parser.add_argument("--timeout", type=SECONDS.argument("--timeout"), metavar="S", help="start no new trial after S seconds")
    parser.add_argument("--seed", type=SEED.argument("--seed"), metavar="N", help="this worker's sampler seed (default: random)")
    parser.add_argument("--threads", type=threads_argument("--threads"), metavar="N", help="torch CPU threads of this worker")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    result = join_search(
        storage_from_args(args), args.study, n_trials=args.n_trials, timeout=args.timeout, seed=args.seed,
        threads=args.threads, cache_dir=args.cache_dir, echo=echo, trust=args.trust,
    )
    print(summary(result))
    return 0
