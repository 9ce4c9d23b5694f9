"""A user's own network end to end: compress judges what it saved, and nothing lies or overwrites on the way."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from search_helpers import write_tiny_experiment

import compressor
from compressor.compression import compress
from compressor.data import SyntheticConfig
from compressor.floor import Floor
from compressor.train import TrainConfig, train


@pytest.fixture(autouse=True)
def _generic_without_the_grouped_plugin(monkeypatch):
    """The searches here sample the generic space, which draws every registered transform: the
    grouped test plugin (tests/test_plugins.py) would change the random draws these trials were
    chosen by; these tests are about the user's network, not plugins."""
    monkeypatch.delitem(compressor.TRANSFORMS._items, "grouped", raising=False)


@pytest.fixture(scope="module")
def data():
    return SyntheticConfig(labels="binary", patch_size=32, train_images=32, val_images=1, val_size=48).build()


@pytest.fixture(scope="module")
def compressed(data):
    """A trained U-Net compressed by fire, with 3 steps of fine-tuning."""

    torch.manual_seed(0)
    teacher = compressor.unet(in_channels=3, base_width=8, norm="batch")
    train(teacher, data, TrainConfig(steps=40, lr=3e-3, batch_size=4, progress=False, eval_window=48, eval_overlap=0,
                                     threads=1))
    experiment = compressor.Experiment.from_dict({
        "data": {"name": "synthetic"},
        "train": {"steps": 3, "batch_size": 4, "progress": False, "eval_window": 48, "eval_overlap": 0, "threads": 1},
        "finetune": {"reconstruct": "none"}})
    return compress(teacher.eval(), [{"name": "fire"}], experiment, data=data)


def test_compress_measures_the_floor_on_the_validation_pixels(compressed, data):
    assert compressed.floor == Floor.of_data(data, "score", margin=0.02)  # search.min_gain's default
    stored = compressed.to_dict()
    assert stored["floor"]["threshold"] == pytest.approx(compressed.floor.threshold)
    assert stored["learned"] == compressed.learned == (compressed.student_metrics.score > compressed.floor.threshold)


def test_compress_says_when_the_student_learned_nothing(compressed):
    student, teacher = compressed.student_metrics.score, compressed.teacher_metrics.score
    metric = compressed.teacher_metrics.score_name
    # a floor between the student and the teacher: the student is no model, the teacher is one
    between = dataclasses.replace(compressed, floor=Floor(constant=student, constant_class="background", margin=0.0))
    assert teacher > student and not between.learned and between.verdict == "below floor"
    line = between.verdict_line()
    assert line.startswith(f"the student learned nothing: {metric} {student:.3f} is not above the floor "
                           f"(all background scores {metric} {student:.3f}")
    assert "; it is no model; try finetune.reconstruct: hints or more fine-tuning steps" in line
    assert between.knowledge_lines()[0] == line and between.to_dict()["verdict"] == "below floor"
    # a floor above both: the teacher itself has learned nothing to keep
    above = dataclasses.replace(compressed, floor=Floor(constant=teacher, constant_class="background", margin=0.01))
    assert above.verdict_line().endswith(f"the teacher ({teacher:.3f}) is not above it either: train it longer first")
    # a floor under both: the student is a model, and the line says how much of the teacher's gain it kept
    under = dataclasses.replace(compressed, floor=Floor(constant=0.0, constant_class="background", margin=0.0))
    assert under.learned and under.verdict == ("kept" if student >= teacher else "lost")
    assert f"{student / teacher:.0%} of the teacher's gain over the floor" in under.verdict_line()
    # a teacher at the floor and a student above it (the two swapped): no share of a gain the teacher does not have
    level = dataclasses.replace(compressed, teacher_metrics=compressed.student_metrics,
                                result=dataclasses.replace(compressed.result, metrics=compressed.teacher_metrics),
                                floor=Floor(constant=student, constant_class="background", margin=0.0))
    assert level.learned and level.verdict == "kept"
    assert level.verdict_line() == (f"the student kept the teacher's score: {metric} {teacher:.3f} against {student:.3f}; "
                                    f"the teacher ({student:.3f}) is not above the floor (floor: "
                                    f"{level.floor.describe(metric)})")


def test_compress_cli_exits_3_and_says_so_when_the_student_is_below_the_floor(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    out, teacher = tmp_path / "small.pt", tmp_path / "teacher.pt"
    compressor.save_model(teacher, compressor.unet(base_width=4))  # a user's file (the floor's rule is the same)
    # search.min_gain 0.99: no score clears the floor
    args = ("compress", str(teacher), str(config), "--transform", "fire", "--steps", "1", "--out", str(out),
            "--set", "finetune.reconstruct=none", "--set", "search.floor=constant", "--set", "search.min_gain=0.99")
    text = cli(*args)  # one run: the saved metadata is the --json report
    assert text.returncode == 3 and "Traceback" not in text.stderr, text.stderr
    assert any(line.startswith("the student learned nothing: building IoU ") for line in text.stdout.splitlines())
    report = compressor.load_saved(out).metadata  # saved, and marked
    assert report["learned"] is False and report["verdict"] == "below floor"
    assert report["floor"]["threshold"] == pytest.approx(report["floor"]["constant"] + 0.99)


def _large_logit_unet():
    """A U-Net whose logits reach ~2.7e4, as a user's network trained without a bound on them can."""

    torch.manual_seed(0)
    network = compressor.unet(base_width=4, norm="batch").eval()
    last = [module for module in network.modules() if isinstance(module, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(1e6)
    return network


def test_deploy_judges_a_difference_at_the_scale_of_the_logits(cli, tmp_path):
    compressor.save_model(tmp_path / "big.pt", _large_logit_unet())
    out = tmp_path / "big.onnx"
    passed = cli("deploy", str(tmp_path / "big.pt"), "--out", str(out), "--input-size", "32")
    assert passed.returncode == 0 and "Traceback" not in passed.stderr, passed.stderr
    measured = json.loads((tmp_path / "big.onnx.json").read_text())
    assert max(measured["max_abs_diff"].values()) > 1e-3  # beyond the old fixed tolerance, a 1e-6 share of the logits
    # the absolute rule alone refuses it, in one line, and writes nothing new
    out.unlink()
    refused = cli("deploy", str(tmp_path / "big.pt"), "--out", str(out), "--input-size", "32", "--max-rel-diff", "0")
    assert refused.returncode == 2 and not out.exists()
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("compressor deploy: error: the ONNX model's logits differ from PyTorch's by ")
    assert "tolerance max(0.001, 0 x the largest logit)" in line and "nothing was written" in line


def test_two_models_of_one_builder_never_share_a_file_and_nothing_is_replaced_unasked(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    train = ("train", str(config), "--model", "networks:ResidualStridedNet", "--set", "train.steps=1")
    first = cli(*train, "--model-arg", "width=4")
    second = cli(*train, "--model-arg", "width=6")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    folders = sorted(path.name for path in (tmp_path / "run" / "train").iterdir())
    assert folders == ["networks-ResidualStridedNet-width=4", "networks-ResidualStridedNet-width=6"]
    model = tmp_path / "run" / "train" / "networks-ResidualStridedNet-width=4" / "model.pt"
    before = model.read_bytes()
    again = cli(*train, "--model-arg", "width=4")
    assert again.returncode == 2 and model.read_bytes() == before
    (line,) = again.stderr.strip().splitlines()
    assert line == (f"compressor train: error: {model} exists: this model was trained here before; give --overwrite "
                    "to replace it, or --set run_dir=... for another folder; nothing was trained")
    assert cli(*train, "--model-arg", "width=4", "--overwrite").returncode == 0
    # compress names its default output after the trained model's folder, not after "model.pt"
    compress = ("compress", str(model), str(config), "--transform", "prune:ratio=0.5", "--steps", "1",
                "--set", "finetune.reconstruct=none", "--trust")  # built by a function of the user's: trusted
    done = cli(*compress)
    assert done.returncode in (0, 3), done.stderr
    (out,) = (tmp_path / "run" / "compress").iterdir()
    assert out.name.startswith("networks-ResidualStridedNet-width=4-") and out.suffix == ".pt"
    assert f"teacher ({model})" in done.stdout
    before = out.read_bytes()
    refused = cli(*compress)
    assert refused.returncode == 2 and out.read_bytes() == before
    assert refused.stderr.strip() == (f"compressor compress: error: {out} exists: give --overwrite to replace it, "
                                      "or --out another file; nothing was compressed")


class SideEntryNet(torch.nn.Module):
    """Its deepest level is entered twice: from the level above, and by a side path pooled twice from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.down = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.deep = torch.nn.Conv2d(7, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        first = torch.nn.functional.max_pool2d(self.stem(x), 2)
        side = torch.nn.functional.max_pool2d(torch.nn.functional.max_pool2d(x, 2), 2)
        deep = self.deep(torch.cat([torch.nn.functional.max_pool2d(self.down(first), 2), side], dim=1))
        return self.head(torch.nn.functional.interpolate(deep, scale_factor=4.0))


def test_refusals_name_the_network_and_say_what_to_do_instead():
    from compressor.transforms import TransformError

    with pytest.raises(TransformError) as error:
        compressor.apply(SideEntryNet(), [{"name": "downsample_depth", "levels": 1}], (1, 3, 32, 32))
    message = str(error.value)
    assert "the removed levels must be entered from one tensor; found 2" in message
    assert "use stride_to_dilation=true to run them at a finer resolution instead, or fewer levels than 1" in message
    # a step after a graph rewrite names the user's network, not torch.fx's GraphModule
    with pytest.raises(TransformError) as error:
        compressor.apply(SideEntryNet(), [{"name": "skip_fusion"}, {"name": "skip_fusion"}], (1, 3, 32, 32))
    assert "skip_fusion: SideEntryNet has no torch.cat" in str(error.value) and "GraphModule" not in str(error.value)


def test_a_builder_in_the_current_folder_is_found_or_the_error_says_how(cli, tmp_path, monkeypatch):
    (tmp_path / "mynet_builder.py").write_text("import torch\ndef build():\n    return torch.nn.Conv2d(3, 2, 1)\n")
    monkeypatch.chdir(tmp_path)
    result = cli("cost", "mynet_builder:build", "--input-shape", "1,3,32,32")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == ("compressor cost: error: cannot import module 'mynet_builder' of model 'mynet_builder:build': "
                    "No module named 'mynet_builder'; mynet_builder is in the current folder, which Python does not "
                    "search from the compressor command: run it with PYTHONPATH=. (or pip install your package)")


class SizeCheckedNet(torch.nn.Module):
    """Refuses sides that 8 does not divide, as segmentation_models_pytorch's networks refuse 32's."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.down = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        height, width = x.shape[-2:]
        if height % 8 != 0 or width % 8 != 0:
            raise RuntimeError(f"Wrong input shape height={height}, width={width}: expected sides divisible by 8")
        skip = self.norm(self.stem(x))
        up = torch.nn.functional.interpolate(self.down(skip), scale_factor=2.0)
        return self.head(torch.cat([up, skip], dim=1))


def _basic_unet():
    torch.manual_seed(0)
    return compressor.build_model("monai.networks.nets:BasicUNet", {
        "spatial_dims": 2, "in_channels": 3, "out_channels": 2, "features": [8, 8, 16, 32, 64, 8]}).eval()


def test_a_captured_network_still_runs_at_the_odd_sizes_the_original_pads(tmp_path):
    original = _basic_unet()
    odd = torch.randn(1, 3, 263, 131)
    assert original(odd).shape == (1, 2, 263, 131)  # BasicUNet pads a decoder feature that does not match its skip
    small, records = compressor.apply(original, [{"name": "skip_fusion"}], (1, 3, 64, 64), init="inherit")
    (note,) = [note for note in records[0].notes if note.startswith("graph captured")]
    assert "nets/basic_unet.py" in note and "other sizes are zero-padded to a multiple of 16" in note
    small.eval()
    with torch.no_grad():
        assert small(odd).shape == (1, 2, 263, 131) and torch.isfinite(small(odd)).all()
        # what it computes there: the input zero-padded to 272x144 (multiples of 16), the output cropped back
        padded = torch.nn.functional.pad(odd, (0, 144 - 131, 0, 272 - 263))
        assert torch.allclose(small(odd), small(padded)[..., :263, :131], atol=1e-5)
    # kept through a save and load, and through a second graph rewrite
    compressor.save_model(tmp_path / "small.pt", small)
    with torch.no_grad():
        assert compressor.load_model(tmp_path / "small.pt")(odd).shape == (1, 2, 263, 131)
    again, _ = compressor.apply(small, [{"name": "downsample_depth", "levels": 1}],
                                (1, 3, 64, 64), init="inherit")
    with torch.no_grad():
        assert again.eval()(odd).shape == (1, 2, 263, 131)


def test_a_size_that_the_graphs_step_does_not_divide_keeps_the_graph_as_captured():
    original = _basic_unet()
    small, records = compressor.apply(original, [{"name": "skip_fusion"}], (1, 3, 72, 72), init="inherit")
    assert not any("zero-padded" in note for note in records[0].notes)  # 16 does not divide 72: nothing added
    with torch.no_grad():
        assert small.eval()(torch.randn(1, 3, 72, 72)).shape == (1, 2, 72, 72)


def test_a_study_confirmed_before_the_control_was_named_after_its_parent_reads_as_it_was():
    from compressor.confirm.results import read_confirmation
    from compressor.confirm.subjects import result_key
    from compressor.study import StudyInfo

    info = StudyInfo({"train": {"seed": 0}}, "generic", "segmentation_models_pytorch:Unet", ["metric", "params"],
                     references={"base": {"params": 14_000_000, "flops": 4e9, "metric": 0.19, "label": "Unet (base)"},
                                 "unet": {"params": 31_000_000, "flops": 3.7e10, "metric": 0.25}},
                     init="inherit", ratio_to="base", metric_label="building IoU")
    attrs = {"confirm_plan": {"subjects": ["trial-3"], "repeats": [[1, None], [2, None]], "search_repeat": [0, None]}}
    for subject, scores in (("unet", (0.24, 0.25)), ("unet-finetuned", (0.20, 0.21)), ("trial-3", (0.22, 0.23))):
        for seed, score in zip((1, 2), scores):
            attrs[result_key(subject, seed, None)] = {"subject": subject, "seed": seed, "fold": None, "metric": score}
    record = compressor.study.TrialRecord(number=3, status="complete", params=140_000, flops=1e9, metric=0.21)
    confirmation = read_confirmation(attrs, info, [record])
    control = confirmation.summaries["unet-finetuned"]  # the user's network fine-tuned, stored under the old key
    assert confirmation.control == "unet-finetuned" and control.label == "Unet (base) fine-tuned"
    assert control.params == 14_000_000 and confirmation.control_label == "Unet (base) fine-tuned"
    trial = confirmation.summaries["trial-3"]
    assert trial.vs_control.mean == pytest.approx(0.02) and trial.vs_reference.n == 0
    assert confirmation.claim(1e6).endswith("Unet (base) was not run on the same repeats, so no comparison.")


def test_a_captured_network_refuses_what_the_original_refuses_with_its_message():
    original = SizeCheckedNet().eval()
    small, records = compressor.apply(original, [{"name": "skip_fusion"}], (1, 3, 32, 32), init="inherit")
    assert any("other sizes than multiples of 8 are refused, as the original refuses them" in note
               for note in records[0].notes)
    with pytest.raises(compressor.errors.InputSizeError) as error:
        small.eval()(torch.randn(1, 3, 36, 36))
    assert str(error.value) == (
        "input 36x36: SizeCheckedNet, as captured, takes sides that 8 divides, as the original does "
        "(at 33x33 it says: Wrong input shape height=33, width=33: expected sides divisible by 8)")
    assert small(torch.randn(1, 3, 40, 24)).shape == (1, 2, 40, 24)


def test_deploy_checks_odd_sizes_of_a_captured_network_and_says_what_it_refuses(tmp_path):
    from compressor.deploy import deploy

    padded, _ = compressor.apply(_basic_unet(), [{"name": "skip_fusion"}], (1, 3, 64, 64), init="inherit")
    deployment = deploy(padded, tmp_path / "basic.onnx", in_channels=3, input_size=64)
    assert "random 1x3x71x35" in deployment.checks and deployment.refused == {}  # the odd size runs in ONNX too
    checked, _ = compressor.apply(SizeCheckedNet().eval(), [{"name": "skip_fusion"}], (1, 3, 32, 32), init="inherit")
    deployment = deploy(checked, tmp_path / "checked.onnx", in_channels=3, input_size=32)
    assert set(deployment.refused) == {"1x3x39x19"} and "as the original does" in deployment.refused["1x3x39x19"]
    assert any(line.startswith("not checked at 1x3x39x19: the network refuses it in PyTorch too")
               for line in deployment.summary_lines())


def test_a_search_from_the_users_trained_file_is_confirmed_and_reported_against_it(cli, tmp_path):
    import optuna

    from compressor.report import confirmed_frame, pareto_frame
    from compressor.study import study_info

    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", space="generic", n_trials=3,
                                   confirm={"seeds": 2, "top": 2})
    fast = ("--set", "train.lr=0.01")  # 40 steps of this network reach building IoU 0.64 on the tiny scenes
    trained = cli("train", str(config), "--model", "networks:ResidualStridedNet", "--set", "train.steps=40", *fast)
    assert trained.returncode == 0, trained.stderr
    model = tmp_path / "run" / "train" / "networks-ResidualStridedNet" / "model.pt"
    before = model.read_bytes()
    searched = cli("search", str(config), "--model", str(model), "--trust", "--max-params", "100k", *fast)
    assert searched.returncode == 0, searched.stderr
    assert f"parent {model} (a trained file, not retrained)" in searched.stdout
    assert model.read_bytes() == before and not (tmp_path / "run" / "baselines").exists()  # nothing else trained
    assert "U-Net" not in searched.stdout and "Micro-Net" not in searched.stdout

    storage = f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    info = study_info(study)
    assert list(info.references) == ["base"] and info.references["base"]["label"] == "ResidualStridedNet (trained)"
    assert info.init == "inherit" and info.parent == str(model.resolve())
    # the file's own score on the validation pixels is its reference metric, and each repeat's
    base = info.references["base"]["metric"]
    confirmed = confirmed_frame(study).set_index("subject")
    assert confirmed.loc["base", "confirmed_n"] == 2 and confirmed.loc["base", "confirmed_mean"] == pytest.approx(base)
    assert "base-finetuned" in confirmed.index and confirmed.loc["base-finetuned", "confirmed_n"] == 2
    assert confirmed.loc["base-finetuned", "label"] == "ResidualStridedNet (trained) fine-tuned"
    # one trial's ratio is the same number in the Pareto table and in the confirmation
    pareto = pareto_frame(study).set_index("number")
    trials = confirmed[confirmed["number"].notna()].set_index("number")
    assert len(trials) and all(trials.loc[number, "params_ratio"] == pytest.approx(pareto.loc[number, "params_ratio"])
                               for number in trials.index)
    expected = [info.references["base"]["params"] / params for params in pareto["params"]]
    assert pareto["params_ratio"].tolist() == pytest.approx(expected)

    out = tmp_path / "report"
    reported = cli("report", "--study", "tiny", "--storage", storage, "--out", str(out))
    assert reported.returncode == 0, reported.stderr
    page, summary = (out / "index.html").read_text(), (out / "summary.md").read_text()
    assert "minus ResidualStridedNet (trained), points" in page and "U-Net" not in page.replace("U&#8209;Net", "U-Net")
    assert "difference to ResidualStridedNet (trained) paired on the same repeats" in summary
    assert "than ResidualStridedNet (trained)" in summary and "U-Net" not in summary

    # the file retrained since: the study's trials inherited from it as it was, so confirm and export refuse
    again = cli("train", str(config), "--model", "networks:ResidualStridedNet", "--set", "train.steps=5", "--overwrite")
    assert again.returncode == 0 and model.read_bytes() != before
    for args in (("confirm", "--study", "tiny", "--storage", storage, "--seeds", "1", "--trust"),
                 ("export", "--study", "tiny", "--storage", storage, "--trial", str(int(trials.index[0])),
                  "--out", str(tmp_path / "t.pt"), "--trust")):
        refused = cli(*args)
        assert refused.returncode == 2 and not (tmp_path / "t.pt").exists()
        (line,) = refused.stderr.strip().splitlines()
        assert f"its parent file {model.resolve()} changed since the search ran" in line


def test_a_search_on_a_users_builder_trains_only_that_network_as_its_reference(cli, tmp_path):
    import optuna

    from compressor.report import confirmed_frame
    from compressor.study import study_info

    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", space="generic", n_trials=2,
                                   confirm={"seeds": 1, "top": 1})
    searched = cli("search", str(config), "--model", "networks:ResidualStridedNet", "--max-params", "100k",
                   "--init", "inherit", "--set", "train.lr=0.01", "--set", "train.steps=40",
                   "--set", "search.baselines=true")
    assert searched.returncode == 0, searched.stderr
    assert "reference networks:ResidualStridedNet (40 steps, " in searched.stdout
    assert not (tmp_path / "run" / "baselines").exists()  # U-Net and Micro-Net only when search.references asks
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'search.db'}")
    assert list(study_info(study).references) == ["base"]
    confirmed = confirmed_frame(study).set_index("subject")
    # the user's network retrained on the further seed is counted, as every model of the table is
    assert confirmed.loc["base", "label"] == "ResidualStridedNet (base)" and confirmed.loc["base", "confirmed_n"] == 1
    assert confirmed.loc["base-finetuned", "label"] == "ResidualStridedNet (base) fine-tuned"
    assert (tmp_path / "run" / "seed1" / "parents").is_dir()  # the base trained on seed 1 is that repeat's parent


def test_a_search_with_no_candidate_on_its_front_confirms_nothing(cli, tmp_path):
    import optuna

    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", space="generic", n_trials=1,
                                   confirm={"seeds": 1, "top": 1})
    # one step teaches this network nothing: no trial is above the floor, so no candidate to confirm
    searched = cli("search", str(config), "--model", "networks:ResidualStridedNet", "--max-params", "100k",
                   "--set", "train.steps=1")
    assert searched.returncode == 0, searched.stderr
    assert "no trial of study 'tiny' is on the front (finished, in budget, above the floor): nothing to confirm" \
        in searched.stdout
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'search.db'}")
    assert not [key for key in study.user_attrs if key.startswith("confirm/")]  # no reference trained for nothing


def test_finding_the_size_rule_leaves_the_networks_statistics_and_mode_alone():
    from compressor.transforms.graph import trace_with_shapes

    original = SizeCheckedNet().train()  # as a parent being fine-tuned may be; its batch norm keeps statistics
    before = {name: value.clone() for name, value in original.state_dict().items()}
    graph = trace_with_shapes(original, torch.randn(1, 3, 32, 32), transform="skip_fusion")
    assert "multiples of 8 are refused" in graph.meta["size_rule"]  # the probes ran
    assert original.training and graph.training
    assert all(torch.equal(before[name], value) for name, value in original.state_dict().items())
