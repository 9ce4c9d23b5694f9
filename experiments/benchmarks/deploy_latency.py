"""Size is not speed: params, FLOPs, file size, latency on PyTorch eager, ONNX Runtime fp32 and int8, and
the IoU of each fp32/int8 pair, for U-Net, Micro-Net, the paper's recipe on U-Net and the 3 smallest
front models of a study; then whether a latency front picks other trials than a FLOP front.

    python experiments/benchmarks/deploy_latency.py [--study quickstart] [--threads 1] [--repeats 30]

Needs the deploy extra and a finished study with its baselines (``compressor search
experiments/quickstart.yaml`` makes both). Every model is timed at batch 1 on a 256x256 input, the
three runtimes interleaved (torch, fp32, int8, torch, ...) at the same thread count, medians; IoU
on the study's validation scenes; int8 is static, calibrated on 8 batches of training patches.
The paper's recipe (experiments/recipes/micronet_like.yaml) is applied to the trained U-Net and
fine-tuned as ``compressor compress`` does. The latency front: every complete trial of the study
rebuilt (architecture only: latency does not depend on the weights) and timed on ONNX Runtime
fp32; the fronts of (metric, latency) and (metric, FLOPs) over the same trials are compared.
Writes experiments/benchmarks/results/deploy_latency.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

from compressor.compression import compress  # noqa: E402
from compressor.cost import measure  # noqa: E402
from compressor.deploy import deploy  # noqa: E402
from compressor.experiment import Experiment, ModelConfig  # noqa: E402
from compressor.latency import LatencyConfig, forward_runner, time_interleaved  # noqa: E402
from compressor.metrics import metric_value  # noqa: E402
from compressor.runtime import to_onnx  # noqa: E402
from compressor.search import rebuild_trial  # noqa: E402
from compressor.study import load_study, nondominated_ranks, study_info, trial_records  # noqa: E402
from compressor.train import load_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="quickstart")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    storage = args.storage or f"sqlite:///{ROOT / 'runs' / args.study / 'search.db'}"
    study = load_study(storage, args.study)
    info = study_info(study)
    experiment = Experiment.from_dict(info.experiment, source=f"study {args.study!r}")
    data = experiment.data.build()
    channels, size, metric = data.in_channels, args.size, info.metric
    baselines = experiment.run_path / "baselines"

    models = {}
    for name in ("unet", "micronet"):
        network = ModelConfig(name=name, args={"norm": "batch"}).build(in_channels=channels, num_classes=data.num_classes)
        load_checkpoint(baselines / f"{name}.pt", network)
        models[{"unet": "U-Net", "micronet": "Micro-Net"}[name]] = network.eval()
    print("paper recipe on the trained U-Net: compressing and fine-tuning", flush=True)
    models["paper recipe on U-Net"] = compress(models["U-Net"], ROOT / "experiments/recipes/micronet_like.yaml",
                                               experiment, data=data).student.eval()
    records = [record for record in trial_records(study) if record.weights and record.status == "complete"]
    front = sorted({record.number: record for record in records}.values(), key=lambda record: record.params)
    for record in front[:3]:
        models[f"trial {record.number}"] = rebuild_trial(storage, args.study, record.number).model.eval()

    rows = []
    latency = LatencyConfig(threads=args.threads, repeats=args.repeats, input_size=size)
    with tempfile.TemporaryDirectory() as folder:
        for label, network in models.items():
            print(f"{label}: export, int8, scores, latency", flush=True)
            cost = measure(network, (1, channels, size, size))
            deployed = deploy(network, Path(folder) / "model.onnx", in_channels=channels, input_size=size, data=data,
                              train_config=experiment.train, int8=True, latency=latency)
            scores = {name: metric_value(value, metric) for name, value in deployed.metrics.items()}
            rows.append({
                "model": label, "params": cost.params, "flops": cost.flops, "onnx_bytes": deployed.model.size_bytes,
                "int8_bytes": deployed.int8.size_bytes, "batch_norms_folded": deployed.model.folding.folded,
                "max_abs_diff": max(deployed.checks.values()),
                "latency_ms": {name: timing.median_ms for name, timing in deployed.latency.items()},
                "latency_p90_ms": {name: timing.p90_ms for name, timing in deployed.latency.items()},
                "metric_torch": scores["PyTorch"], "metric_fp32": scores["ONNX Runtime fp32"],
                "metric_int8": scores["ONNX Runtime int8"],
            })
    unet = rows[0]
    for row in rows:
        row["flops_ratio"] = unet["flops"] / row["flops"]
        row["latency_ratio"] = {name: unet["latency_ms"][name] / value for name, value in row["latency_ms"].items()}

    print("latency of every complete trial (ONNX Runtime fp32, architecture only)", flush=True)
    # the candidates of a front by the project's rules: complete, within budget, above the floor
    complete = [record for record in trial_records(study) if record.status == "complete" and record.metric is not None
                and record.feasible and record.metric > info.threshold]
    runners, flops = {}, {}
    for record in complete:
        network = rebuild_trial(storage, args.study, record.number, untrained=True).model
        runners[record.number] = forward_runner(to_onnx(network, (1, channels, size, size)), "onnxruntime",
                                                (1, channels, size, size), threads=args.threads)
        flops[record.number] = measure(network, (1, channels, size, size)).flops
    timings = time_interleaved(runners, repeats=max(10, args.repeats // 2), threads=args.threads)
    import statistics

    trial_latency = {number: statistics.median(values) for number, values in timings.items()}
    points = {number: record.metric for number, record in ((r.number, r) for r in complete)}
    fronts = {}
    for cost_name, cost in (("flops", flops), ("latency", trial_latency)):
        numbers = list(points)
        ranks = nondominated_ranks([[points[n], cost[n]] for n in numbers], ["maximize", "minimize"])
        fronts[cost_name] = sorted(n for n, rank in zip(numbers, ranks) if rank == 0)

    write_json("deploy_latency", {
        "study": args.study, "threads": args.threads, "repeats": args.repeats, "input": [1, channels, size, size],
        "models": rows, "trials": {str(n): {"metric": points[n], "flops": flops[n], "latency_fp32_ms": trial_latency[n]}
                                   for n in points},
        "front_metric_flops": fronts["flops"], "front_metric_latency": fronts["latency"],
    })
    header = (f"{'model':24} {'params':>9} {'GFLOPs':>7} {'fp32 MB':>8} {'int8 MB':>8} {'torch ms':>9} {'ORT fp32':>9} "
              f"{'ORT int8':>9} {'FLOPs vs U':>10} {'lat vs U (fp32)':>15} {'IoU fp32':>9} {'IoU int8':>9} {'int8-fp32':>9}")
    print(header)
    for row in rows:
        ms = row["latency_ms"]
        print(f"{row['model']:24} {row['params']:>9,} {row['flops'] / 1e9:>7.2f} {row['onnx_bytes'] / 1e6:>8.2f} "
              f"{row['int8_bytes'] / 1e6:>8.2f} {ms['torch']:>9.1f} {ms['onnxruntime fp32']:>9.1f} "
              f"{ms['onnxruntime int8']:>9.1f} {row['flops_ratio']:>9.1f}x "
              f"{row['latency_ratio']['onnxruntime fp32']:>14.1f}x {row['metric_fp32']:>9.3f} {row['metric_int8']:>9.3f} "
              f"{100 * (row['metric_int8'] - row['metric_fp32']):>+9.2f}")
    print(f"front of (metric, FLOPs): trials {fronts['flops']}; front of (metric, ONNX Runtime latency): "
          f"trials {fronts['latency']}")


if __name__ == "__main__":
    main()
