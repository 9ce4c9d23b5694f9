"""``train.steps: auto``: training until validation stops improving, the best weights kept, the plateau schedule."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from compressor.cli.compress_command import _steps
from compressor.data import SyntheticConfig
from compressor.errors import ConfigError
from compressor.experiment.baselines import train_key
from compressor.finetune import FinetuneConfig
from compressor.models import unet
from compressor.train import TrainConfig, evaluate, seed_everything, train
from compressor.train.loop import _schedule
from compressor.train.plateau import LR_DROP, Plateau

AUTO = TrainConfig(steps="auto", schedule="plateau", eval_every=10, patience=3, min_delta=0.01, max_steps=400,
                   batch_size=8, lr=3e-3, warmup_fraction=0.0, progress=False, eval_window=128, threads=1)


@pytest.fixture(scope="module")
def buildings():
    return SyntheticConfig(labels="binary", patch_size=32, val_images=2, val_size=128, seed=1).build()


def _model():
    seed_everything(0)
    return unet(base_width=8, depth=3, norm="batch")


def test_auto_stops_after_patience_evaluations_without_a_gain_and_keeps_the_best_weights(buildings):
    model = _model()
    result = train(model, buildings, AUTO)
    steps = [step for step, _ in result.history]
    assert result.converged and result.steps_done < AUTO.max_steps
    assert steps == list(range(10, result.steps_done + 1, 10))  # an evaluation every eval_every steps: the curve
    scores = dict((step, metrics.score) for step, metrics in result.history)
    best = result.best_step
    assert result.steps_done == best + AUTO.patience * AUTO.eval_every  # patience evaluations after the best, then stop
    assert all(scores[step] <= scores[best] + AUTO.min_delta for step in steps if step > best)
    assert all(scores[best] > scores[step] for step in steps if step < best) or best == steps[0]
    assert result.metrics is dict(result.history)[best]
    assert evaluate(model, buildings, AUTO).confusion == result.metrics.confusion  # the weights of the best step, not the last
    assert result.to_dict()["best_step"] == best and result.to_dict()["converged"] is True


def test_smoothing_stops_by_the_mean_of_recent_evaluations_and_keeps_the_weights_at_the_best_mean(buildings):
    config = dataclasses.replace(AUTO, smoothing=3)
    model = _model()
    result = train(model, buildings, config)
    scores = [metrics.score for _, metrics in result.history]
    means = [sum(scores[max(0, index - 2):index + 1]) / len(scores[max(0, index - 2):index + 1]) for index in range(len(scores))]
    best_mean, last_gain = means[0], 0
    for index, mean in enumerate(means):
        if mean > best_mean + AUTO.min_delta:
            best_mean, last_gain = mean, index
    assert result.converged and len(scores) == last_gain + 1 + AUTO.patience  # patience smoothed evaluations without a gain
    assert result.best_step == result.history[last_gain][0]  # the weights at the best mean
    assert evaluate(model, buildings, config).confusion == result.metrics.confusion
    assert result.metrics is dict(result.history)[result.best_step]


def test_a_noisy_curve_still_rising_is_no_plateau_when_smoothed_and_a_lucky_evaluation_is_not_kept():
    noisy = [0.09, 0.09, 0.32, 0.0, 0.2, 0.17, 0.25, 0.31, 0.24, 0.29, 0.30, 0.31]  # the road tile's U-Net (1 thread)
    raw, smooth = (Plateau(patience=4, min_delta=0.001, lower_rate=True, smoothing=k) for k in (1, 3))
    for step, score in enumerate(noisy, start=1):
        raw.converged or raw.update(step, score)
        smooth.update(step, score)
    assert raw.converged and raw.best_step == 3  # raw: stopped, holding the lucky third evaluation
    assert not smooth.converged and smooth.best_step == len(noisy)  # smoothed: still rising, the latest kept


def test_rung_evaluations_of_a_search_neither_count_for_patience_nor_change_the_run(buildings):
    plain = train(_model(), buildings, AUTO)
    asked = []
    with_rungs = train(_model(), buildings, AUTO, evaluate_at=[7, 15], callback=lambda step, metrics: asked.append(step))
    assert asked == [7, 15] and {7, 15} <= {step for step, _ in with_rungs.history}
    assert (with_rungs.steps_done, with_rungs.best_step, with_rungs.converged) == (plain.steps_done, plain.best_step, True)
    assert with_rungs.metrics.confusion == plain.metrics.confusion


def test_a_run_a_callback_stops_claims_no_best_weights(buildings):
    result = train(_model(), buildings, AUTO, evaluate_at=[25], callback=lambda step, metrics: False)
    assert result.stopped_early and result.steps_done == 25
    assert result.best_step is None and not result.converged and "best_step" not in result.to_dict()
    assert result.metrics is result.history[-1][1]  # what it had when stopped


def test_a_parent_trained_for_a_count_of_steps_from_an_auto_experiment(tmp_path):
    from compressor.experiment import Experiment, ModelConfig
    from compressor.experiment.baselines import ensure_parent

    experiment = Experiment.from_dict({
        "run_dir": str(tmp_path), "data": {"name": "synthetic", "labels": "binary", "patch_size": 16, "val_images": 1,
                                           "val_size": 32},
        "train": {"steps": "auto", "schedule": "plateau", "max_steps": 4, "eval_every": 2, "batch_size": 2,
                  "progress": False, "eval_window": 32, "eval_overlap": 0, "threads": 1},
        "finetune": {"parent_steps": 3},
    })
    parent = ensure_parent(experiment, ModelConfig(name="micronet", args={"base_width": 4, "norm": "batch"}),
                           steps=experiment.finetune.parent_steps)
    assert parent.steps == 3 and not parent.reused
    again = ensure_parent(experiment, ModelConfig(name="micronet", args={"base_width": 4, "norm": "batch"}), steps=3)
    assert again.reused and again.steps == 3 and again.weights_path == parent.weights_path


def test_a_run_still_improving_at_max_steps_ends_there_and_says_so(buildings):
    config = dataclasses.replace(AUTO, max_steps=30, patience=5)
    result = train(_model(), buildings, config)
    assert result.steps_done == 30 and not result.converged
    assert [step for step, _ in result.history] == [10, 20, 30]


def test_the_plateau_schedule_lowers_the_rate_each_half_patience_without_a_gain():
    config = dataclasses.replace(AUTO, patience=4, warmup_fraction=0.01)  # 4 warm-up steps of 400
    plateau = Plateau(config.patience, config.min_delta, lower_rate=True)
    factor = _schedule(config, plateau)
    assert [factor(step) for step in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    for step, score in enumerate([0.5, 0.5, 0.5], start=1):
        plateau.update(step, score)
    assert factor(10) == pytest.approx(LR_DROP)  # two evaluations without a gain: half the patience
    plateau.update(4, 0.6)
    assert factor(11) == pytest.approx(LR_DROP) and not plateau.converged  # a gain keeps the rate it has
    constant = _schedule(dataclasses.replace(config, schedule="constant"), plateau)
    assert constant(10) == 1.0


def test_lr_patience_drops_the_rate_more_than_once_before_the_run_stops(buildings):
    halves, thirds = Plateau(patience=6, min_delta=0.01, lower_rate=True), Plateau(6, 0.01, True, lr_patience=2)
    scales: dict[str, list[float]] = {"halves": [], "thirds": []}
    for step, score in enumerate([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], start=1):  # a gain, then six without
        for name, plateau in (("halves", halves), ("thirds", thirds)):
            plateau.update(step, score)
            scales[name].append(round(plateau.lr_scale, 4))
    assert scales["halves"] == [1.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.09]  # the second drop comes with the stop: unused
    assert scales["thirds"] == [1.0, 1.0, 0.3, 0.3, 0.09, 0.09, 0.027]  # 0.09x for the last two evaluations
    assert halves.converged and thirds.converged
    config = dataclasses.replace(AUTO, patience=4, lr_patience=1, max_steps=120)  # the loop passes it on
    plain, dropped = (train(_model(), buildings, settings) for settings in (dataclasses.replace(config, lr_patience=None), config))
    scores = [metrics.score for _, metrics in plain.history]
    first_miss = next(index for index in range(1, len(scores)) if scores[index] <= max(scores[:index]) + config.min_delta)
    same = (first_miss + 1) * config.eval_every  # up to the first evaluation without a gain, the two runs are one
    assert dropped.losses[:same] == plain.losses[:same] and dropped.losses[same:] != plain.losses[same:]
    assert train_key(config)["lr_patience"] == 1 and "lr_patience" not in train_key(AUTO)


def test_a_run_that_finds_nothing_better_than_its_start_hands_the_start_back(buildings):
    """A converged network trained further at a rate that only harms it (the control row of the converged
    table lost 11 points so on one seed): with its starting metrics, the run returns it as it was."""
    trained = _model()
    train(trained, buildings, AUTO)
    start = evaluate(trained, buildings, AUTO)
    harmful = dataclasses.replace(AUTO, lr=0.3, patience=2)
    plain = train(copy.deepcopy(trained), buildings, harmful)
    assert plain.best_step > 0 and plain.metrics.score < start.score - AUTO.min_delta  # without its start: a worse network
    kept = copy.deepcopy(trained)
    result = train(kept, buildings, harmful, start=start)
    assert result.best_step == 0 and result.history[0] == (0, start) and result.metrics is start and result.converged
    assert result.steps_done == harmful.patience * harmful.eval_every and len(result.history) == harmful.patience + 1
    for (name, value), other in zip(trained.state_dict().items(), kept.state_dict().values()):
        assert torch.equal(value, other), name  # the start's weights, batch-norm statistics included
    with pytest.raises(ValueError, match="start describes the network as given"):
        train(copy.deepcopy(trained), buildings, dataclasses.replace(harmful, bn_reestimate=2), start=start)


def test_a_state_written_without_the_start_counted_is_not_resumed_with_it(buildings, interrupted_state, tmp_path, caplog):
    state = tmp_path / "run.state"
    state.write_bytes(interrupted_state)  # an AUTO run that did not count its start
    model = _model()
    start = evaluate(model, buildings, AUTO)
    with caplog.at_level("WARNING", logger="compressor.train.resume"):
        again = train(model, buildings, AUTO, resume=state, start=start)
    assert "was written by another training (other counted_start): training from the start" in caplog.text
    assert again.history[0] == (0, start)
    from compressor.train.resume import state_key

    keys = [state_key(AUTO, model, buildings, device="cpu", precision="fp32", start=0.0) for model in (_model(), unet(base_width=8, depth=3, norm="batch"))]
    assert keys[0]["start"] != keys[1]["start"] and keys[0]["counted_start"] == 0.0  # the weights still in the key


def test_compress_to_the_plateau_never_hands_back_less_than_its_start_on_validation(buildings):
    from compressor.compression import compress
    from compressor.experiment import Experiment

    trained = _model()
    train(trained, buildings, AUTO)
    experiment = Experiment.from_dict({
        "data": {"name": "synthetic", "labels": "binary", "patch_size": 32, "val_images": 2, "val_size": 128, "seed": 1},
        "train": {"steps": "auto", "schedule": "plateau", "eval_every": 10, "patience": 2, "batch_size": 8,
                  "warmup_fraction": 0.0, "progress": False, "eval_window": 128, "threads": 1},
        "finetune": {"steps": "auto", "lr": 0.3, "bn_reestimate": 0},
    })
    done = compress(trained, [], experiment, data=buildings, distill=False)  # the control: no transform, trained further
    assert done.result.best_step == 0 and done.student_metrics.score == done.inherited_metrics.score
    assert "none better on validation than the start, which is kept" in done.table()


def test_a_run_that_has_learned_nothing_yet_is_not_on_a_plateau():
    """torchvision's DeepLabV3-MobileNetV3 scored building IoU 0 at its first 5 evaluations and was
    declared converged at nothing (BENCHMARKS, knowledge); zeros now neither count nor lower the rate."""
    plateau = Plateau(patience=2, min_delta=0.001, lower_rate=True)
    for step, score in enumerate([0.0, 0.0, 0.0005, float("nan"), 0.0], start=1):  # noise under min_delta is nothing
        assert not plateau.update(step, score) or step == 1
    assert not plateau.converged and plateau.lr_scale == 1.0 and plateau.best_step == 5  # the latest weights kept
    assert plateau.update(6, 0.05) and plateau.best_step == 6  # it starts learning: a gain
    plateau.update(7, 0.0)
    plateau.update(8, 0.04)
    assert plateau.converged and plateau.lr_scale < 1.0  # once it has learned, a fall counts
    never = Plateau(patience=2, min_delta=0.001, lower_rate=True)
    steps = [step for step in range(1, 20) if not never.converged and not never.update(step, 0.0)]
    assert never.converged and steps == [2, 3, 4, 5, 6, 7]  # the first, 2 x patience of grace, then the patience


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": "auto", "schedule": "cosine"}, "train.steps: auto needs train.schedule: plateau"),
        ({"steps": 100, "schedule": "plateau"}, "train.schedule: plateau needs train.steps: auto"),
        ({"steps": "many"}, "train.steps must be a number of steps or 'auto', got 'many'"),
        ({"steps": "auto", "schedule": "plateau", "patience": 0}, "train.patience must be >= 1"),
        ({"steps": "auto", "schedule": "plateau", "min_delta": -0.1}, "train.min_delta must be >= 0"),
        ({"steps": "auto", "schedule": "plateau", "smoothing": 0}, "train.smoothing must be >= 1"),
        ({"steps": "auto", "schedule": "plateau", "patience": 4, "lr_patience": 5},
         r"train.lr_patience must be in \[1, train.patience = 4\] evaluations \(or null: half the patience\), got 5"),
        ({"steps": "auto", "schedule": "plateau", "lr_patience": 0}, r"train.lr_patience must be in \[1,"),
    ],
)
def test_bad_auto_settings_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_the_auto_settings_stay_out_of_stored_keys_at_their_defaults():
    assert not {"max_steps", "patience", "eval_every", "min_delta", "smoothing"} & set(train_key(TrainConfig()))
    assert train_key(TrainConfig(patience=9))["patience"] == 9 and train_key(TrainConfig(smoothing=3))["smoothing"] == 3


def test_finetuning_to_the_plateau_uses_the_plateau_schedule():
    tuned = FinetuneConfig(steps="auto").train_config(TrainConfig(steps=120), distill=False)
    assert tuned.auto and tuned.schedule == "plateau"
    fixed = FinetuneConfig(steps=50).train_config(AUTO, distill=False)
    assert fixed.steps == 50 and fixed.schedule == "cosine"
    with pytest.raises(ConfigError, match="finetune.steps must be a number of steps, 'auto' or null, got 'x'"):
        FinetuneConfig(steps="x")


def test_compress_takes_auto_steps():
    assert _steps("auto") == "auto" and _steps("25") == 25
    with pytest.raises(ConfigError, match="--steps"):
        _steps("0")


class _Interrupted(Exception):
    pass


def _interrupt(at: int):
    def callback(step, metrics):
        if step == at:
            raise _Interrupted(step)
        return True
    return callback


def test_a_run_interrupted_and_resumed_ends_with_the_same_weights_as_one_never_stopped(buildings, tmp_path, caplog):
    config = dataclasses.replace(AUTO, smoothing=2, max_steps=120)
    whole = _model()
    expected = train(whole, buildings, config, evaluate_at=[25], callback=lambda step, metrics: True)
    state = tmp_path / "run.state"
    with pytest.raises(_Interrupted):
        train(_model(), buildings, config, evaluate_at=[25], callback=_interrupt(25), resume=state)
    assert state.is_file()
    asked = []
    again = _model()
    with caplog.at_level("INFO", logger="compressor.train.loop"):
        resumed = train(again, buildings, config, evaluate_at=[25], callback=lambda step, metrics: asked.append(step) or True,
                        resume=state)
    # the state is written once the callback has had its word: the step it raised at is asked again
    assert "resumed at step 20" in caplog.text and asked == [25]
    assert not state.exists()  # the run ended: nothing to resume
    assert (resumed.steps_done, resumed.best_step, resumed.converged) == (expected.steps_done, expected.best_step,
                                                                          expected.converged)
    assert [step for step, _ in resumed.history] == [step for step, _ in expected.history]
    assert resumed.losses == expected.losses
    for (name, value), other in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(value, other), name


@pytest.fixture(scope="module")
def interrupted_state(buildings, tmp_path_factory):
    """The bytes of the state an AUTO run left when interrupted at step 25."""
    state = tmp_path_factory.mktemp("state") / "run.state"
    with pytest.raises(_Interrupted):
        train(_model(), buildings, AUTO, evaluate_at=[25], callback=_interrupt(25), resume=state)
    return state.read_bytes()


@pytest.mark.parametrize("other", ["settings", "lr_patience", "start", "data"])
def test_a_state_written_by_another_training_is_not_used(buildings, interrupted_state, tmp_path, caplog, other):
    state = tmp_path / "run.state"
    state.write_bytes(interrupted_state)
    config, data, model = AUTO, buildings, _model
    if other == "settings":
        config = dataclasses.replace(config, lr=1e-3)
    elif other == "lr_patience":  # a setting added later: in the key once it is set
        config, other = dataclasses.replace(config, lr_patience=1), "settings"
    elif other == "start":  # another initialization, recipe or reconstruction: other weights to start from
        def model():
            seed_everything(1)
            return unet(base_width=8, depth=3, norm="batch")
    else:  # the same sizes, other pixels
        data = SyntheticConfig(labels="binary", patch_size=32, val_images=2, val_size=128, seed=2).build()
    with caplog.at_level("WARNING", logger="compressor.train.resume"):
        again = train(model(), data, config, resume=state)
    assert f"was written by another training (other {other}): training from the start" in caplog.text
    assert len(again.losses) == again.steps_done and not state.exists()


def test_a_setting_added_later_keeps_the_states_written_before_it_while_at_its_default():
    from compressor.train.resume import settings_key

    assert "lr_patience" not in settings_key(AUTO) and "('lr_patience', 1)" in settings_key(dataclasses.replace(AUTO, lr_patience=1))
    assert "('smoothing', 1)" in settings_key(AUTO)  # the others are there at their defaults too, as states hold them


def test_compress_names_its_fine_tuning_state_by_the_teachers_weights():
    """Two teachers of one architecture never share a resumed fine-tuning (compress --out the same file)."""
    from compressor.train.resume import weights_digest

    teacher = _model()
    digest = weights_digest(teacher)
    assert digest == weights_digest(copy.deepcopy(teacher)) and len(digest) == 12
    with torch.no_grad():
        next(teacher.parameters()).view(-1)[0] += 1e-6
    assert weights_digest(teacher) != digest


def test_a_state_that_cannot_be_written_is_said_and_the_run_goes_on(buildings, tmp_path, caplog):
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    with caplog.at_level("WARNING", logger="compressor.train.loop"):
        result = train(_model(), buildings, dataclasses.replace(AUTO, max_steps=30), resume=blocked / "run.state")
    assert result.steps_done == 30 and caplog.text.count("could not be written") == 1  # said once, not at every evaluation


def test_an_inheriting_search_and_its_confirmation_count_each_candidates_start(tmp_path):
    """With ``finetune.steps: auto`` a trial's fine-tuning counts its start, as ``compress`` does: at a rate
    that spoils every step (lr 0.3), a candidate hands back what it inherited, and so does the control."""
    from search_helpers import tiny_experiment

    from compressor.candidates.setup import prepare, start_metrics
    from compressor.candidates.versions import COUNTS_START
    from compressor.confirm.run import run_confirmation
    from compressor.confirm.subjects import RESULT_PREFIX, result_key
    from compressor.pipeline import run_search
    from compressor.search_config import ConfirmConfig
    from compressor.study import TrialRecord, load_study

    experiment = tiny_experiment(
        tmp_path, ("train.eval_every=2", "train.patience=2", "train.max_steps=6", "finetune.steps=auto",
                   "finetune.lr=0.3", "finetune.bn_reestimate=0", "finetune.parent_steps=9"),
        n_trials=3, init="inherit", references=["base"])
    result = run_search(experiment, echo=lambda line: None)
    trained = [TrialRecord.from_trial(trial) for trial in result.study.get_trials(deepcopy=False)
               if trial.user_attrs.get("status") == "complete" and trial.user_attrs.get("duplicate_of") is None]
    assert trained
    for record in trained:
        assert record.curve[0][0] == 0  # the start is the evaluation at step 0
        assert record.metric == pytest.approx(max(value for _, value in record.curve), abs=1e-5)
        assert record.timing["evaluate"] > 0
    setup = prepare(experiment, echo=lambda line: None, check_budget=False)
    assert start_metrics(setup, setup.parent.model) is not None
    old = dataclasses.replace(setup, build_version=COUNTS_START - 1)  # a study made before: its trials keep one rule
    assert start_metrics(old, setup.parent.model) is None
    run_confirmation(result.study, result.storage_url, config=ConfirmConfig(top=1, seeds=1), echo=lambda line: None)
    attrs = load_study(result.storage_url, "tiny").user_attrs
    (seed,) = {int(key.split("/")[2]) for key in attrs if key.startswith(RESULT_PREFIX + "base-finetuned/")}
    parent, control = (attrs[result_key(subject, seed, None)]["metric"] for subject in ("base", "base-finetuned"))
    assert control == pytest.approx(parent, abs=1e-6)  # the parent itself, handed back: no step made it better
