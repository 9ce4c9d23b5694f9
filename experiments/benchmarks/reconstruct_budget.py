"""What a reconstruction costs against the start it gives: Adam steps and precision of ``hints``.

The reconstruction's cost target (at most 20% of the fine-tuning it saves) is not met: on a
converged row its 300 Adam steps cost about as much as 400 steps of fine-tuning. This measures
the two things that set that cost, on a converged teacher as ``compress`` runs it: the building
tile's U-Net trained to its plateau (``converged.py``'s ``parent-p0``), the paper's recipe
inherited, batch norms re-estimated on 16 batches, then ``hints`` on the 256 calibration patches
``compress`` takes (32 batches of 8), for each of ``--steps`` (0: no reconstruction) and each of
``--precisions`` (``bf16``: the student's forward passes under autocast, as ``finetune.precision``).

Per setting: the reconstruction's seconds (the teacher's pass included), the output error
after, and the start's validation score (what fine-tuning begins from, ``compress``'s
"inherited"). The settings run interleaved, ``--repeats`` times; the fit is deterministic, so the
repeats differ only in time (medians).

With ``--finetune-none``, the student without reconstruction is then fine-tuned to its plateau by
the converged rows' rule (``compress``, seed 0, no distillation: the converged table's recipe row
with ``finetune.reconstruct: none``), and each setting is given the fine-tuning steps it saves:
the first evaluation (every 100 steps) at which inheritance alone reaches that setting's start,
and the reconstruction's seconds as a share of those steps' seconds (the issue's target: at most
20%), net of the ``none`` row's seconds (the teacher's pass and the start error, which ``compress``
pays without reconstruction too) and against fp32 fine-tuning. "Never" where inheritance alone
does not get there before its plateau. ``--summarize`` derives and prints the stored table again.

    python experiments/benchmarks/reconstruct_budget.py --steps 0 50 100 300 --precisions fp32 bf16 --threads 1 --finetune-none

``--calibrate 1 8`` adds the student built with ``finetune.calibrate`` 1 and 8 (the build's own
least-squares refit of each replaced layer, in one pass over that many batches), then no
reconstruction; its cost is what the build took over the same build without it. ``--lstsq 8 32`` adds ``lstsq`` (no Adam: the replaced layers' last convolutions solved in closed
form, layer after layer) on the first 8 and on all 32 calibration batches. ``--alone-from-stored``
reads the inheritance-alone fine-tuning from the stored results instead of running it again (the
same student: its ``none`` row must start where the stored one does), and ``--step-time K`` times
K fine-tuning steps of the student in this run, so that the steps saved are priced at this run's
load. ``--name`` writes another results file.

    python experiments/benchmarks/reconstruct_budget.py --steps 0 50 --precisions fp32 --lstsq 8 32 --repeats 2 --threads 1 --alone-from-stored --step-time 40 --name reconstruct_budget-lstsq

Where each start ends: ``--finetune-from calibrate1 lstsq8`` fine-tunes the student built with
``finetune.calibrate: 1`` (no reconstruction), and the one reconstructed with ``lstsq`` on 8 batches,
to their plateau by the same rule as inheritance alone (``compress``, seed 0, no distillation), each
after the other, and stores them beside it (``finetuned_from``); with ``--alone-from-stored``,
inheritance alone is read from the stored results. A run cut short goes on from its state file.

    python experiments/benchmarks/reconstruct_budget.py --steps 0 --precisions fp32 --threads 1 --alone-from-stored --finetune-from calibrate1 lstsq8 --name reconstruct_budget-ends

Writes ``experiments/benchmarks/results/reconstruct_budget.json`` (or ``<name>.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, machine, show_evaluations, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="spacenet_sample")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 50, 100, 300])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=None, help="converged.py's run folder (its parent-p0.pt is the teacher)")
    parser.add_argument("--finetune-none", action="store_true",
                        help="also fine-tune the student without reconstruction to its plateau (converged.py's rule), "
                             "to say how many steps of fine-tuning each reconstruction saves")
    parser.add_argument("--summarize", action="store_true", help="only derive and print the stored results' table")
    parser.add_argument("--lstsq", type=int, nargs="*", default=[], metavar="BATCHES",
                        help="also lstsq on the first BATCHES calibration batches (each value a row)")
    parser.add_argument("--calibrate", type=int, nargs="*", default=[], metavar="BATCHES",
                        help="also the student built with finetune.calibrate BATCHES (the build's own least-squares refit, "
                             "in one pass), then no reconstruction: its cost is the build's extra seconds")
    parser.add_argument("--alone-from-stored", action="store_true",
                        help="the inheritance-alone fine-tuning from results/reconstruct_budget.json, not run again")
    parser.add_argument("--step-time", type=int, default=0, metavar="K",
                        help="time K fine-tuning steps of the student here, to price the steps saved at this run's load")
    parser.add_argument("--name", default="reconstruct_budget", help="the results file's name")
    parser.add_argument("--finetune-from", nargs="*", default=[], choices=sorted(STARTS),
                        help="fine-tune the student from these starts to its plateau too")
    args = parser.parse_args()
    if args.summarize:
        stored = json.loads((RESULTS / f"{args.name}.json").read_text())
        payload = derive(stored)
        show(payload)
        write_json(args.name, payload)  # the machine it ran on, as stored
        return

    import converged
    import torch

    from compressor.cli.console import configure_logging
    from compressor.finetune import calibration_batches, with_calibration
    from compressor.train import deterministic_kernels, evaluate, reestimate_batchnorm, seed_everything
    from compressor.train.precision import bf16_supported
    from compressor.transforms import Recipe, apply
    from compressor.transforms.reconstruct import output_gap, reconstruct

    torch.set_num_threads(args.threads)
    if args.finetune_none or args.finetune_from:  # each evaluation of a fine-tuning to its plateau, as converged.py shows it
        show_evaluations()
    else:
        configure_logging()
    if "bf16" in args.precisions and not bf16_supported(torch.device("cpu")):
        parser.error("bf16: this CPU does not run bfloat16 in hardware (its timings would mean nothing)")
    settings = converged.parsed([])
    if args.run_dir:
        settings.run_dir = args.run_dir
    settings.threads, settings.device = args.threads, "cpu"  # the fine-tuning where the reconstructions ran
    experiment = converged.experiment_for(args.task, settings, seed=0)
    data = experiment.data.build()
    teacher = converged.converged_parent(Path(settings.run_dir) / args.task, 0, data).eval()
    config = experiment.finetune.train_config(experiment.train, distill=False)
    calibration = calibration_batches(data, max(1, experiment.finetune.calibrate), batch_size=config.batch_size,
                                      seed=config.seed)
    example = torch.zeros(1, data.in_channels, experiment.data.patch_size, experiment.data.patch_size)
    seed_everything(config.seed)  # the new layers' random parts, as compress draws them
    recipe = with_calibration(Recipe.load(converged.RECIPE), experiment.finetune.calibrate)  # as compress builds it
    student, _records = apply(teacher, recipe, example, init="inherit", calibration=calibration, diagnostics=False)
    reestimate_batchnorm(student, data, batches=experiment.finetune.bn_reestimate, batch_size=config.batch_size,
                         seed=config.seed)
    images = torch.cat(calibration_batches(data, experiment.finetune.reconstruct_batches, batch_size=config.batch_size,
                                           seed=config.seed))
    teacher_score = evaluate(teacher, data, config).score
    print(f"{args.task}: teacher validation {teacher_score:.4f}; {images.shape[0]} calibration patches; "
          f"{sum(p.numel() for p in student.parameters()):,} student params", flush=True)
    load = os.getloadavg()[0]
    runs: dict[str, dict[str, Any]] = {}
    settings_run = [(steps, precision, "hints" if steps else "none", len(images)) for steps in args.steps
                    for precision in (args.precisions if steps else ["fp32"])]
    for count in sorted({min(len(images), batches * config.batch_size) for batches in args.lstsq}):
        if count < len(images):  # what compress pays without reconstruction on that many patches: lstsq's seconds net of it
            settings_run.append((0, "fp32", "none", count))
        settings_run.append((0, "fp64", "lstsq", count))
    for repeat in range(args.repeats):
        for steps, precision, method, count in settings_run:
            key = (f"{method}, {count} patches" if count < len(images) or method == "lstsq" else
                   f"{steps} steps {precision}" if steps else "none")
            trained = copy.deepcopy(student)
            started = time.perf_counter()
            with deterministic_kernels(torch.device("cpu")):  # as compress runs it
                report = reconstruct(teacher, trained, images[:count], method=method,
                                     steps=max(steps, 1), batch_size=config.batch_size,
                                     precision="fp32" if method == "lstsq" else precision)
            seconds = time.perf_counter() - started
            row = runs.setdefault(key, {"steps": steps, "method": method, "patches": count, "precision": precision,
                                        "seconds": []})
            row["seconds"].append(round(seconds, 1))
            if repeat == 0:
                row["output_error_before"] = round(report.output_error_before, 4)
                row["output_error_after"] = round(report.output_error_after, 4)
                if method == "lstsq":  # which batch norms it kept, and the two output errors it chose between
                    row["norms_reestimated"] = report.norms_reestimated
                    row["output_error_as_solved"] = report.output_error_as_solved
                    row["output_error_reestimated"] = report.output_error_reestimated
                row["start_val"] = round(evaluate(trained, data, config).score, 4)
            print(f"{key:<22} {seconds:6.1f} s  output error {row['output_error_before']:.3f} -> "
                  f"{row['output_error_after']:.3f}  start validation {row['start_val']:.4f}", flush=True)
    for repeat in range(args.repeats if args.calibrate else 0):  # the build with and without calibrate, in turns
        builds = {}
        for batches in [0, *args.calibrate]:
            seed_everything(config.seed)
            started = time.perf_counter()
            built, _records = apply(teacher, with_calibration(Recipe.load(converged.RECIPE), batches), example,
                                    init="inherit", calibration=calibration_batches(
                                        data, max(1, batches), batch_size=config.batch_size, seed=config.seed),
                                    diagnostics=False)
            builds[batches] = time.perf_counter() - started
            if not batches:
                continue
            key = f"calibrate {batches}"
            row = runs.setdefault(key, {"steps": 0, "method": "calibrate", "calibrate_batches": batches, "precision": "fp32",
                                        "seconds": [], "extra_build_seconds": []})
            row["extra_build_seconds"].append(round(builds[batches] - builds[0], 1))
            row["seconds"].append(round(builds[batches], 1))
            if repeat == 0:
                reestimate_batchnorm(built, data, batches=experiment.finetune.bn_reestimate, batch_size=config.batch_size,
                                     seed=config.seed)
                row["output_error_before"] = runs["none"]["output_error_before"] if "none" in runs else None
                row["output_error_after"] = round(output_gap(teacher, built, images, config.batch_size), 4)
                row["start_val"] = round(evaluate(built, data, config).score, 4)
            print(f"{key:<22} build {builds[batches]:6.1f} s against {builds[0]:.1f} s  output error "
                  f"{row['output_error_after']:.3f}  start validation {row['start_val']:.4f}", flush=True)
    for row in runs.values():
        row["median_seconds"] = statistics.median(row["seconds"])
    step_seconds = None
    if args.step_time:
        from dataclasses import replace

        from compressor.train import train

        timed = train(copy.deepcopy(student), data, replace(config, steps=args.step_time, schedule="constant"),
                      description="step time")  # the rate's schedule costs nothing; plateau needs steps: auto
        step_seconds = round(timed.train_seconds / max(timed.steps_done, 1), 3)
        print(f"fine-tuning: {step_seconds:.3f} s a step at this load ({timed.steps_done} steps)", flush=True)
    if args.alone_from_stored:
        alone = json.loads((RESULTS / "reconstruct_budget.json").read_text())["inheritance_alone"]
    else:
        alone = finetuned(args, settings, teacher, data, "none") if args.finetune_none else None
    ends = {start: finetuned(args, settings, teacher, data, start) for start in args.finetune_from}
    if alone is not None and "none" in runs and abs(alone["curve"][0][1] - runs["none"]["start_val"]) > 5e-4:
        raise SystemExit(f"the fine-tuned student does not start where the 'none' row does ({alone['curve'][0][1]} "
                         f"against {runs['none']['start_val']}): compress built another student than this script")
    payload = derive({
        "command": "python experiments/benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
        "machine": machine(), "threads": args.threads, "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2), "task": args.task, "teacher_val": round(teacher_score, 4),
        "calibration_patches": int(images.shape[0]), "runs": runs, "inheritance_alone": alone,
        **({"finetune_seconds_per_step": step_seconds} if step_seconds else {}),
        **({"inheritance_alone_from": "results/reconstruct_budget.json"} if args.alone_from_stored else {}),
        **({"finetuned_from": ends} if ends else {}),
    })
    show(payload)
    write_json(args.name, payload)


def derive(payload: dict[str, Any]) -> dict[str, Any]:
    """Each row's seconds net of the ``none`` row's (the teacher's pass and the start error, which ``compress``
    pays without reconstruction too), and, where inheritance alone was fine-tuned, the steps each row saves:
    the first evaluation at which that run reaches the row's start, and the net seconds as a share of those
    steps' seconds (fp32 fine-tuning: a bf16 row's share against bf16 fine-tuning would be about 1.3x higher)."""
    runs, alone = payload["runs"], payload.get("inheritance_alone")
    base = runs.get("none", {}).get("median_seconds", 0.0)
    for row in runs.values():
        # net of no reconstruction on as many patches (an lstsq row on fewer than all: its own none row)
        alike = runs.get(f"none, {row['patches']} patches") if row.get("patches") else None
        row["net_seconds"] = round(row["median_seconds"] - (alike or {}).get("median_seconds", base), 1)
        if "extra_build_seconds" in row:  # calibrate: what the build took over the build without it
            row["net_seconds"] = round(statistics.median(row["extra_build_seconds"]), 1)
        if alone is None:
            continue
        reached = next((step for step, score in alone["curve"] if score >= row["start_val"]), None)
        row["finetune_steps_saved"] = reached
        per_step = payload.get("finetune_seconds_per_step") or alone["seconds_per_step"]  # this run's, where timed
        row["saved_seconds"] = round(reached * per_step, 1) if reached is not None else None
        row["share_of_saved"] = round(row["net_seconds"] / row["saved_seconds"], 3) if reached else None
        row.pop("reconstruction_share_of_saved", None)  # the first version's, on the gross seconds
    return payload


def show(payload: dict[str, Any]) -> None:
    alone = payload.get("inheritance_alone")
    if alone is not None:
        print(f"inheritance alone, fine-tuned: {alone['steps_done']} steps (best at {alone['best_step']}), validation "
              f"{alone['val']:.4f}, test {alone['test']:.4f}, {alone['seconds_per_step']:.2f} s a step")
    for start, end in payload.get("finetuned_from", {}).items():
        print(f"from {start}, fine-tuned: start {end['curve'][0][1]:.4f}, {end['steps_done']} steps (best at "
              f"{end['best_step']}), validation {end['val']:.4f}, test {end['test']:.4f}")
    for key, row in payload["runs"].items():
        before = "-" if row.get("output_error_before") is None else f"{row['output_error_before']:.3f}"
        line = (f"{key:<22} {row['median_seconds']:6.1f} s ({row['net_seconds']:+.1f} s over none)  output error "
                f"{before} -> {row['output_error_after']:.3f}  start validation {row['start_val']:.4f}")
        if alone is not None and (row["steps"] or row.get("method") in ("lstsq", "calibrate")):
            line += (f"  saves {row['finetune_steps_saved']} steps ({row['saved_seconds']:.0f} s; net cost "
                     f"{row['share_of_saved']:.0%} of it)" if row["finetune_steps_saved"] else "  saves: never reached alone")
        print(line)


#: how a fine-tuned student starts: the ``finetune:`` settings that make that start, and its state file's stem
STARTS = {
    "none": ({"reconstruct": "none"}, "recipe-alone-s0"),
    "calibrate1": ({"reconstruct": "none", "calibrate": 1}, "recipe-calibrate1-s0"),
    "lstsq8": ({"reconstruct": "lstsq", "reconstruct_batches": 8}, "recipe-lstsq8-s0"),
}


def finetuned(args: argparse.Namespace, settings: argparse.Namespace, teacher: Any, data: Any,
              start: str) -> dict[str, Any]:
    """``compress`` from ``start`` (:data:`STARTS`; ``none``: inheritance alone), fine-tuned by the converged rows'
    rule (seed 0, no distillation: the converged table's ``recipe-s0`` row with that start in place of ``hints``):
    its validation curve, from its start, and its test score."""
    import converged

    from compressor.compression import compress

    folder = Path(settings.run_dir) / args.task / "jobs"
    overrides, stem = STARTS[start]
    experiment = converged.experiment_for(args.task, settings, seed=0,
                                          finetune={"steps": "auto", "lr": 3e-4, **overrides})
    started = time.perf_counter()
    compressed = compress(teacher, converged.RECIPE, experiment, data=data, distill=False,
                          resume=folder / f"{stem}.state")  # a run cut short goes on
    result = compressed.result
    print(f"from {start}: {result.steps_done} steps (best at {result.best_step}), validation "
          f"{result.metrics.score:.4f}, test {compressed.student_test_metrics.score:.4f}", flush=True)
    return {
        "curve": [[step, round(metrics.score, 4)] for step, metrics in result.history],
        "steps_done": result.steps_done, "best_step": result.best_step,
        "val": round(result.metrics.score, 4), "test": round(compressed.student_test_metrics.score, 4),
        "seconds_per_step": round(result.train_seconds / max(result.steps_done, 1), 3),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    main()
