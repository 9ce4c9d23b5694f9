"""Deployment: ONNX export with batch norm folded, dynamic sizes, the check against PyTorch,
int8, latency on a chosen runtime, the CLI, a latency-objective search and the report's int8 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_refusal
from search_helpers import tiny_experiment, tiny_experiment_data, write_tiny_experiment

import compressor
from compressor.errors import ConfigError, ExportError, MissingExtraError
from compressor.runtime import deploy_available
from compressor.study import load_study

pytestmark = pytest.mark.skipif(
    not deploy_available(), reason="the deploy extra (onnx, onnxruntime) is not installed: pip install -e '.[deploy]'")


def _with_norm_statistics(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Batch norms with statistics and affine parameters far from identity, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(seed)
    for layer in network.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            size = layer.num_features
            layer.running_mean.copy_(torch.rand(size, generator=generator) * 2 - 1)
            layer.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return network.eval()


def _fire_unet() -> torch.nn.Module:
    network = _with_norm_statistics(compressor.unet(base_width=4, norm="batch"))
    smaller, _ = compressor.apply(network, [{"name": "downsample_depth", "levels": 2}, {"name": "fire"},
                                            {"name": "dilation"}], (1, 3, 32, 32), count_flops=False)
    return _with_norm_statistics(smaller, seed=1)


def _op_types(exported) -> list[str]:
    import onnx

    return [node.op_type for node in onnx.load_from_string(exported.data).graph.node]


def test_every_batch_norm_is_folded_also_after_a_fire_modules_concat_and_the_logits_match():
    from compressor.runtime import to_onnx

    for network in (_with_norm_statistics(compressor.unet(base_width=4, norm="batch")), _fire_unet()):
        norms = sum(isinstance(layer, torch.nn.BatchNorm2d) for layer in network.modules())
        exported = to_onnx(network, (1, 3, 32, 32))
        assert (exported.folding.folded, exported.folding.left) == (norms, 0)
        assert "BatchNormalization" not in _op_types(exported)
        # height and width are dynamic: shapes never traced, odd ones included, give PyTorch's logits
        inputs = [torch.randn(1, 3, 32, 32), torch.randn(2, 3, 45, 70), torch.randn(1, 3, 17, 33)]
        assert exported.max_abs_diff(network, inputs) < 1e-4


def test_the_fire_module_norms_are_left_by_the_exporter_and_folded_by_us():
    from compressor.runtime import to_onnx

    network = _fire_unet()
    left_by_exporter = to_onnx(network, (1, 3, 32, 32), fold=False)
    assert _op_types(left_by_exporter).count("BatchNormalization") > 0  # what folding is for
    assert left_by_exporter.folding.left == _op_types(left_by_exporter).count("BatchNormalization")


def test_an_operation_the_exporter_cannot_express_names_the_module_that_calls_it():
    from deploy_networks import SpectralNet

    from compressor.runtime import to_onnx

    with pytest.raises(ExportError) as error:
        to_onnx(SpectralNet(), (1, 3, 16, 16))
    assert str(error.value) == ("cannot export to ONNX (opset 17): module 'features.1' (Spectral): "
                                "Exporting the operator 'aten::fft_fft2' to ONNX opset version 17 is not supported")


def test_a_shape_the_runtime_refuses_is_one_line_naming_the_input():
    from compressor.runtime import to_onnx

    exported = to_onnx(compressor.unet(base_width=4), (1, 3, 32, 32))
    with pytest.raises(ExportError) as error:
        exported.run(np.zeros((1, 4, 32, 32), np.float32))
    message = str(error.value)
    assert message.startswith("ONNX Runtime refuses input of shape 1x4x32x32: ")
    assert "image" in message and "\n" not in message


def test_int8_without_calibration_images_is_refused():
    from compressor.runtime import quantize_int8, to_onnx

    with pytest.raises(ConfigError, match="needs calibration images"):
        quantize_int8(to_onnx(compressor.unet(base_width=4), (1, 3, 32, 32)), [])


def test_a_missing_extra_is_one_line_naming_the_packages(monkeypatch):
    import importlib.util

    from compressor.runtime import require_deploy

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(MissingExtraError) as error:
        require_deploy("exporting to ONNX")
    assert str(error.value) == "exporting to ONNX needs onnxruntime (the deploy extra), which is not installed"


def test_latency_on_onnxruntime_is_a_median_and_p90_of_the_exported_model():
    from compressor.latency import LatencyConfig

    cost = compressor.measure(compressor.unet(base_width=4, norm="batch"), (1, 3, 64, 64),
                              latency=LatencyConfig(runtime="onnxruntime", repeats=5, input_size=32))
    assert cost.latency_runtime == "onnxruntime" and cost.latency_runs == 5
    assert 0 < cost.latency_ms <= cost.latency_p90_ms
    assert cost.flops > 0  # FLOPs stay at the cost's own shape


def test_deploy_cli_writes_a_checked_onnx_and_int8_with_scores_and_latency(cli, tmp_path):
    experiment = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    network = _with_norm_statistics(compressor.unet(base_width=4, norm="batch"))
    compressor.save_model(tmp_path / "net.pt", network)
    out = tmp_path / "deployed" / "net.onnx"

    result = cli("deploy", str(tmp_path / "net.pt"), "--out", str(out), "--experiment", str(experiment),
                     "--input-size", "64", "--int8", "--calibration", "2", "--latency", "--repeats", "3")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "max abs difference of the logits" in result.stdout
    measured = json.loads(Path(f"{out}.json").read_text())
    assert measured["opset"] == 17 and measured["dynamic_axes"] == ["batch", "height", "width"]
    assert measured["batch_norms_folded"] == 18 and measured["batch_norms_left"] == 0
    # two random shapes, one of odd height and width (the dynamic pads and crops), a larger one, real patches
    assert list(measured["max_abs_diff"])[:4] == ["random 1x3x64x64", "random 2x3x64x32", "random 1x3x71x35",
                                                  "random 1x3x96x96"]
    assert len(measured["max_abs_diff"]) == 5 and max(measured["max_abs_diff"].values()) < 1e-3
    assert measured["refused_by_the_network"] == {}
    assert any(label.startswith("real ") for label in measured["max_abs_diff"])
    assert out.stat().st_size == measured["size_bytes"]
    int8 = out.with_name("net.int8.onnx")
    assert int8.stat().st_size == measured["int8"]["size_bytes"] < measured["size_bytes"] / 2
    assert set(measured["metrics"]) == {"PyTorch", "ONNX Runtime fp32", "ONNX Runtime int8"}
    torch_miou = measured["metrics"]["PyTorch"]["miou"]
    assert measured["metrics"]["ONNX Runtime fp32"]["miou"] == pytest.approx(torch_miou, abs=1e-4)
    assert set(measured["latency_ms"]) == {"torch", "onnxruntime fp32", "onnxruntime int8"}
    # the file runs by itself in ONNX Runtime, at a size never traced
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        expected = network(image).numpy()
    assert np.abs(session.run(None, {"image": image.numpy()})[0] - expected).max() < 1e-4


def test_latency_objective_search_on_onnxruntime_then_report_with_int8_columns(cli, tmp_path):
    data = tiny_experiment_data(tmp_path / "run", n_trials=2, objectives=["metric", "params", "latency"])
    data["cost"]["latency"] = {"runtime": "onnxruntime", "repeats": 2, "warmup": 1}
    data["search"]["seed"] = 1
    data["search"]["references"] = ["micronet"]  # test time: timing U-Net's 31M parameters adds nothing here
    (tmp_path / "lat.yaml").write_text(yaml.safe_dump(data))

    searched = cli("search", str(tmp_path / "lat.yaml"))
    assert searched.returncode == 0, searched.stderr
    trial_lines = [line for line in searched.stdout.splitlines() if line.startswith("trial ")]
    assert trial_lines and all(re.search(r"FLOPs +\d+\.\d ms  ", line) for line in trial_lines), trial_lines
    storage = f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    study = load_study(storage, "tiny")
    assert study.directions[2].name == "MINIMIZE" and len(study.directions) == 3
    measured = [trial for trial in study.trials if trial.user_attrs.get("latency_ms") is not None]
    assert measured and all(trial.values[2] == trial.user_attrs["latency_ms"] for trial in measured
                            if trial.values is not None)

    report_dir = tmp_path / "report"
    reported = cli("report", "--study", "tiny", "--storage", storage, "--out", str(report_dir), "--int8",
                       "--latency-size", "32")
    assert reported.returncode == 0, reported.stderr
    assert (report_dir / "pareto_latency.png").stat().st_size > 10_000
    header = next(line for line in reported.stdout.splitlines() if line.startswith("rank "))
    assert "latency vs Micro-Net" in header and "int8 building IoU" in header
    import pandas as pd

    pareto = pd.read_csv(report_dir / "pareto.csv")
    deployed = pd.read_csv(report_dir / "deployed.csv")
    assert sorted(deployed["number"]) == sorted(pareto["number"])
    assert pareto["int8_metric"].notna().all() and (pareto["latency_int8_ms"] > 0).all()
    for number in deployed["number"]:
        assert (report_dir / "onnx" / f"trial-{number}.int8.onnx").is_file()

    # one trial as an ONNX file, from the study alone (its data gives the real inputs of the check)
    number = int(deployed["number"].iloc[0])
    exported = cli("export", "--study", "tiny", "--storage", storage, "--trial", str(number),
                       "--out", str(tmp_path / "trial.onnx"), "--input-size", "64", "--no-eval")
    assert exported.returncode == 0, exported.stderr
    assert "on real 4x3x32x32 (training patches)" in exported.stdout
    assert json.loads((tmp_path / "trial.onnx.json").read_text())["batch_norms_left"] == 0


def test_cost_cli_times_on_onnxruntime_against_a_baseline(cli):
    result = cli("cost", "unet", "--model-arg", "base_width=4", "--input-shape", "1,3,32,32", "--runtime",
                     "onnxruntime", "--latency-runs", "3", "--baseline", "micronet")
    assert result.returncode == 0, result.stderr
    assert "CPU latency (onnxruntime): " in result.stdout and "(median of 3, p90 " in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("model "))
    assert header.split()[-2:] == ["latency", "ratio"]


def test_an_interrupted_deployment_writes_nothing(tmp_path, monkeypatch):
    import compressor.deploy as deploy_module
    from compressor.latency import LatencyConfig

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy_module, "time_interleaved", interrupted)  # Ctrl-C while timing, the last step
    with pytest.raises(KeyboardInterrupt):
        deploy_module.deploy(compressor.unet(base_width=4), tmp_path / "m.onnx", in_channels=3, input_size=32,
                             latency=LatencyConfig(repeats=1))
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_model_file_refuses_the_onnx_only_options(cli, tmp_path):
    result = cli("export", "--study", "tiny", "--storage", f"sqlite:///{tmp_path}/none.db", "--trial", "0",
                     "--out", str(tmp_path / "m.pt"), "--int8")
    assert_refusal(result, "export", "--int8 and --latency apply to an ONNX export")
    assert list(tmp_path.iterdir()) == []


def test_a_network_that_branches_on_its_input_size_is_refused_naming_the_node(tmp_path, capfd):
    from deploy_networks import ShapeBranchNet

    from compressor.deploy import deploy

    with pytest.raises(ExportError) as error:
        deploy(ShapeBranchNet().eval(), tmp_path / "m.onnx", in_channels=3, input_size=32)
    message = str(error.value)
    assert message.startswith("the ONNX model does not run on random 1x3x39x19, which PyTorch runs: ")
    assert "kept what it decided at 32x32" in message and "Concat" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == ""  # ONNX Runtime logs nothing of its own beside the error


class LocalMeanSign(torch.nn.Module):
    """Building where the 3x3 mean of the (normalized) input is above 0: a network whose decision
    varies from pixel to pixel with the pixels' values, through a ReLU, as a trained one's does."""

    def __init__(self) -> None:
        super().__init__()
        self.local = torch.nn.Conv2d(3, 2, 3, padding=1)
        self.head = torch.nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.local.weight.copy_(torch.stack([torch.full((3, 3, 3), 1 / 27), torch.full((3, 3, 3), -1 / 27)]))
            self.local.bias.zero_()
            self.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]])[:, :, None, None])
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.local(x)))


def test_int8_calibrated_on_normalized_patches_predicts_as_the_network_does(tmp_path):
    """int8's activation ranges come from the training patches as the network sees them
    (normalized); calibrated on anything else, every activation rounds to one value."""
    from compressor.deploy import deploy
    from compressor.finetune import calibration_batches

    data = tiny_experiment(tmp_path / "run").data.build()
    network = LocalMeanSign().eval()
    deployment = deploy(network, tmp_path / "m.onnx", in_channels=3, input_size=32, data=data,
                                          int8=True, calibration=2, evaluate_metrics=False)
    images = torch.cat(calibration_batches(data, 4, batch_size=4, seed=7))
    with torch.no_grad():
        expected = network(images).argmax(dim=1)
    assert 0.1 < expected.float().mean() < 0.9  # both classes predicted: agreement could fail
    predicted = torch.from_numpy(deployment.int8.run(images)).argmax(dim=1)
    assert (predicted == expected).float().mean() > 0.95


def test_an_export_that_differs_from_pytorch_beyond_the_tolerance_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    import compressor.deploy as deploy_module

    network = compressor.unet(base_width=4).eval()
    (tmp_path / "m.onnx").write_bytes(b"an older export")
    strict = deploy_module.Tolerance(absolute=1e-12, relative=0.0)  # float32 rounding alone goes past it
    with pytest.raises(ExportError) as error:
        deploy_module.deploy(network, tmp_path / "m.onnx", in_channels=3, input_size=32, tolerance=strict)
    assert "tolerance max(1e-12, 0 x the largest logit)" in str(error.value) and "nothing was written" in str(error.value)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and (tmp_path / "m.onnx").read_bytes() == b"an older export"


def test_every_form_is_scored_in_fp32_whatever_the_evaluation_precision(tmp_path, monkeypatch):
    """An experiment whose evaluations run in bf16 does not make deploy score PyTorch in bf16 against
    ONNX Runtime in fp32: every form is scored in fp32, so the scores compare the exports alone."""
    import compressor.deploy as deploy_module
    from compressor.train import TrainConfig

    data = tiny_experiment(tmp_path / "run").data.build()
    asked = []
    scored = deploy_module.evaluate

    def evaluate(model, data, config):
        asked.append(config.evaluation_precision)
        return scored(model, data, config)

    monkeypatch.setattr(deploy_module, "evaluate", evaluate)
    deployment = deploy_module.deploy(_fire_unet(), tmp_path / "m.onnx", in_channels=3, input_size=32, data=data,
                                      train_config=TrainConfig(precision="bf16", eval_window=32, eval_overlap=8))
    assert asked == ["fp32", "fp32"] and set(deployment.metrics) == {"PyTorch", "ONNX Runtime fp32"}
