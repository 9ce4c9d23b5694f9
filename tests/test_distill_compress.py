"""Distillation, batch-norm re-estimation, trained parents and ``compress``: real training on synthetic scenes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from search_helpers import tiny_experiment, write_tiny_experiment

import compressor
from compressor.compression import compress
from compressor.data import SyntheticConfig
from compressor.errors import ConfigError
from compressor.experiment import ModelConfig, ensure_parent
from compressor.train import (
    DistillConfig,
    TrainConfig,
    distillation_loss,
    evaluate,
    reestimate_batchnorm,
    train,
)


@pytest.fixture(scope="module")
def data():
    return SyntheticConfig(labels="binary", patch_size=32, train_images=32, val_images=1, val_size=48).build()


def _config(**changes) -> TrainConfig:
    settings = {"steps": 4, "batch_size": 4, "progress": False, "eval_window": 48, "eval_overlap": 0, "threads": 1}
    return TrainConfig(**{**settings, **changes})


def test_distillation_loss_is_zero_on_the_teacher_and_its_gradient_pulls_towards_it():
    torch.manual_seed(0)
    teacher = torch.randn(2, 3, 8, 8)
    student = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert float(distillation_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)
    loss = distillation_loss(student, teacher, 2.0)
    loss.backward()
    assert float(loss.detach()) > 0 and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient lowers the loss: it points towards the teacher
        stepped = student - 0.5 * student.grad / student.grad.norm()
    assert float(distillation_loss(stepped, teacher, 2.0)) < float(loss.detach())
    # the teacher gets no gradient: it is a target
    teacher_param = teacher.clone().requires_grad_(True)
    assert not distillation_loss(student.detach(), teacher_param, 2.0).requires_grad


def test_the_distillation_gradient_keeps_its_scale_at_any_temperature():
    """Softened targets shrink the gradient by 1/T^2 (Hinton et al.); the loss is scaled by T^2 so that
    changing the temperature does not change the step size of the distillation term."""
    torch.manual_seed(0)
    teacher = torch.randn(2, 3, 8, 8)
    norms = {}
    for temperature in (4.0, 8.0):
        student = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        distillation_loss(student, teacher, temperature).backward()
        norms[temperature] = float(student.grad.norm())
    assert 0.8 < norms[8.0] / norms[4.0] < 1.25, norms  # without T^2 it would be about 1/4


def test_distilling_pulls_the_student_towards_the_teachers_predictions(data):
    # A teacher with confident predictions of its own (not the labels'): the first channel's sign.
    teacher = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        teacher.weight.zero_()
        teacher.weight[0, 0], teacher.weight[1, 0] = 4.0, -4.0
        teacher.bias.zero_()
    images = torch.stack([data.train[index][0] for index in range(8)])

    def disagreement(student):
        with torch.no_grad():
            return float(distillation_loss(student.eval()(images), teacher(images), 1.0))

    students = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(1)
        student = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
        result = train(student, data, _config(steps=40, lr=1e-2, distill=DistillConfig(teacher="given", weight=weight)),
                       teacher=teacher)
        assert all(torch.isfinite(torch.tensor(result.losses)))
        students[weight] = disagreement(student)
    assert students[5.0] < 0.7 * students[0.0]


def test_a_teacher_whose_output_does_not_fit_is_refused_in_one_line(data):
    student = compressor.micronet(in_channels=3, base_width=4, norm="batch")
    wrong = compressor.micronet(in_channels=3, num_classes=3, base_width=4)
    with pytest.raises(ConfigError) as error:
        train(student, data, _config(distill=DistillConfig(teacher="x")), teacher=wrong)
    message = str(error.value)
    assert "\n" not in message and "(4, 3, 32, 32)" in message and "(4, 2, 32, 32)" in message
    with pytest.raises(ConfigError, match="no teacher model was given"):
        train(student, data, _config(distill=DistillConfig(teacher="x")))


def test_batch_norm_re_estimation_sets_the_statistics_and_leaves_the_batches_alone(data):
    torch.manual_seed(0)
    model = compressor.micronet(in_channels=3, base_width=4, norm="batch")
    norm = model.encoder[0].squeeze.norm if hasattr(model.encoder[0], "squeeze") else next(
        module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d))
    assert float(norm.running_var.sub(1).abs().max()) == 0  # fresh: unit variance
    assert reestimate_batchnorm(model, data, batches=3, batch_size=4) > 0
    assert float(norm.running_var.sub(1).abs().max()) > 1e-3 and norm.momentum == 0.1
    # Training in train mode normalises with batch statistics: the losses are the same with and
    # without re-estimation only if it drew its patches from its own generator.
    losses = []
    for batches in (0, 3):
        torch.manual_seed(0)
        network = compressor.micronet(in_channels=3, base_width=4, norm="batch")
        losses.append(train(network, data, _config(bn_reestimate=batches)).losses)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_batch_norm_re_estimation_averages_over_the_batches_not_a_moving_average(data):
    """The statistics are the average over the batches (momentum None), not an exponential average
    from the reset values: behind a layer that adds 5 to the normalized patches, the running
    mean comes out near 5 (a moving average of 3 batches would give about 1.4)."""
    shift = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        shift.weight.copy_(torch.eye(3)[:, :, None, None])
        shift.bias.fill_(5.0)
    model = torch.nn.Sequential(shift, torch.nn.BatchNorm2d(3))
    reestimate_batchnorm(model, data, batches=3, batch_size=4)
    assert torch.allclose(model[1].running_mean, torch.full((3,), 5.0), atol=0.5), model[1].running_mean
    assert model[1].momentum == 0.1  # put back for training


def test_compress_with_exact_inheritance_keeps_the_teachers_predictions(data):
    torch.manual_seed(0)
    teacher = compressor.unet(in_channels=3, base_width=4, norm="batch")
    train(teacher, data, _config(steps=12, lr=3e-3))
    experiment = compressor.Experiment.from_dict({
        "data": {"name": "synthetic", "labels": "binary", "patch_size": 32, "train_images": 32, "val_images": 1,
                 "val_size": 48},
        "train": {"steps": 2, "batch_size": 4, "progress": False, "eval_window": 48, "eval_overlap": 0, "threads": 1},
        "finetune": {"bn_reestimate": 0, "reconstruct_steps": 5, "reconstruct_batches": 1},  # the default hints, short
    })
    # depth multiplier 9 = k*k: the separable factorization of every 3x3 kernel is exact
    result = compress(teacher, [{"name": "separable", "depth_multiplier": 9}], experiment, data=data)
    assert result.inherited_metrics.score == pytest.approx(result.teacher_metrics.score, abs=2e-3)
    assert max(result.records[0].errors.values()) < 1e-4
    assert result.distilled and result.result.steps_done == 2
    # a lossy recipe: fewer params; the reported score is the returned student's
    lossy = compress(teacher, [{"name": "fire", "squeeze_ratio": 0.5}], experiment, data=data)
    assert lossy.student_cost.params < lossy.teacher_cost.params
    assert evaluate(lossy.student, data, experiment.train).score == pytest.approx(lossy.student_metrics.score)


def test_a_parent_is_the_stored_baseline_at_the_experiments_steps_and_its_own_file_otherwise(tmp_path, data):
    experiment = tiny_experiment(tmp_path)
    config = ModelConfig(name="unet", args={"base_width": 8})  # not the baseline's arguments: a parent of its own
    plain = ModelConfig(name="unet")
    first = ensure_parent(experiment, plain)
    assert not first.reused and first.weights_path == tmp_path / "baselines" / "unet.pt"
    again = ensure_parent(experiment, plain)
    assert again.reused and all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                                   again.model.state_dict().values()))
    longer = ensure_parent(experiment, config, steps=3)
    assert longer.weights_path.parent == tmp_path / "parents" and longer.steps == 3 and not longer.reused
    assert ensure_parent(experiment, config, steps=3).reused


def test_compress_cli_end_to_end_and_its_refusals(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    out = tmp_path / "small.pt"
    # the 31M-param U-Net baseline: a short reconstruction (300 Adam steps of it took 116 of this test's 140 s)
    result = cli("compress", "unet", str(config), "--transform", "fire:squeeze_ratio=0.25", "--steps", "3",
                 "--set", "finetune.reconstruct_steps=3", "--set", "finetune.reconstruct_batches=1", "--out", str(out))
    assert result.returncode == (0 if compressor.load_saved(out).metadata["learned"] else 3), result.stderr
    assert "student, inherited" in result.stdout and "student, fine-tuned 3 steps, distilled" in result.stdout
    assert "layer error (median / max)" in result.stdout and "baseline unet: training" in result.stderr
    saved = compressor.load_saved(out)
    assert saved.base == "unet" and saved.metadata["distilled"] is True
    params = sum(parameter.numel() for parameter in saved.model.parameters())
    assert params == saved.metadata["student"]["cost"]["params"] < saved.metadata["teacher"]["cost"]["params"]

    other = tmp_path / "other.pt"
    torch.save(compressor.micronet(in_channels=3, base_width=4).state_dict(), other)
    refusals = [
        (("compress", "unet", str(config), "--model-arg", "base_width=8", "--checkpoint", str(other),
          "--transform", "fire"), "weights of another architecture (missing ['decoder.0.0.conv.weight'"),
        (("compress", "networks:ResidualStridedNet", str(config), "--transform", "fire"),
         "would be built with random weights: give --checkpoint FILE"),
        (("compress", "unet", str(config), "--set", "finetune.lr=-1", "--transform", "fire"),
         "finetune.lr must be > 0, got -1"),
    ]
    for args, expected in refusals:
        refused = cli(*args)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()  # all of stderr: one line, no traceback
        assert line.startswith("compressor compress: error: ") and expected in line, line
    assert out.exists() and compressor.load_saved(out).metadata["distilled"] is True  # untouched by the refusals


def test_a_search_that_inherits_fine_tunes_from_the_parent_and_exports_the_same_models(tmp_path):
    from compressor.pipeline import run_search
    from compressor.search.export import rebuild_trial
    from compressor.study import study_info

    experiment = tiny_experiment(tmp_path, n_trials=4, init="distill", rungs=[0.34], min_trials_at_rung=1,
                                 overrides=("finetune.calibrate=1",))
    lines = []
    result = run_search(experiment, echo=lines.append)
    info = study_info(result.study)
    assert info.init == "distill" and info.parent.endswith(".pt")
    assert any(line.startswith("parent unet (9 steps, trained now") for line in lines)
    finished = [record for record in result.records if record.status == "complete"]
    assert finished and all(record.fidelity == 1.0 for record in finished)
    trained = [record for record in result.records if record.status in ("complete", "stopped")]
    assert trained and all(set(record.rung_metrics) == {"0.340"} for record in trained)  # multi-fidelity rungs as usual
    kept = [record for record in result.front if record.weights]  # dominated trials' weights were discarded
    assert kept
    for record in kept:  # the same parent, calibration and recipe give the very architecture that was trained
        exported = rebuild_trial(result.storage_url, result.study_name, record.number)
        assert sum(parameter.numel() for parameter in exported.model.parameters()) == record.params
    # resuming under other starting weights is refused, naming what changed
    with pytest.raises(ConfigError, match="other search settings"):
        run_search(dataclasses.replace(experiment, search=dataclasses.replace(experiment.search, init="inherit")),
                   echo=lambda line: None)


def test_results_stored_before_distillation_existed_keep_their_keys():
    from compressor.experiment import train_key

    plain = train_key(TrainConfig())
    assert "bn_reestimate" not in plain and "distill" not in plain  # off: the key of an older version's result
    changed = train_key(TrainConfig(bn_reestimate=2, distill=DistillConfig(teacher="unet")))
    assert changed["bn_reestimate"] == 2 and changed["distill"]["teacher"] == "unet"


def test_a_study_made_before_inheritance_rebuilds_its_recipes_as_it_built_them():
    from compressor.candidates.versions import as_built_before_inheritance
    from compressor.transforms import Recipe

    recipe = Recipe.from_data([{"name": "skip_fusion"}, {"name": "fire"}, {"name": "prune", "ratio": 0.5},
                               {"name": "prune", "ratio": 0.2, "importance": "random"}])
    built = as_built_before_inheritance(recipe)
    assert [dict(step.params) for step in built.steps] == [
        {"init": "inherit"}, {"head": True}, {"importance": "l1", "ratio": 0.5}, {"importance": "random", "ratio": 0.2}]
    # the skip_fusion the old code made from scratch: the mean of the kernel halves of the random U-Net
    model = compressor.unet(base_width=4)
    fused, _ = compressor.apply(model, as_built_before_inheritance(Recipe.from_data([{"name": "skip_fusion"}])),
                                (1, 3, 32, 32), init="random")
    conv = model.decoder[0][0].conv
    half = conv.in_channels // 2
    assert torch.equal(fused.get_submodule("decoder.0.0.conv").weight, (conv.weight[:, :half] + conv.weight[:, half:]) / 2)


def test_a_study_made_before_dilation_kept_rates_rebuilds_with_overwrite():
    """Micro-Net's fire modules are dilated already. dilation now keeps such rates by default; a study
    made before (no ``dilation_keeps_rates`` attribute) rebuilds its trials as they were trained:
    overwriting them. A new study stores the attribute; a recipe's own ``overwrite`` is kept."""
    from compressor.candidates.versions import (
        BUILD_VERSION,
        VERSION_KEY,
        as_built_for,
        build_version,
        version_attrs,
    )
    from compressor.errors import StudyMismatchError
    from compressor.transforms import Recipe

    recipe = Recipe.from_data([{"name": "dilation", "rates": [1, 2, 5]}, {"name": "fire"}])
    assert build_version({"init": "inherit"}) == 2 and build_version({}) == 1  # read from what older studies stored
    assert build_version({"init": "inherit", "dilation_keeps_rates": True}) == 3 and BUILD_VERSION == 9
    assert build_version(None) == build_version(version_attrs()) == BUILD_VERSION  # a new study, and what it stores
    with pytest.raises(StudyMismatchError, match=f"made by a newer compressor \\(build version {BUILD_VERSION + 1}"):
        build_version({VERSION_KEY: BUILD_VERSION + 1})  # its rules are unknown here: not resumed, joined or rebuilt
    old = as_built_for(recipe, build_version({"init": "inherit"}))
    assert [dict(step.params) for step in old.steps] == [{"rates": [1, 2, 5], "overwrite": True}, {"head": True}]
    assert as_built_for(recipe, BUILD_VERSION) is recipe
    kept = Recipe.from_data([{"name": "dilation", "overwrite": False}])
    assert dict(as_built_for(kept, 1).steps[0].params) == {"overwrite": False}
    model = compressor.micronet(base_width=8)
    _, (now,) = compressor.apply(model, recipe.steps[:1], (1, 3, 32, 32))
    _, (then,) = compressor.apply(model, old.steps[:1], (1, 3, 32, 32))
    kept_rates = {name for name, why in now.skipped.items() if why.startswith("already has rate")}
    rerated_then = set(then.changed) - set(now.changed)  # what the old rules changed and the new ones keep
    assert rerated_then and rerated_then <= kept_rates


def test_a_worker_joins_an_inheriting_study_from_the_parent_file_it_names(tmp_path):
    """A worker reads the parent file the study names instead of training it (it used to fail with an
    UnboundLocalError there) and adds trials built from that parent."""
    from compressor.pipeline import join_search, run_search

    experiment = tiny_experiment(tmp_path, n_trials=1, init="inherit")
    first = run_search(experiment, echo=lambda line: None)
    parent = first.study.user_attrs["parent"]
    lines = []
    joined = join_search(f"sqlite:///{tmp_path / 'search.db'}", "tiny", n_trials=2, echo=lines.append)
    assert len(joined.records) == 2 and not any(line.startswith("parent ") for line in lines)  # not trained again
    assert joined.study.user_attrs["parent"] == parent
