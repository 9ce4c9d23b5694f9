"""What a trained network knows, kept through replacement: reconstruction methods on the networks users bring.

For each network (segmentation_models_pytorch, MONAI, the project's U-Net) on the building
tile, cut into training, validation and test strips (the converged-parents split):

1. ``teacher``: the network trained to its plateau (``train.steps: auto``), stored.
2. For each recipe (``separable``, ``fire``, the paper's), each reconstruction method
   (``none``: inheritance alone; ``hints``; ``block``; see
   :mod:`compressor.transforms.reconstruct`) and each seed: ``compressor.compress`` from the
   teacher (weight inheritance, batch norms re-estimated, the reconstruction, then
   ``--finetune-steps`` of fine-tuning with distillation, the same for every row), test
   score measured once at the end; the output error against the teacher before and after
   reconstruction and each phase's time are kept, and the fine-tuning's learning curve.
3. ``scratch``: the same architecture from random weights, trained as long (the ``train:``
   recipe: its learning rate and warm-up), per seed; with ``--finetune-steps auto``, to its own
   plateau by the same rule (each row's steps are in its record).

Differences are paired by seed, with 95% t-intervals. Each job is stored in
``<run-dir>/<network>/jobs/<job>.json`` as it ends (a run cut short resumes; settings that
differ from a stored job's are refused).

    python experiments/benchmarks/knowledge.py --network unet-r18 [--seeds 3] [--methods none,hints,block]
    python experiments/benchmarks/knowledge.py --network unet-r34 --recipes paper --finetune-steps auto \
        --run-dir runs/knowledge-auto --teacher-from runs/knowledge     # fine-tuned to the plateau
    python experiments/benchmarks/knowledge.py --summarize [--markdown]
    python experiments/benchmarks/knowledge.py --network unet-r34 --methods none,hints,lstsq --threads 1 --restore

``--restore`` starts a run folder that this machine no longer has from the results file's job records (the
rows of every network, so the file written at the end keeps them all): the networks run now train their
teacher again, and go on only if it is the stored one (the same steps and scores; a teacher trained on
1 thread is), so new rows pair with the stored ones.

Writes ``experiments/benchmarks/results/knowledge.json`` (another ``--run-dir``: ``<its name>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from common import (  # noqa: E402
    RESULTS,
    check_results_file,
    follow_curve,
    job_records,
    machine,
    results_name,
    run_dir_label,
    trained_differs,
)

from compressor.intervals import Estimate  # noqa: E402
from compressor.io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "recipes" / "micronet_like.yaml"
CONFIG = ROOT / "experiments" / "knowledge.yaml"  # the data, the teacher's training and the fine-tuning
#: network key -> the name in tests/third_party.py (None: the project's U-Net)
NETWORKS = {
    "unet-r18": "smp Unet-resnet18",
    "unet-r34": "smp Unet-resnet34",
    "fpn-r18": "smp FPN",
    "monai-unet": "MONAI UNet",
    "deeplab-mnv3": "tv DeepLabV3-MobileNetV3",
    "unet": None,
}
RECIPES = ("separable", "fire", "paper")
SETTINGS = ("teacher_max_steps", "eval_every", "patience", "finetune_steps", "patch_size")
TEACHER_SETTINGS = ("teacher_max_steps", "eval_every", "patience", "patch_size")  # what the teacher's training depends on
PATCH_SIZE = 64  # experiments/knowledge.yaml's; another is a setting of the jobs (the jobs run before it existed have 64)


def build_network(key: str, data: Any) -> Any:
    import torch

    if NETWORKS[key] is None:
        import compressor

        return compressor.unet(in_channels=data.in_channels, num_classes=data.num_classes, norm="batch")
    import third_party

    if key == "deeplab-mnv3":  # torchvision's models take 3 channels: its stem made to read the tile's one, as a user would
        network = third_party.build(NETWORKS[key], classes=data.num_classes)
        stem = network.backbone["0"][0]
        network.backbone["0"][0] = torch.nn.Conv2d(data.in_channels, stem.out_channels, stem.kernel_size, stem.stride,
                                                    stem.padding, bias=stem.bias is not None)
        return network.train()
    return third_party.build(NETWORKS[key], classes=data.num_classes, in_channels=data.in_channels).train()


def experiment(args: argparse.Namespace, *, seed: int, method: str = "none") -> Any:
    """``experiments/knowledge.yaml`` (what a user runs ``compress`` with) with this run's settings."""
    import yaml

    from compressor.experiment import Experiment

    settings = yaml.safe_load(CONFIG.read_text())
    settings["train"] |= {"max_steps": args.teacher_max_steps, "eval_every": args.eval_every, "patience": args.patience,
                          "seed": seed, "threads": args.threads, "progress": False}
    settings["finetune"] |= {"steps": args.finetune_steps, "reconstruct": method}
    settings["data"]["patch_size"] = args.patch_size
    return Experiment.from_dict(settings, source=str(CONFIG))


def recipe_of(name: str) -> Any:
    from compressor.transforms import Recipe

    return Recipe.load(PAPER) if name == "paper" else Recipe.from_data([{"name": name}])


def jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The teacher, then seed by seed every (recipe, method) and the scratch runs."""
    planned = [{"job": "teacher", "kind": "teacher", "seed": 0}]
    for seed in range(args.seeds):
        for recipe in args.recipes:
            for method in args.methods:
                planned.append({"job": f"{recipe}-{method}-s{seed}", "kind": "compress", "recipe": recipe,
                                "method": method, "seed": seed})
            planned.append({"job": f"{recipe}-scratch-s{seed}", "kind": "scratch", "recipe": recipe, "seed": seed})
    return planned


def settings_of(args: argparse.Namespace, keys: tuple[str, ...] = SETTINGS) -> dict[str, Any]:
    """The settings a job's result depends on; ``patch_size`` only where it is not 64."""
    return {key: getattr(args, key) for key in keys if key != "patch_size" or args.patch_size != PATCH_SIZE}


def run_job(network: str, job: dict[str, Any], args: argparse.Namespace, data: Any) -> dict[str, Any]:
    import torch

    from compressor.compression import compress, from_scratch
    from compressor.cost import measure
    from compressor.train import evaluate, seed_everything, train
    from compressor.transforms import apply

    folder = Path(args.run_dir) / network
    started, load = time.perf_counter(), os.getloadavg()[0]
    settings = experiment(args, seed=job["seed"], method=job.get("method", "none"))
    shape = settings.cost_input_shape(data.in_channels)
    seed_everything(job["seed"])
    teacher = build_network(network, data)
    record: dict[str, Any] = {**job, "settings": settings_of(args)}
    if job["kind"] == "teacher":
        stored = folder / "teacher.stored.json"  # restored rows beside it: the teacher must be that one, checked as it trains

        def not_the_stored_one(reason: str) -> None:
            raise SystemExit(f"{network}: the teacher is not the stored one ({reason}); the restored rows do not "
                             "pair with it: run without --restore in another --run-dir")

        follow = follow_curve(json.loads(stored.read_text())["curve"], not_the_stored_one) if stored.exists() else {}
        result = train(teacher, data, settings.train, description=f"{network} teacher", **follow)
        torch.save(teacher.state_dict(), folder / "teacher.pt")
        cost = measure(teacher, shape)
    else:
        teacher.load_state_dict(torch.load(folder / "teacher.pt", weights_only=True))
        teacher.eval()
        if job["kind"] == "compress":
            done = compress(teacher, recipe_of(job["recipe"]), settings, data=data, evaluate_at=curve_at(args.finetune_steps))
            result, cost = done.result, done.student_cost
            record |= {
                "inherited": done.inherited_metrics.to_dict(), "start_error": done.start_error,
                "output_error": done.output_error,
                "reconstruct_seconds": round(done.seconds["reconstruct"], 1),
                "finetune_seconds": round(done.seconds["finetune"], 1),
                "points": len(done.reconstruction.points) if done.reconstruction else 0,
            }
        else:
            example = torch.zeros(1, data.in_channels, settings.data.patch_size, settings.data.patch_size)
            student, _ = apply(teacher, recipe_of(job["recipe"]), example, init="inherit", count_flops=False)
            seed_everything(job["seed"])
            fresh = from_scratch(student)
            if args.finetune_steps == "auto":  # the same rule as every other row: to its plateau, best weights kept
                result = train(fresh, data, settings.train, description="scratch")
            else:
                result = train(fresh, data, settings.train.with_steps(args.finetune_steps), description="scratch",
                               evaluate_at=curve_at(args.finetune_steps))
            teacher, cost = fresh, measure(fresh, shape)
    network_trained = teacher if job["kind"] != "compress" else done.student
    test = evaluate(network_trained, data, settings.train, split="test")
    return record | {
        "test": test.to_dict(), "val": result.metrics.to_dict(), "score_name": result.metrics.score_name,
        "steps_done": result.steps_done, "best_step": result.best_step, "converged": result.converged,
        "curve": [[step, round(metrics.score, 5)] for step, metrics in result.history],
        "params": cost.params, "flops": cost.flops,
        "train_seconds": round(result.train_seconds, 1), "wall_seconds": round(time.perf_counter() - started, 1),
        "threads": result.threads, "load_before": round(load, 2),
    }


def curve_at(steps: int | str) -> tuple[int, ...]:
    """Where a fixed-length run also evaluates (its learning curve): 8 points; ``auto`` runs evaluate
    every ``eval_every`` steps anyway."""
    if steps == "auto":
        return ()
    every = max(1, int(steps) // 8)
    return tuple(range(every, int(steps), every))


def run_network(network: str, args: argparse.Namespace) -> None:
    folder = Path(args.run_dir) / network / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    if args.teacher_from and not (folder / "teacher.json").exists():  # the same converged teacher, other jobs
        source = Path(args.teacher_from) / network
        if not (source / "teacher.pt").is_file() or not (source / "jobs" / "teacher.json").is_file():
            raise SystemExit(f"--teacher-from: no trained teacher in {source} (teacher.pt and jobs/teacher.json)")
        if source.resolve() != folder.parent.resolve():
            shutil.copyfile(source / "teacher.pt", folder.parent / "teacher.pt")
            shutil.copyfile(source / "jobs" / "teacher.json", folder / "teacher.json")
    data = experiment(args, seed=0).data.build()
    print(f"{network}: {data.description}", flush=True)
    if args.restore and (folder.parent / "teacher.stored.json").exists() and not (folder.parent / "teacher.pt").exists():
        (folder / "teacher.json").unlink(missing_ok=True)  # trained again below, then compared
    for job in jobs(args):
        path = folder / f"{job['job']}.json"
        if path.exists():
            stored = json.loads(path.read_text()).get("settings") or {}
            keys = TEACHER_SETTINGS if job["kind"] == "teacher" else SETTINGS
            if {key: value for key, value in stored.items() if key in keys} != settings_of(args, keys):
                raise SystemExit(f"{path} was run with {stored}, not {settings_of(args)}: use those settings or another --run-dir")
            if job["kind"] == "teacher":
                _check_teacher(folder, trained_now=False)
            continue
        record = run_job(network, job, args, data)
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        if job["kind"] == "teacher":
            _check_teacher(folder, trained_now=True)
        extra = ""
        if job["kind"] == "compress":
            extra = (f"  inherited {record['inherited']['score']:.3f}  error {record['start_error']} -> {record['output_error']}"
                     f"  reconstruct {record['reconstruct_seconds']:.0f} s")
        print(f"{network} {job['job']:<22} test {record['test']['score']:.3f}  val {record['val']['score']:.3f}"
              f"  {record['steps_done']} steps  {record['wall_seconds']:.0f} s{extra}", flush=True)


# -- the table ------------------------------------------------------------------------------

def summarize(run_dir: Path) -> dict[str, Any]:
    """Each network's table; a ``before-*`` folder beside ``jobs`` (jobs run before a change to the code,
    kept for the comparison) makes a table of its own, with the same teacher."""
    networks = {}
    for network in NETWORKS:
        records = job_records(run_dir / network / "jobs")
        if "teacher" not in records:
            continue
        networks[network] = {**table(records), "jobs": records}
        for before in sorted((run_dir / network).glob("before-*")):
            kept = {"teacher": records["teacher"], **job_records(before)}
            networks[f"{network} ({before.name})"] = {**table(kept), "jobs": kept}
    return networks


def table(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    teacher = records["teacher"]
    rows = []
    for recipe in RECIPES:
        scratch = {record["seed"]: record for record in records.values() if record.get("recipe") == recipe and record["kind"] == "scratch"}
        methods = sorted({record["method"] for record in records.values() if record.get("recipe") == recipe and record["kind"] == "compress"})
        for method in methods:
            found = sorted((record for record in records.values() if record.get("recipe") == recipe
                            and record.get("method") == method), key=lambda record: record["seed"])
            tuned = [record["test"]["score"] for record in found]
            paired = [100 * (record["test"]["score"] - scratch[record["seed"]]["test"]["score"])
                      for record in found if record["seed"] in scratch]
            rows.append({
                "recipe": recipe, "method": method, "n": len(found), "saves": _saves(records, recipe, found),
                "params_ratio": teacher["params"] / found[0]["params"],
                "start_error": Estimate.of([record["start_error"] for record in found]).to_dict(),
                "output_error": Estimate.of([record["output_error"] for record in found]).to_dict(),
                "inherited": Estimate.of([record["inherited"]["score"] for record in found]).to_dict(),
                "test": Estimate.of(tuned, bounds=(0.0, 1.0)).to_dict(),
                "minus_teacher_points": Estimate.of([100 * (score - teacher["test"]["score"]) for score in tuned]).to_dict(),
                "minus_scratch_points": Estimate.of(paired).to_dict() if paired else None,
                "scratch": Estimate.of([record["test"]["score"] for record in scratch.values()], bounds=(0.0, 1.0)).to_dict()
                if scratch else None,
                "reconstruct_seconds": sum(record["reconstruct_seconds"] for record in found) / len(found),
                "finetune_seconds": sum(record["finetune_seconds"] for record in found) / len(found),
            })
    return {"teacher": {"test": teacher["test"]["score"], "val": teacher["val"]["score"], "steps": teacher["steps_done"],
                        "best_step": teacher["best_step"], "reached_plateau": teacher["converged"], "params": teacher["params"],
                        "train_seconds": teacher["train_seconds"]}, "rows": rows}


def _saves(records: dict[str, dict[str, Any]], recipe: str, found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a reconstruction saves, per seed: the fine-tuning steps inheritance alone (``none``, same
    seed) needs before its validation score reaches the score the reconstructed student starts
    with, their time at the ``none`` run's seconds per step, and the reconstruction's time as a
    share of it ("not reached": ``none`` never got there in its steps, so the saving is larger)."""
    if found[0]["method"] == "none":
        return None
    per_seed = []
    for record in found:
        plain = records.get(f"{recipe}-none-s{record['seed']}")
        if plain is None:
            continue
        start = record["inherited"]["score"]
        reached = next((step for step, score in [[0, plain["inherited"]["score"]], *plain["curve"]] if score >= start), None)
        per_step = plain["finetune_seconds"] / max(plain["steps_done"], 1)
        saved = None if reached is None else reached * per_step
        per_seed.append({"seed": record["seed"], "steps": reached, "seconds": saved,
                         "share": None if not saved else record["reconstruct_seconds"] / saved})
    return {"per_seed": per_seed,
            "text": ", ".join("not reached" if item["steps"] is None else
                              f"{item['steps']} steps ({item['seconds']:.0f} s; reconstruction {item['share']:.0%} of it)"
                              if item["share"] is not None else f"{item['steps']} steps" for item in per_seed)}


def _text(data: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    if data is None:
        return "-"
    return Estimate(**{key: float("nan") if value is None else value for key, value in data.items()}).text(digits=digits, signed=signed)


def print_tables(networks: dict[str, Any], *, markdown: bool) -> None:
    from compressor.tables import format_table

    headers = ["recipe", "reconstruction", "ratio", "output error before -> after", "inherited", "test IoU [95% CI] n",
               "minus teacher, points", "minus scratch, points (paired)", "reconstruct / fine-tune s",
               "fine-tuning saved (none reaching the start, per seed)"]
    for network, found in networks.items():
        teacher = found["teacher"]
        title = (f"{network}: teacher test {teacher['test']:.3f} after {teacher['steps']} steps "
                 f"({'plateau' if teacher['reached_plateau'] else 'cap'}, best at {teacher['best_step']})")
        rows = [[row["recipe"], row["method"], f"{row['params_ratio']:.1f}x",
                 f"{row['start_error']['mean']:.3f} -> {row['output_error']['mean']:.3f}", f"{row['inherited']['mean']:.3f}",
                 _text(row["test"]), _text(row["minus_teacher_points"], 1, True), _text(row["minus_scratch_points"], 1, True),
                 f"{row['reconstruct_seconds']:.0f} / {row['finetune_seconds']:.0f}",
                 "-" if row["saves"] is None else row["saves"]["text"]] for row in found["rows"]]
        if markdown:
            print(f"\n**{title}**\n")
            print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            print(format_table(headers, rows, title=title))


def restore(run_dir: Path, running: list[str]) -> None:
    """Writes the results file's job records into ``run_dir`` where it has none: every network's (a
    ``network (before-x)`` table into that network's ``before-x`` folder), the teachers of the networks
    in ``running`` kept aside (``<network>/teacher.stored.json``), to be trained again and compared.

    A network whose folder holds a teacher of its own gets the file's records only if that teacher is
    the file's; otherwise nothing is written, for any network."""
    path = RESULTS / f"{results_name(run_dir, 'knowledge')}.json"
    if not path.exists():
        raise SystemExit(f"--restore: no results file {path}")
    networks = json.loads(path.read_text())["networks"]
    for key, table_ in networks.items():
        local = run_dir / key.partition(" (")[0] / "jobs" / "teacher.json"
        if " (" not in key and local.exists():
            reason = trained_differs(table_["jobs"]["teacher"], json.loads(local.read_text()))
            if reason:
                raise SystemExit(f"--restore: {local} is another teacher than {path.name}'s ({reason}); nothing restored")
    for key, table_ in networks.items():
        network, _, before = key.partition(" (")
        folder = run_dir / network / (before.rstrip(")") if before else "jobs")
        folder.mkdir(parents=True, exist_ok=True)
        for job, record in table_["jobs"].items():
            if before and job == "teacher":
                continue  # a before- table shares its network's teacher
            stored_aside = job == "teacher" and network in running
            target = run_dir / network / "teacher.stored.json" if stored_aside else folder / f"{job}.json"
            if not target.exists():
                atomic_write_text(target, json.dumps(record, indent=1) + "\n")
    print(f"restored the job records of {path.name} into {run_dir}", flush=True)


def _check_teacher(folder: Path, *, trained_now: bool) -> None:
    """With restored rows beside it (``teacher.stored.json``), the teacher in ``folder`` must be the stored one:
    the rows were fine-tuned from that one. Checked on every run; a teacher trained now that differs is
    removed (the run stops, and the next one trains it again), one found there is left as it is."""
    stored_path = folder.parent / "teacher.stored.json"
    if not stored_path.exists():
        return
    trained = json.loads((folder / "teacher.json").read_text())
    reason = trained_differs(json.loads(stored_path.read_text()), trained)
    if reason:
        if trained_now:
            (folder.parent / "teacher.pt").unlink(missing_ok=True)
            (folder / "teacher.json").unlink(missing_ok=True)
        raise SystemExit(f"{folder.parent.name}: the teacher is not the stored one ({reason}); the restored rows do "
                         "not pair with it: run without --restore in another --run-dir")
    print(f"{folder.parent.name}: the teacher is the stored one (steps {trained['steps_done']}, "
          f"test {trained['test']['score']:.4f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", action="append", choices=list(NETWORKS), help="network(s) to run (repeatable)")
    parser.add_argument("--summarize", action="store_true", help="only print and write the tables of what has run")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--recipes", type=lambda text: text.split(","), default=list(RECIPES))
    parser.add_argument("--methods", type=lambda text: text.split(","), default=["none", "hints", "block"])
    parser.add_argument("--teacher-max-steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--finetune-steps", type=lambda text: text if text == "auto" else int(text), default=400,
                        help="fine-tuning steps, or auto: to the plateau, as the teacher (scratch too, by the same rule)")
    parser.add_argument("--patch-size", type=int, default=PATCH_SIZE,
                        help="training patches' side (DeepLabV3-MobileNetV3, output stride 16, sees a 64-px patch as 4x4)")
    parser.add_argument("--threads", type=lambda text: text if text == "auto" else int(text), default="auto")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "knowledge"))
    parser.add_argument("--teacher-from", metavar="RUN_DIR", help="take each network's trained teacher from this run "
                        "directory (e.g. runs/knowledge) instead of training it again")
    parser.add_argument("--restore", action="store_true", help="start from the results file's job records (this "
                        "machine lost the run folder); each network run trains its teacher again and must match")
    args = parser.parse_args()
    name = results_name(args.run_dir, "knowledge")
    check_results_file(RESULTS / f"{name}.json", Path(args.run_dir), default=name == "knowledge")
    if args.restore:
        restore(Path(args.run_dir), [] if args.summarize else (args.network or ["unet-r18"]))
    if not args.summarize:
        for network in args.network or ["unet-r18"]:
            run_network(network, args)
    networks = summarize(Path(args.run_dir))
    print_tables(networks, markdown=args.markdown)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps({"machine": machine(), "run_dir": run_dir_label(Path(args.run_dir)), "networks": networks}, indent=1) + "\n")


if __name__ == "__main__":
    main()
