"""``compressor confirm``: retrain a finished search's best trials and the references on further seeds."""

from __future__ import annotations

import argparse

from compressor.bounds import CONFIRM_COUNT, COUNT, threads_argument
from compressor.cli.console import echo
from compressor.cli.study_args import add_study_arguments, add_trust_argument, storage_from_args

COMMAND = {"name": "confirm", "help": "retrain the front's best trials and the references on further seeds (intervals)",
           "description": "Retrain the best trials of a finished search's Pareto front and the study's references "
                          "(your own network, U-Net, Micro-Net: those the search had) on further seeds (and folds), "
                          "with the search's recipe; store each result on the study (resumable; several processes "
                          "sharing the storage split the work); print means, 95% intervals and the paired "
                          "difference to the study's reference. `compressor report` then draws them as error bars."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--top", type=CONFIRM_COUNT.argument("--top"), metavar="K", help="front trials to confirm, by their share of the "
                        "front's hypervolume (default: the study's search.confirm.top, else 3)")
    parser.add_argument("--trials", type=COUNT.argument("--trials"), nargs="+", metavar="N", help="confirm these trials instead")
    parser.add_argument("--seeds", type=CONFIRM_COUNT.argument("--seeds"), metavar="N", help="further seeds (default: search.confirm.seeds, else 2)")
    parser.add_argument("--folds", action="store_true", help="also every fold of a k-fold data section")
    parser.add_argument("--budget", action="append", default=[], metavar="X", dest="budgets",
                        help="parameter budget to state a claim for (repeatable, e.g. --budget 1M --budget 300k)")
    parser.add_argument("--threads", type=threads_argument("--threads"), metavar="N", help="torch CPU threads")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    from compressor.confirm.run import run_confirmation
    from compressor.experiment import Experiment
    from compressor.search_config import ConfirmConfig
    from compressor.study import load_study, study_info

    storage = storage_from_args(args)
    study = load_study(storage, args.study)
    stored = Experiment.from_dict(study_info(study).experiment, source=f"study {args.study!r}").search.confirm
    config = ConfirmConfig(
        top=args.top if args.top is not None else (stored.top or 3),
        seeds=args.seeds if args.seeds is not None else (stored.seeds or (0 if args.folds else 2)),
        folds=args.folds or stored.folds,
        budgets=args.budgets or stored.budgets,
    )
    confirmation = run_confirmation(study, storage, config=config, trials=args.trials or (),
                                    cache_dir=args.cache_dir, threads=args.threads, echo=echo, trust=args.trust)
    if confirmation is not None:
        print()
        print(confirmation.table())
    print()
    print(f"report: compressor report --study {args.study} --storage {storage}")
    return 0
