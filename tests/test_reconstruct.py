"""Reconstruction and feature distillation: what a trained network knows, carried into its compressed copy."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

import compressor
from compressor.compression import compress, from_scratch
from compressor.data import SyntheticConfig
from compressor.errors import ConfigError
from compressor.finetune import calibration_batches
from compressor.train import DistillConfig, TrainConfig, reestimate_batchnorm, train
from compressor.transforms import apply
from compressor.transforms.boundaries import changed_points, shared_boundaries
from compressor.transforms.feature_hints import FeatureHints, pixel_weights
from compressor.transforms.reconstruct import output_gap, reconstruct, teacher_logits


@pytest.fixture(scope="module")
def data():
    return SyntheticConfig(labels="binary", patch_size=32, train_images=32, val_images=1, val_size=48).build()


def _config(**changes) -> TrainConfig:
    settings = {"steps": 4, "batch_size": 4, "progress": False, "eval_window": 48, "eval_overlap": 0, "threads": 1}
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    network = compressor.unet(in_channels=3, base_width=8, norm="batch")
    train(network, data, _config(steps=40, lr=3e-3))
    return network.eval()


@pytest.fixture(scope="module")
def images(data):
    return torch.cat(calibration_batches(data, 4, batch_size=4, seed=0))


def _student(teacher, data, recipe):
    torch.manual_seed(0)
    student, _ = apply(teacher, recipe, (1, 3, 32, 32), init="inherit", count_flops=False)
    reestimate_batchnorm(student, data, batches=4, batch_size=4)
    return student


def test_changed_points_are_the_replaced_layers_or_their_blocks_never_nested(teacher, data, images):
    student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
    shared = shared_boundaries(teacher, student, images[:1])
    layers = changed_points(teacher, student, shared, "layer")
    blocks = changed_points(teacher, student, shared, "block")
    replaced = [name for name, module in student.named_modules() if type(module).__name__ == "Fire"]
    assert layers == [name for name in shared if name in replaced] and len(layers) == len(replaced) > 4
    # each block encloses a replaced layer, is shared by both networks, and none lies inside another
    assert blocks and all(name in shared for name in blocks)
    assert all(any(layer.startswith(block + ".") or layer == block for block in blocks) for layer in layers)
    assert not any(a != b and a.startswith(b + ".") for a in blocks for b in blocks)
    assert set(blocks) != set(layers)  # a block is more than the layer: its norm and activation come with it
    # the teacher against itself: nothing changed, nothing to reconstruct
    assert changed_points(teacher, copy.deepcopy(teacher), shared_boundaries(teacher, teacher, images[:1]), "block") == []


def test_the_output_gap_against_the_teachers_logits_given_once_is_the_same_without_running_it(teacher, data, images):
    """A search compares every candidate with the parent's logits on its calibration patches,
    computed once (teacher_logits): the error is the one output_gap measures by running the parent."""
    student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
    targets = teacher_logits(teacher, images, 4)
    calls = []
    hook = teacher.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        given = output_gap(teacher, student, images, 4, targets=targets)
        assert calls == []  # the teacher was not run
        assert given == output_gap(teacher, student, images, 4) and len(calls) == len(images) // 4  # once a batch
    finally:
        hook.remove()
    assert given > 0.01 and output_gap(teacher, copy.deepcopy(teacher), images, 4, targets=targets) == 0.0
    other = _student(teacher, data, [{"name": "separable"}])
    assert output_gap(teacher, other, images, 4, targets=targets) == output_gap(teacher, other, images, 4) != given
    # the teacher's output at another batch size, or on other images, is refused rather than half-used
    for wrong in (teacher_logits(teacher, images, 8), teacher_logits(teacher, images[:8], 4)):
        with pytest.raises(ValueError, match="not the teacher's output on these images at this batch size"):
            output_gap(teacher, student, images, 4, targets=wrong)


@pytest.mark.parametrize("method,source", [("hints", "student"), ("block", "student")])
def test_reconstruction_brings_the_student_closer_to_the_teacher(teacher, data, images, method, source):
    student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
    start = output_gap(teacher, student, images, 4)
    report = reconstruct(teacher, student, images, method=method, source=source, steps=60, batch_size=4)
    assert report.output_error_before == pytest.approx(start, abs=1e-5)
    assert report.points and report.output_error_after < report.output_error_before
    assert report.output_error_after == pytest.approx(output_gap(teacher, student, images, 4), abs=1e-5)
    assert set(report.errors_after) == set(report.points)
    if method == "block":  # each block trained on its own: most come closer
        improved = [name for name in report.points if report.errors_after[name] < report.errors_before[name]]
        assert len(improved) >= len(report.points) / 2
    assert report.far(1e-9) == report.errors_after and report.far(1e9) == {}


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("method", ["hints", "block"])
def test_in_bf16_only_the_students_training_passes_run_under_autocast(teacher, data, images, method, cache):
    """The fit's forward and backward passes in bf16; the teacher, the losses that decide whether a fit is kept,
    the batch-norm re-estimation and every error reported in fp32 (the teacher's tensors kept or run each step)."""
    from compressor.batchnorm import reestimate_on
    from compressor.transforms.reconstruct import _point_errors

    passes: dict[str, set] = {}
    for precision in ("fp32", "bf16"):
        student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
        came = copy.deepcopy(student)
        with _conv_passes(student) as students, _conv_passes(teacher) as teachers:
            report = reconstruct(teacher, student, images, method=method, steps=12, batch_size=4, precision=precision,
                                 **({} if cache else {"teacher_cache_bytes": 0}))
        passes[precision] = students
        assert report.precision == precision and {dtype for dtype, _ in teachers} == {torch.float32}
        assert report.output_error_after < report.output_error_before  # the fit still brings it closer
        assert report.output_error_before == pytest.approx(output_gap(teacher, came, images, 4), abs=1e-6)
        assert report.output_error_after == pytest.approx(output_gap(teacher, student, images, 4), abs=1e-6)
        assert report.errors_before == pytest.approx(_point_errors(teacher, came, images, report.points, 4), abs=2e-6)
        assert report.errors_after == pytest.approx(_point_errors(teacher, student, images, report.points, 4), abs=2e-6)
        again = copy.deepcopy(student)  # the statistics an fp32 re-estimation of the final weights gives
        reestimate_on(again, images.split(4))
        assert all(torch.equal(value, again.state_dict()[key]) for key, value in student.state_dict().items()
                   if "running" in key)
    assert passes["fp32"] == {(torch.float32, False), (torch.float32, True)}
    assert passes["bf16"] == {(torch.float32, False), (torch.bfloat16, True)}  # no pass without gradients in bf16
    with pytest.raises(ValueError, match="precision must be fp32 or bf16, got 'fp16'"):
        reconstruct(teacher, _student(teacher, data, [{"name": "separable"}]), images, method=method, precision="fp16")


@contextlib.contextmanager
def _conv_passes(model: nn.Module):
    """The set of ``(dtype, gradients enabled)`` of every output of ``model``'s convolutions while in the block."""
    seen: set = set()
    hooks = [module.register_forward_hook(lambda module, args, output: seen.add((output.dtype, torch.is_grad_enabled())))
             for module in model.modules() if isinstance(module, nn.Conv2d)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def test_a_point_fed_the_teachers_input_falls_back_to_its_own_where_widths_changed(teacher, data, images):
    student = _student(teacher, data, [{"name": "skip_fusion"}, {"name": "fire", "squeeze_ratio": 0.5}])
    report = reconstruct(teacher, student, images, method="layer", source="teacher", steps=5, batch_size=4)
    assert report.points and set(report.errors_after) <= set(report.points)  # ran through, every point measured
    narrower = [name for name in report.points
                if getattr(student.get_submodule(name), "in_channels", None) != getattr(teacher.get_submodule(name), "in_channels", None)]
    assert narrower  # points whose teacher input (the concatenation) the student's layer cannot take


def test_nothing_is_changed_where_nothing_can_be_gained(teacher, data, images):
    exact = _student(teacher, data, [])  # the teacher's copy: every loss is already 0
    before = copy.deepcopy(exact.state_dict())
    report = reconstruct(teacher, exact, images, method="hints", steps=5, batch_size=4)
    assert report.points == [] and all(torch.equal(before[key], value) for key, value in exact.state_dict().items())
    student = _student(teacher, data, [{"name": "separable"}])
    kept = copy.deepcopy(student.state_dict())
    none = reconstruct(teacher, student, images, method="none")
    assert none.points == [] and none.output_error_after == none.output_error_before
    assert all(torch.equal(kept[key], value) for key, value in student.state_dict().items())
    with pytest.raises(ValueError, match="method must be one of none, layer, block, hints"):
        reconstruct(teacher, student, images, method="blocks")


def test_pixel_weights_give_every_predicted_class_the_same_total_weight():
    class Fixed(nn.Module):
        def forward(self, x):  # class 1 on 1 pixel in 16: the rare class
            logits = torch.zeros(x.shape[0], 2, 4, 4)
            logits[:, 0] = 1.0
            logits[:, 1, 0, 0] = 2.0
            return logits

    weights = pixel_weights(Fixed(), torch.zeros(3, 1, 4, 4))
    assert weights.shape == (3, 1, 4, 4) and float(weights.mean()) == pytest.approx(1.0)
    rare, common = float(weights[:, 0, 0, 0].sum()), float(weights.sum()) - float(weights[:, 0, 0, 0].sum())
    assert rare == pytest.approx(common)  # 3 rare pixels weigh as much as 45 background ones


def test_feature_distillation_pulls_the_changed_blocks_towards_the_teachers(teacher, data, images):
    student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
    hints = FeatureHints.between(student, teacher, images[:1])
    assert hints is not None and len(hints.points) > 2

    def hint_loss(network):
        with torch.no_grad(), FeatureHints.tap(hints, network) as ours, FeatureHints.tap(hints, teacher) as theirs:
            network.eval()
            network(images)
            logits = teacher(images)
        return float(hints.loss(ours, theirs, logits))

    distill = DistillConfig(teacher="parent", weight=0.5)
    runs = {}
    for weight in (0.0, 5.0):
        network = copy.deepcopy(student)
        train(network, data, _config(steps=15, lr=1e-3, distill=DistillConfig(teacher="parent", weight=0.5, feature_weight=weight)),
              teacher=teacher)
        runs[weight] = hint_loss(network)
    assert runs[5.0] < runs[0.0]
    assert distill.feature_weight == 0.0  # off unless asked
    with pytest.raises(ConfigError, match="feature_weight must be >= 0"):
        DistillConfig(teacher="parent", feature_weight=-1)


def test_from_scratch_keeps_the_architecture_and_forgets_the_weights(teacher):
    fresh = from_scratch(teacher)
    assert [name for name, _ in fresh.named_parameters()] == [name for name, _ in teacher.named_parameters()]
    same = [name for (name, a), (_, b) in zip(fresh.named_parameters(), teacher.named_parameters())
            if a.numel() > 1 and torch.equal(a, b)]
    assert same == []
    norms = [module for module in fresh.modules() if isinstance(module, nn.BatchNorm2d)]
    assert norms and all(float(norm.running_var.mean()) == 1.0 for norm in norms)


def _experiment(**finetune):
    return compressor.Experiment.from_dict({
        "data": {"name": "synthetic", "labels": "binary", "patch_size": 32, "train_images": 32, "val_images": 1,
                 "val_size": 48},
        "train": {"steps": 3, "batch_size": 4, "progress": False, "eval_window": 48, "eval_overlap": 0, "threads": 1},
        "finetune": {"reconstruct_batches": 4, "reconstruct_steps": 40, **finetune},
    })


def test_compress_scores_the_teacher_the_student_and_the_scratch_network_in_one_precision(teacher, data, monkeypatch):
    """With the fine-tuning in bf16, every score compress compares is taken in bf16: the teacher, the student
    as inherited and fine-tuned, and the same architecture from scratch (which trains by the train section)."""
    import compressor.compression as compression
    import compressor.train.loop as loop

    asked = []

    def spying(evaluate):
        def spy(model, data, config, **kwargs):
            asked.append(config.evaluation_precision)
            return evaluate(model, data, config, **kwargs)
        return spy

    monkeypatch.setattr(compression, "evaluate", spying(compression.evaluate))
    monkeypatch.setattr(loop, "evaluate", spying(loop.evaluate))
    compress(teacher, [{"name": "separable"}], _experiment(reconstruct="none", precision="bf16"), data=data,
             compare_scratch=True)
    assert len(asked) >= 4 and set(asked) == {"bf16"}


def test_compress_reconstructs_by_default_and_says_whether_knowledge_survived(teacher, data):
    result = compress(teacher, [{"name": "fire", "squeeze_ratio": 0.5}], _experiment(), data=data, compare_scratch=True)
    assert result.reconstruction is not None and result.reconstruction.method == "hints"
    assert result.output_error < result.start_error
    verdict, *lines = result.knowledge_lines()
    assert verdict == result.verdict_line() and result.learned == (result.student_metrics.score > result.floor.threshold)
    assert result.bn_reestimated == 16  # the default, on a student with batch norms: said, since it is no step of the recipe
    assert lines[0].startswith(f"output error against the teacher: {result.start_error:.3f} after the recipe and its "
                               "batch norms re-estimated (16 batches), "
                               f"{result.output_error:.3f} after reconstruction (hints")
    assert f"{result.student_metrics.score - result.teacher_metrics.score:+.3f}" in lines[-1]
    assert result.scratch is not None and result.scratch.steps_done == result.result.steps_done == 3
    assert "against the same architecture from scratch (3 steps)" in lines[-1]
    assert "same architecture from scratch, 3 steps" in result.table()
    stored = result.to_dict()
    assert stored["reconstruction"]["method"] == "hints" and stored["scratch"]["train"]["steps_done"] == 3
    # with a test region, the test numbers get their own line (here the validation metrics stand in for them)
    import dataclasses

    tested = dataclasses.replace(result, teacher_test_metrics=result.teacher_metrics,
                                 student_test_metrics=result.inherited_metrics, scratch_test_metrics=result.scratch.metrics)
    *_, validation, test = tested.knowledge_lines()
    assert validation.startswith("student against teacher, validation: ")
    assert test == (f"student against teacher, test: {result.inherited_metrics.score - result.teacher_metrics.score:+.3f} "
                    f"{result.teacher_metrics.score_name} (fine-tuned {result.inherited_metrics.score:.3f}, teacher "
                    f"{result.teacher_metrics.score:.3f}); against scratch "
                    f"{result.inherited_metrics.score - result.scratch.metrics.score:+.3f} (scratch {result.scratch.metrics.score:.3f})")
    assert stored["starts_close"] == (result.output_error <= 1.0)
    # the threshold decides the warning
    strict = compress(teacher, [{"name": "fire", "squeeze_ratio": 0.5}],
                      _experiment(reconstruct="none", max_start_error=1e-6), data=data)
    assert strict.reconstruction is None and strict.starts_close is False
    assert any(line.startswith("the student does not start close to the teacher (output error")
               and "finetune.max_start_error 1e-06" in line and "try finetune.reconstruct: hints or block" in line
               for line in strict.knowledge_lines())
    lenient = compress(teacher, [{"name": "fire", "squeeze_ratio": 0.5}],
                       _experiment(reconstruct="none", max_start_error=100), data=data)
    assert lenient.starts_close and not any("does not start close" in line for line in lenient.knowledge_lines())


@pytest.mark.parametrize("key,value,message", [
    ("reconstruct", "all", "finetune.reconstruct must be one of none, layer, block, hints, lstsq or null"),
    ("reconstruct_source", "parent", "finetune.reconstruct_source must be one of student, teacher"),
    ("reconstruct_steps", 0, "finetune.reconstruct_steps"),
    ("feature_weight", -0.5, "finetune.feature_weight"),
    ("max_start_error", 0, "finetune.max_start_error"),
])
def test_bad_reconstruction_settings_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _experiment(**{key: value})


def test_settings_at_their_defaults_leave_stored_keys_alone():
    from compressor.experiment.typed import to_data

    plain = to_data(compressor.Experiment.from_dict({}).finetune)
    assert not {"reconstruct", "reconstruct_steps", "feature_weight", "max_start_error"} & set(plain)
    assert to_data(_experiment(reconstruct="block").finetune)["reconstruct"] == "block"


def test_compress_cli_prints_what_the_student_kept_and_refuses_a_bad_method(cli, tmp_path):
    from search_helpers import write_tiny_experiment

    import compressor

    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    out, teacher = tmp_path / "small.pt", tmp_path / "teacher.pt"
    compressor.save_model(teacher, compressor.unet(base_width=8))  # a user's file (the registered U-Net: test_distill_compress)
    result = cli("compress", str(teacher), str(config), "--transform", "fire:squeeze_ratio=0.5", "--steps", "3",
                 "--reconstruct", "block", "--feature-weight", "1", "--compare-scratch", "--out", str(out),
                 "--set", "finetune.reconstruct_steps=3", "--set", "finetune.reconstruct_batches=1")
    stored = compressor.load_saved(out).metadata
    assert result.returncode == (0 if stored["learned"] else 3), result.stderr
    lines = result.stdout.splitlines()
    error = next(line for line in lines if line.startswith("output error against the teacher: "))
    assert "after the recipe, " in error and "after reconstruction (block, " in error
    assert any(line.startswith("student against teacher: ") and "against the same architecture from scratch (3 steps)" in line
               for line in lines)
    assert "same architecture from scratch, 3 steps" in result.stdout
    assert stored["reconstruction"]["method"] == "block" and stored["reconstruction"]["steps"] == 3
    assert stored["scratch"]["train"]["steps_done"] == 3 and isinstance(stored["starts_close"], bool)
    for flag, value, expected in (("--reconstruct", "blocks", "argument --reconstruct: invalid choice: 'blocks'"),
                                  ("--feature-weight", "-1", "--feature-weight")):
        refused = cli("compress", "unet", str(config), "--transform", "fire", flag, value)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr  # argparse's usage, then the one error line
        assert refused.stderr.strip().splitlines()[-1].startswith("compressor compress: error: ")
        assert expected in refused.stderr.strip().splitlines()[-1]


def test_a_search_records_how_far_each_candidate_starts_from_its_parent(tmp_path):
    from search_helpers import tiny_experiment

    from compressor.pipeline import run_search
    from compressor.search.progress import trial_line

    experiment = tiny_experiment(tmp_path, n_trials=3, init="inherit", overrides=(
        "finetune.reconstruct=hints", "finetune.reconstruct_steps=5", "finetune.reconstruct_batches=1",
        "finetune.max_start_error=1e-6"))
    lines: list[str] = []
    result = run_search(experiment, echo=lines.append)
    trained = [record for record in result.records if record.status == "complete"]
    assert trained
    for record in trained:
        assert record.start_error is not None and record.start_error > 1e-6 and record.starts_close is False
        assert record.reconstruct_seconds is not None and record.reconstruct_seconds > 0
        assert f"(started far from the parent: output error {record.start_error:.2f})" in trial_line(record, metric_label="IoU")
    # without reconstruction (a search's default) the error is still measured, and nothing is reconstructed
    plain = run_search(tiny_experiment(tmp_path / "plain", n_trials=2, init="inherit"), echo=lambda line: None)
    measured = [record for record in plain.records if record.status == "complete"]
    assert measured and all(record.start_error is not None and record.reconstruct_seconds is None for record in measured)
    assert all(record.starts_close == (record.start_error <= 1.0) for record in measured)


def test_compress_and_a_searchs_candidates_reconstruct_in_the_fine_tunings_precision(tmp_path, teacher, data, monkeypatch):
    """``finetune.precision: bf16`` reconstructs under bf16 autocast, as the fine-tuning runs; a study made
    before (build version 5) keeps reconstructing its candidates in fp32."""
    import dataclasses

    from search_helpers import tiny_experiment

    from compressor.candidates.setup import prepare, start_candidate
    from compressor.candidates.versions import RECONSTRUCTS_IN_PRECISION
    from compressor.transforms import Recipe

    fire = [{"name": "fire", "squeeze_ratio": 0.5}]
    for precision, expected in (("bf16", "bf16"), ("fp32", "fp32"), (None, "fp32")):  # None: the train: section's
        result = compress(teacher, fire, _experiment(precision=precision, reconstruct_steps=3), data=data)
        assert result.reconstruction.precision == expected
        line = next(line for line in result.knowledge_lines() if line.startswith("output error against the teacher"))
        assert (", 3 steps, bf16, " in line) == (expected == "bf16")  # the report says so
    for supported in (True, False):  # auto: bf16 where the processor runs it
        monkeypatch.setattr("compressor.train.precision.bf16_supported", lambda device, supported=supported: supported)
        result = compress(teacher, fire, _experiment(precision="auto", reconstruct_steps=3), data=data)
        assert result.reconstruction.precision == ("bf16" if supported else "fp32")
    monkeypatch.undo()
    setup = prepare(tiny_experiment(tmp_path, init="inherit", overrides=(
        "finetune.reconstruct=hints", "finetune.reconstruct_steps=2", "finetune.reconstruct_batches=1",
        "finetune.precision=bf16")), echo=lambda line: None)
    seen: dict[int, set] = {}
    for version in (RECONSTRUCTS_IN_PRECISION, RECONSTRUCTS_IN_PRECISION - 1):
        network = dataclasses.replace(setup, build_version=version).build(Recipe.from_data(fire))
        with _conv_passes(network) as passes:
            start_candidate(dataclasses.replace(setup, build_version=version), network)
        seen[version] = {dtype for dtype, _ in passes}
    assert torch.bfloat16 in seen[RECONSTRUCTS_IN_PRECISION]
    assert seen[RECONSTRUCTS_IN_PRECISION - 1] == {torch.float32}


def test_a_search_runs_its_parent_on_the_calibration_patches_once_for_all_candidates(tmp_path):
    from search_helpers import tiny_experiment

    from compressor.candidates.setup import prepare, start_candidate
    from compressor.transforms import Recipe

    setup = prepare(tiny_experiment(tmp_path, init="inherit"), echo=lambda line: None)
    calls, parent = [], setup.parent.model
    hook = parent.register_forward_hook(lambda module, args, output: calls.append(1) if module is parent else None)
    try:  # (a candidate is a deep copy of the parent: the hook comes with it, and counts nothing there)
        errors, started = [], []
        for recipe in ([{"name": "fire", "squeeze_ratio": 0.5}], [{"name": "separable"}]):
            network = setup.build(Recipe.from_data(recipe))  # (building runs the parent: not counted)
            before = len(calls)
            errors.append(start_candidate(setup, network).error)
            started.append(len(calls) - before)
            assert errors[-1] == output_gap(setup.parent.model, network, torch.cat(setup.calibration),
                                            setup.train_config.batch_size)  # what running the parent again gives
    finally:
        hook.remove()
    assert started == [1, 0]  # one calibration batch, run for the first candidate only
    assert errors[0] != errors[1]


def test_a_reconstruction_that_ends_no_closer_leaves_the_student_as_it_came(teacher, data, images):
    student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
    start = copy.deepcopy(student.state_dict())
    for method in ("hints", "block"):  # a rate that wrecks every fit
        report = reconstruct(teacher, student, images, method=method, steps=3, lr=1e3, batch_size=4)
        assert report.output_error_after == report.output_error_before and report.errors_after == report.errors_before
        assert all(torch.equal(start[key], value) for key, value in student.state_dict().items())  # statistics too


def test_only_batch_first_tensors_are_compared():
    class PerPixel(nn.Module):  # a linear layer over (N*H*W, C): rows are pixels, not images
        def __init__(self, width):
            super().__init__()
            self.stem, self.mix, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 4), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.stem(x)
            n, c, h, w = y.shape
            y = self.mix(y.permute(0, 2, 3, 1).reshape(-1, c)).reshape(n, h, w, c).permute(0, 3, 1, 2)
            return self.head(y)

    torch.manual_seed(0)
    teacher, student = PerPixel(4), PerPixel(4)
    student.head.load_state_dict(teacher.head.state_dict())
    assert shared_boundaries(teacher, student, torch.randn(3, 3, 8, 8)) == ["stem", "head"]
    assert shared_boundaries(teacher, student, torch.randn(1, 3, 8, 8)) == ["stem", "head"]  # one image run twice
    report = reconstruct(teacher, student, torch.randn(6, 3, 8, 8), method="block", steps=3, batch_size=4)
    assert report.points == ["stem"]


def test_compare_scratch_trains_without_the_experiments_teacher_and_features_need_distillation(teacher, data):
    import dataclasses

    experiment = _experiment(reconstruct="none")
    distilled = dataclasses.replace(experiment, train=dataclasses.replace(
        experiment.train, distill=DistillConfig(teacher="unet", weight=0.5)))
    result = compress(teacher, [{"name": "separable"}], distilled, data=data, compare_scratch=True)
    assert result.scratch is not None and result.scratch.steps_done == 3
    with pytest.raises(ConfigError, match="finetune.feature_weight distills features from the teacher"):
        compress(teacher, [{"name": "separable"}], _experiment(feature_weight=1.0), data=data, distill=False)


def test_a_trial_without_a_measured_start_error_prints_no_verdict():
    from compressor.search.progress import trial_line
    from compressor.study import TrialRecord

    record = TrialRecord(number=1, status="complete", params=10, flops=10, metric=0.2, wall_seconds=1.0,
                         start_error=None, starts_close=False)
    assert "started far" not in trial_line(record, metric_label="IoU")
    record.start_error = 0.73
    assert "(started far from the parent: output error 0.73)" in trial_line(record, metric_label="IoU")


@pytest.mark.skipif(not __import__("third_party").available("smp Unet-resnet18"), reason="needs segmentation_models_pytorch")
def test_on_a_residual_network_the_blocks_are_its_residual_blocks_and_hints_bring_it_closer():
    import third_party

    torch.manual_seed(0)
    from compressor.batchnorm import reestimate_on

    images = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    teacher = third_party.small_smp_unet(classes=2, in_channels=3)
    reestimate_on(teacher, images.split(4))  # statistics of its own tensors: a network whose output means something
    student, _ = apply(teacher.eval(), [{"name": "separable"}], (1, 3, 64, 64), init="inherit", count_flops=False)
    reestimate_on(student, images.split(4))
    blocks = changed_points(teacher, student, shared_boundaries(teacher, student, images[:2]), "block")
    assert "encoder.layer1.0" in blocks and "encoder.layer2.1" in blocks  # resnet BasicBlocks: conv, bn, relu, add
    assert not any(name.startswith("encoder.layer1.0.") for name in blocks)
    report = reconstruct(teacher, student, images, method="hints", steps=60, batch_size=4)
    assert report.output_error_after < 0.9 * report.output_error_before


def _without_and_with_the_cache(teacher, data, images, method: str, steps: int) -> list[tuple]:
    """``(report, student weights, teacher passes started)`` of ``reconstruct`` with the teacher run for every
    use (``teacher_cache_bytes=0``, as before it was kept) and with its tensors kept, on the same student."""
    calls = []  # passes started (one that stops at its point never returns); not its copies'
    handle = teacher.register_forward_pre_hook(lambda module, *_: calls.append(1) if module is teacher else None)
    try:
        fits = []
        for limit in (0, 2**30):
            student = _student(teacher, data, [{"name": "fire", "squeeze_ratio": 0.5}])
            calls.clear()
            report = reconstruct(teacher, student, images, method=method, steps=steps, batch_size=4,
                                 teacher_cache_bytes=limit)
            fits.append((report, student.state_dict(), len(calls)))
    finally:
        handle.remove()
    return fits


def test_hints_runs_the_teacher_once_per_image_and_fits_as_if_it_ran_it_every_step(teacher, data, images):
    """The teacher's tensors on the calibration images are kept (TEACHER_CACHE_BYTES) instead of
    recomputed at each Adam step and for each measure of the errors; the fit is the same up to float rounding."""
    (every, every_state, every_calls), (kept, kept_state, kept_calls) = _without_and_with_the_cache(
        teacher, data, images, "hints", 30)
    assert every_calls - kept_calls >= 30  # one teacher pass per Adam step saved
    # one pass over the images in all: the errors before and after and the output read what it kept
    assert kept_calls == len(images.split(4)) + 1  # and once on 2 images, to find the points (shared_boundaries)
    assert kept.errors_before == pytest.approx(every.errors_before, rel=1e-5)
    assert kept.errors_after == pytest.approx(every.errors_after, rel=1e-3)
    assert kept.output_error_after < kept.output_error_before
    assert kept.output_error_after == pytest.approx(every.output_error_after, rel=1e-3)
    for name, tensor in kept_state.items():
        assert torch.allclose(tensor.float(), every_state[name].float(), atol=1e-4, rtol=1e-3), name


@pytest.mark.parametrize("method", ["layer", "block"])
def test_point_by_point_the_kept_teacher_outputs_are_the_targets_and_fit_the_same(teacher, data, images, method):
    """Fed its own input (source student), each point's target is the teacher's output there, kept once
    instead of computed again point by point; the same fit."""
    (every, every_state, every_calls), (kept, kept_state, kept_calls) = _without_and_with_the_cache(
        teacher, data, images, method, 10)
    assert kept_calls == len(images.split(4)) + 1 < every_calls  # the teacher run once over the images
    assert len(kept.points) > 1 and kept.errors_after == pytest.approx(every.errors_after, rel=1e-5)
    for name, tensor in kept_state.items():
        assert torch.allclose(tensor.float(), every_state[name].float(), atol=1e-6, rtol=1e-5), name


class _NotBatchFirst(torch.nn.Module):
    def forward(self, x):
        return x.flatten(2).permute(2, 0, 1)  # (HW, N, C), as an attention block without batch_first


class _SometimesRuns(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Identity(), torch.nn.Identity()

    def forward(self, x):
        return self.a(x) if x[0, 0, 0, 0] > 0 else self.b(x)  # point a runs on some batches only


def test_the_teachers_tensors_are_kept_only_where_they_can_be_taken_row_by_row():
    from compressor.transforms.reconstruct import _teacher_tensors

    images = torch.ones(8, 3, 4, 4)
    kept = _teacher_tensors(torch.nn.Sequential(torch.nn.Identity(), torch.nn.ReLU()), images, ["0"], 4, 2**20)
    assert kept is not None and kept[0]["0"].shape == (8, 3, 4, 4) and kept[1].shape == (8, 3, 4, 4)
    distinct = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))  # batches of 4, 4 and 2
    features, output = _teacher_tensors(torch.nn.Sequential(torch.nn.Tanh(), torch.nn.ReLU()), distinct, ["0"], 4, 2**20)
    assert torch.equal(features["0"], distinct.tanh()) and torch.equal(output, distinct.tanh().relu())  # each row in place
    assert _teacher_tensors(torch.nn.Sequential(torch.nn.Identity()), images, ["0"], 4, 100) is None  # over the limit
    layout = torch.nn.Sequential(_NotBatchFirst(), torch.nn.Identity())
    assert _teacher_tensors(layout, images, ["0"], 4, 2**20) is None
    mixed = images.clone()
    mixed[4:] = -1
    assert _teacher_tensors(_SometimesRuns(), mixed, ["a", "b"], 4, 2**20) is None
    assert _teacher_tensors(_RunsTwiceSometimes(), mixed, ["a"], 4, 2**20) is None  # which call's tensor: no one answer


class _RunsTwiceSometimes(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Tanh()

    def forward(self, x):
        return self.a(self.a(x)) if x[0, 0, 0, 0] < 0 else self.a(x)  # once on the first batch, twice on the second


def test_compress_with_lstsq_says_it_solved_layers_in_closed_form(teacher, data):
    import dataclasses

    result = compress(teacher, [{"name": "fire", "squeeze_ratio": 0.5}], _experiment(reconstruct="lstsq"), data=data)
    rec = result.reconstruction
    assert rec is not None and rec.method == "lstsq" and result.output_error < result.start_error
    _, line, *_ = result.knowledge_lines()
    assert line.startswith(f"output error against the teacher: {result.start_error:.3f} after the recipe and its "
                           "batch norms re-estimated (16 batches), "
                           f"{result.output_error:.3f} after reconstruction (lstsq, {len(rec.points)} changed layers, "
                           "closed form, ")
    assert rec.norms_reestimated is not None  # this U-Net has batch norms: one way or the other, said
    for kept_as_solved in (False, True):  # what the line says of each choice
        said = dataclasses.replace(result, reconstruction=dataclasses.replace(rec, norms_reestimated=not kept_as_solved))
        assert ("closed form, batch norms as solved, " in said.knowledge_lines()[1]) == kept_as_solved
    far = compress(teacher, [{"name": "fire", "squeeze_ratio": 0.5}],
                   _experiment(reconstruct="lstsq", max_start_error=1e-6), data=data)
    assert "try finetune.reconstruct: hints, or a milder recipe" in far.knowledge_lines()[2]


def test_a_search_keeps_lstsqs_norms_as_solved_only_in_a_study_of_build_version_7_or_later(tmp_path, monkeypatch):
    import dataclasses

    from search_helpers import tiny_experiment

    import compressor.candidates.setup as candidates
    from compressor.candidates.setup import prepare
    from compressor.candidates.versions import LSTSQ_CHOOSES_NORMS
    from compressor.transforms import Recipe

    setup = prepare(tiny_experiment(tmp_path, init="inherit", overrides=(
        "finetune.reconstruct=lstsq", "finetune.reconstruct_batches=1")), echo=lambda line: None)
    asked = []
    real = candidates.reconstruct

    def recorded(*args, **kwargs):  # the real reconstruction, its settings noted
        asked.append(kwargs.get("choose_norms"))
        return real(*args, **kwargs)

    monkeypatch.setattr(candidates, "reconstruct", recorded)
    for version in (LSTSQ_CHOOSES_NORMS, LSTSQ_CHOOSES_NORMS - 1):
        study = dataclasses.replace(setup, build_version=version)
        candidates.start_candidate(study, study.build(Recipe.from_data([{"name": "separable"}])))
    assert asked == [True, False]
