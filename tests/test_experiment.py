"""Experiment files: schema checks with named keys, overrides, round trips, baselines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from compressor.budget import Budget
from compressor.cost import measure
from compressor.data import FolderConfig, SpacenetSampleConfig, SyntheticConfig
from compressor.errors import ConfigError
from compressor.experiment import (
    Experiment,
    ModelConfig,
    baseline_key,
    ensure_baselines,
    load_baselines,
    load_experiment,
    train_model,
)

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data: dict, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["quickstart", "synthetic"])
def test_the_shipped_experiments_load(name):
    experiment = load_experiment(ROOT / "experiments" / f"{name}.yaml")
    assert experiment.name == name
    assert experiment.model.name == "micronet" and experiment.model.args["norm"] == "batch"
    assert isinstance(experiment.budget, Budget) and experiment.budget.max_params == 1.5e6
    expected = SpacenetSampleConfig if name == "quickstart" else SyntheticConfig
    assert type(experiment.data) is expected


@pytest.mark.parametrize(("name", "kind"), [("roads", "spacenet_roads"), ("landuse", "sentinel2_landuse")])
def test_the_shipped_task_experiments_train_to_the_plateau_with_a_test_region(name, kind):
    experiment = load_experiment(ROOT / "experiments" / f"{name}.yaml")
    assert experiment.data.kind == kind and experiment.data.test_fraction > 0
    assert experiment.train.auto and experiment.train.schedule == "plateau" and experiment.finetune.steps == "auto"


def test_defaults_fill_what_the_file_leaves_out(tmp_path):
    experiment = load_experiment(_write(tmp_path, {}, "plain.yaml"))
    assert experiment.name == "plain" and experiment.run_path == Path("runs/plain")
    assert isinstance(experiment.data, SpacenetSampleConfig) and experiment.train.steps == 200
    assert experiment.budget.is_empty and experiment.cost.input_size == 224


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"lr": "fast"}}, "x.yaml: train.lr: expected .*number, got 'fast'"),
        ({"train": {"lr": 0.1, "learning_rate": 2}}, "x.yaml: train.learning_rate: unknown key; valid keys: steps, batch_size"),
        ({"trian": {}}, "x.yaml: trian: unknown key; valid keys: name, run_dir, data, model, train, budget, cost"),
        ({"data": {"name": "synthetic", "root": "x"}}, "x.yaml: data.root: unknown key; valid keys: name, patch_size, labels"),
        ({"data": {"name": "folder", "preset": "coco"}}, "x.yaml: data.preset: expected one of 'inria', 'isprs_vaihingen', 'isprs_potsdam' or null, got 'coco'"),
        ({"data": {"name": "mnist"}}, "x.yaml: data.name: unknown dataset 'mnist'; valid names: folder, sentinel2_landuse, spacenet_roads, spacenet_sample, synthetic"),
        ({"data": {"patch_size": 32}}, "x.yaml: data.name: missing required key"),
        ({"data": {"name": "synthetic", "patch_size": 4}}, "x.yaml: data.patch_size must be at least 8"),
        ({"data": "synthetic"}, "x.yaml: data: expected a mapping, got 'synthetic'"),
        ({"model": {"args": [1, 2]}}, r"x.yaml: model.args: expected a mapping, got \[1, 2\]"),
        ({"train": {"steps": 2.5}}, "x.yaml: train.steps: expected integer or one of .auto., got 2.5"),
        ({"train": {"augment": "yes"}}, "x.yaml: train.augment: expected .*, got 'yes'"),
        ({"train": {"class_weights": "sqrt"}}, "x.yaml: train.class_weights: expected one of 'auto', 'none' or .*list"),
        ({"train": {"steps": 0}}, "x.yaml: train.steps must be >= 1, got 0"),
        ({"budget": {"max_params": "lots"}}, "x.yaml: budget: max_params: cannot read 'lots'"),
        ({"budget": {"max_param": 1}}, "x.yaml: budget: unknown budget key 'max_param'"),
        ({"cost": {"input_size": "big"}}, "x.yaml: cost.input_size: expected .*integer, got 'big'"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, data))


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nothing.yaml: cannot read experiment file"):
        load_experiment(tmp_path / "nothing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML at line 2"):
        load_experiment(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of sections, got list"):
        load_experiment(listed)


def test_overrides_are_checked_like_the_file(tmp_path):
    path = _write(tmp_path, {"data": {"name": "synthetic"}})
    experiment = load_experiment(path, overrides=["train.steps=7", "data.labels=multiclass", "model.args.base_width=16"])
    assert experiment.train.steps == 7 and experiment.data.labels == "multiclass"
    assert experiment.model.args == {"base_width": 16}
    with pytest.raises(ConfigError, match="x.yaml: train.stepz: unknown key"):
        load_experiment(path, overrides=["train.stepz=7"])
    with pytest.raises(ConfigError, match="override 'train' must look like section.key=value"):
        load_experiment(path, overrides=["train"])


def test_folder_sections_keep_their_types(tmp_path):
    experiment = load_experiment(_write(tmp_path, {
        "data": {"name": "folder", "root": "/data/isprs", "preset": "isprs_potsdam", "val_names": ["*_2_10"], "stride": 256},
    }))
    assert isinstance(experiment.data, FolderConfig)
    assert experiment.data.val_names == ["*_2_10"] and experiment.data.resolved().mask_suffix == "_label"


def test_the_resolved_config_round_trips(tmp_path):
    path = _write(tmp_path, {
        "name": "rt", "data": {"name": "synthetic", "labels": "multiclass"}, "train": {"class_weights": [1, 2, 3, 1, 1, 1]},
        "budget": {"max_params": "300k"},
    })
    experiment = load_experiment(path)
    saved = experiment.save(tmp_path / "out" / "config.yaml")
    again = load_experiment(saved)
    assert again == experiment
    assert yaml.safe_load(saved.read_text())["budget"]["max_params"] == 300000.0
    assert Experiment.from_dict(experiment.to_dict()) == experiment


def test_model_config_builds_for_the_data():
    model = ModelConfig(name="micronet", args={"base_width": 8}).build(in_channels=1, num_classes=4)
    assert model.encoder[0][0].squeeze[0].in_channels == 1 and model.head.out_channels == 4
    assert any(type(module).__name__ == "BatchNorm2d" for module in model.modules())
    plain = ModelConfig(name="micronet", args={"base_width": 8, "norm": None}).build(in_channels=3, num_classes=2)
    assert not any(type(module).__name__ == "BatchNorm2d" for module in plain.modules())


def _tiny(tmp_path: Path, **train) -> Experiment:
    return Experiment.from_dict({
        "name": "tiny", "run_dir": str(tmp_path / "run"),
        "data": {"name": "synthetic", "patch_size": 32, "val_images": 1, "val_size": 48},
        "train": {"steps": 2, "batch_size": 2, "progress": False, "eval_window": 48, **train},
        "cost": {"input_size": 32},
    })


def test_the_baseline_key_follows_the_settings_that_change_results(tmp_path):
    experiment = _tiny(tmp_path)
    key = baseline_key(experiment, "unet")
    assert baseline_key(_tiny(tmp_path, threads=1, progress=True), "unet") == key
    assert baseline_key(_tiny(tmp_path, steps=3), "unet") != key
    assert baseline_key(dataclasses.replace(experiment, data=SyntheticConfig(patch_size=64)), "unet") != key
    assert baseline_key(experiment, "micronet") != key


def test_baselines_are_trained_once_and_retrained_when_settings_change(tmp_path):
    experiment = _tiny(tmp_path)
    first = ensure_baselines(experiment)
    assert [(record.model, record.reused) for record in first] == [("unet", False), ("micronet", False)]
    stored = json.loads((tmp_path / "run" / "baselines" / "unet.json").read_text())
    recomputed = measure(ModelConfig(name="unet").build(in_channels=3, num_classes=2), (1, 3, 32, 32))
    assert (stored["cost"]["params"], stored["cost"]["flops"]) == (recomputed.params, recomputed.flops)
    assert stored["cost"]["input_shape"] == [1, 3, 32, 32]
    assert stored["metrics"]["pixels"] == 48 * 48 and stored["steps"] == 2
    assert (tmp_path / "run" / "baselines" / "config.yaml").exists()
    modified = (tmp_path / "run" / "baselines" / "unet.json").stat().st_mtime_ns

    again = ensure_baselines(experiment)
    assert [record.reused for record in again] == [True, True]
    assert [record.metrics for record in again] == [record.metrics for record in first]
    assert (tmp_path / "run" / "baselines" / "unet.json").stat().st_mtime_ns == modified

    changed = _tiny(tmp_path, steps=3)
    assert load_baselines(changed) == {}
    retrained = ensure_baselines(changed, models=["micronet"])
    assert retrained[0].reused is False and retrained[0].steps == 3
    assert set(load_baselines(changed)) == {"micronet"}


def test_an_unknown_baseline_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="baseline model 'vgg' is not registered; valid: micronet, unet"):
        ensure_baselines(_tiny(tmp_path), models=["vgg"])


def test_train_model_takes_an_in_memory_recipe(tmp_path):
    from compressor.transforms import Recipe

    experiment = _tiny(tmp_path)
    small = ModelConfig(name="unet", args={"base_width": 8, "depth": 2})
    recipe = Recipe.from_data([{"name": "separable"}])
    plain = train_model(experiment, model=small)
    transformed = train_model(experiment, model=small, recipe=recipe)
    assert transformed.label == f"unet-base_width=8-depth=2+recipe-{recipe.hash()[:8]}" and transformed.recipe == "separable"
    assert transformed.cost.params < plain.cost.params
    assert transformed.result.metrics.pixels == plain.result.metrics.pixels == 48 * 48


def test_train_model_distills_from_the_teacher_train_distill_names(tmp_path):
    """compressor.train_model finds the teacher (a model file here); the runs-level train_model, which
    trains the baselines, takes the one it is given and says what to pass when it has none."""
    import compressor
    from compressor.experiment import runs

    teacher = compressor.unet(base_width=4, depth=2, in_channels=3, num_classes=2).eval()
    compressor.save_model(tmp_path / "teacher.pt", teacher)
    experiment = _tiny(tmp_path, distill={"teacher": str(tmp_path / "teacher.pt"), "weight": 1.0})
    small = ModelConfig(name="unet", args={"base_width": 8, "depth": 2})
    with pytest.raises(ConfigError, match=r"train.distill is on and no teacher was given: pass teacher=..., or call "
                                          r"compressor.train_model"):
        runs.train_model(experiment, model=small)
    distilled = compressor.train_model(experiment, model=small)
    given = runs.train_model(experiment, model=small, teacher=compressor.load_model(tmp_path / "teacher.pt").eval())
    plain = train_model(_tiny(tmp_path), model=small)
    assert distilled.result.losses == given.result.losses  # the file's network, found by train_model
    assert distilled.result.losses != plain.result.losses  # the same seed and batches: the teacher's term entered


def test_how_latency_is_timed_retrains_no_baseline_but_the_input_size_does():

    from compressor.experiment import baseline_key
    from compressor.latency import LatencyConfig

    experiment = Experiment.from_dict({"name": "k"})
    timed = dataclasses.replace(experiment, cost=dataclasses.replace(
        experiment.cost, latency=LatencyConfig(runtime="onnxruntime", threads=2)))
    resized = dataclasses.replace(experiment, cost=dataclasses.replace(experiment.cost, input_size=256))
    assert baseline_key(timed, "unet") == baseline_key(experiment, "unet")
    assert baseline_key(resized, "unet") != baseline_key(experiment, "unet")
    # the study's key keeps the latency section: a resumed search must time as it did
    from compressor.search.keys import experiment_key

    assert experiment_key(timed)["cost"]["latency"]["runtime"] == "onnxruntime"
    assert "latency" not in experiment_key(experiment)["cost"]
