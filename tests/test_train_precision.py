"""``train.precision``: bf16 autocast runs the forward passes in bfloat16, keeps the weights and
the losses in float32, and stays out of the keys of results stored before it existed."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from test_train import FAST, _small_model

from compressor.data import SyntheticConfig
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.experiment.baselines import train_key
from compressor.train import train
from compressor.train.config import DistillConfig
from compressor.train.precision import autocast, bf16_supported, resolve_precision


@pytest.fixture(scope="module")
def buildings():
    return SyntheticConfig(labels="binary", patch_size=32, val_images=1, val_size=64, seed=1).build()


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_weights(buildings):
    fp32 = train(_small_model(seed=2), buildings, dataclasses.replace(FAST, seed=2))
    model = _small_model(seed=2)
    bf16 = train(model, buildings, dataclasses.replace(FAST, seed=2, precision="bf16"))
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert all(torch.isfinite(torch.tensor(bf16.losses)))
    assert bf16.losses[0] != fp32.losses[0]  # the rounding of bfloat16 shows from the first step
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.05)  # and no more than rounding
    with autocast(torch.device("cpu"), "bf16"):
        assert model(torch.zeros(1, 3, 32, 32)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert model(torch.zeros(1, 3, 32, 32)).dtype == torch.float32


def test_auto_takes_bf16_only_where_the_hardware_runs_it(tmp_path):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_supported(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert not bf16_supported(torch.device("meta"))
    # the CPU's flags decide: AVX-512 alone (Skylake, Cascade Lake) only emulates bfloat16
    cpuinfo = tmp_path / "cpuinfo"
    for flags, supported in (("fpu avx512f avx512bw avx512_vnni", False), ("fpu avx512f avx512_bf16", True),
                             ("fpu amx_bf16 amx_tile", True)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert bf16_supported(cpu, cpuinfo) is supported, flags
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # an Arm core with BF16
    assert bf16_supported(cpu, cpuinfo)
    assert not bf16_supported(cpu, tmp_path / "missing")


def test_bf16_distillation_with_feature_hints_trains_in_float32_losses(buildings):
    """A bf16 student distilled from a teacher, with feature hints at the blocks they share: the
    teacher's targets and features come out of autocast in bfloat16 and are compared in float32."""
    from compressor.transforms import Recipe, apply
    from compressor.transforms.feature_hints import FeatureHints

    teacher = _small_model(seed=5).eval()

    def separable():
        return apply(teacher, Recipe.from_data([{"name": "separable"}]), (1, 3, 32, 32), count_flops=False,
                     diagnostics=False)[0]

    student = separable()
    assert FeatureHints.between(student, teacher, torch.zeros(1, 3, 32, 32)) is not None
    config = dataclasses.replace(FAST, seed=5, precision="bf16",
                                 distill=DistillConfig(teacher="parent", weight=0.5, feature_weight=1.0))
    result = train(student, buildings, config, teacher=teacher)
    assert all(math.isfinite(value) for value in result.losses)
    plain = train(separable(), buildings, dataclasses.replace(config, distill=DistillConfig()))
    assert result.losses[0] > plain.losses[0]  # the distillation and hint terms were added


def test_precision_is_checked_and_fp32_leaves_stored_keys_alone():
    assert Experiment.from_dict({}).train.precision == "fp32"
    assert "precision" not in train_key(Experiment.from_dict({}).train)  # baselines stored before keep their key
    assert train_key(Experiment.from_dict({"train": {"precision": "bf16"}}).train)["precision"] == "bf16"
    with pytest.raises(ConfigError, match=r"train.precision: expected one of 'fp32', 'bf16', 'auto', got 'half'"):
        Experiment.from_dict({"train": {"precision": "half"}})


def test_finetune_precision_speeds_the_candidates_and_leaves_the_parent_and_old_keys_alone():
    from compressor.experiment.typed import to_data

    plain = Experiment.from_dict({})
    assert "precision" not in to_data(plain.finetune)  # studies and compressions stored before keep their key
    assert plain.finetune.train_config(plain.train, distill=False).precision == "fp32"
    follows = Experiment.from_dict({"train": {"precision": "bf16"}})  # null: the train section's
    assert follows.finetune.train_config(follows.train, distill=False).precision == "bf16"
    tuned = Experiment.from_dict({"finetune": {"precision": "bf16"}})
    assert tuned.finetune.train_config(tuned.train, distill=True).precision == "bf16"
    assert tuned.train.precision == "fp32"  # the parent and the references train as before
    assert to_data(tuned.finetune)["precision"] == "bf16"
    with pytest.raises(ConfigError, match=r"finetune.precision: expected one of 'fp32', 'bf16', 'auto' or null, got 'half'"):
        Experiment.from_dict({"finetune": {"precision": "half"}})


class _DtypeProbe(torch.nn.Module):
    """A 1x1 convolution to two classes that records the dtype of every output it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.conv(images)
        self.seen.append(logits.dtype)
        return logits


@pytest.mark.parametrize(("settings", "dtype"), [
    ({}, torch.float32),
    ({"precision": "bf16"}, torch.bfloat16),  # null: as the training
    ({"precision": "bf16", "eval_precision": "fp32"}, torch.float32),
    ({"eval_precision": "bf16"}, torch.bfloat16),
])
def test_evaluation_runs_in_the_training_precision_unless_told(buildings, settings, dtype):
    from compressor.train import evaluate

    probe = _DtypeProbe()
    config = dataclasses.replace(FAST, **settings)
    metrics = evaluate(probe, buildings, config)
    assert probe.seen and set(probe.seen) == {dtype}
    full = evaluate(probe, buildings, dataclasses.replace(config, eval_precision="fp32"))
    assert metrics.accuracy == pytest.approx(full.accuracy, abs=0.02)  # rounding moves a pixel's class, and no more


def test_eval_precision_is_checked_and_stays_out_of_stored_keys():
    assert "eval_precision" not in train_key(Experiment.from_dict({}).train)
    with pytest.raises(ConfigError, match=r"train.eval_precision: expected one of 'fp32', 'bf16', 'auto' or null, got 'half'"):
        Experiment.from_dict({"train": {"eval_precision": "half"}})
    with pytest.raises(ConfigError, match=r"train.eval_precision must be fp32, bf16 or auto \(or null: as train.precision\), got 'half'"):
        dataclasses.replace(FAST, eval_precision="half")
    tuned = Experiment.from_dict({"train": {"eval_precision": "fp32"}, "finetune": {"precision": "bf16"}})
    candidates = tuned.finetune.train_config(tuned.train, distill=False)
    assert (candidates.precision, candidates.evaluation_precision) == ("bf16", "fp32")  # the train section's word holds


def test_a_study_made_before_scores_its_candidates_in_fp32():
    """Candidates of a study made before build version 9 were evaluated in fp32 whatever they fine-tuned in;
    resumed, confirmed or exported, its trials keep that rule, and a new study's follow their precision."""
    from compressor.candidates.builder import Init
    from compressor.candidates.setup import SearchSetup
    from compressor.candidates.versions import EVALUATES_IN_PRECISION

    required = {field.name: None for field in dataclasses.fields(SearchSetup)
                if field.init and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
    experiment = Experiment.from_dict({"finetune": {"precision": "bf16"}})
    for init in ("inherit", "random"):
        def setup(version, init=init):
            return SearchSetup(**{**required, "experiment": experiment, "init": Init(init)}, build_version=version)
        assert setup(EVALUATES_IN_PRECISION - 1).train_config.evaluation_precision == "fp32"
        now = setup(EVALUATES_IN_PRECISION).train_config
        assert now.evaluation_precision == now.precision == ("bf16" if init == "inherit" else "fp32")


def test_keys_tell_a_result_scored_in_bf16_from_one_scored_in_fp32_and_keep_the_old_ones():
    """Baselines, studies and resumable states stored before evaluations followed the training's precision
    were scored in fp32: their keys stay where the scores would be fp32, and change where they would not."""
    from compressor.candidates.setup import scored_as_built
    from compressor.candidates.versions import EVALUATES_IN_PRECISION
    from compressor.search.keys import experiment_key
    from compressor.train.resume import state_key

    def key(**train):
        return train_key(Experiment.from_dict({"train": train}).train)

    assert key() == key(eval_precision="fp32") and "eval_precision" not in key()  # plain fp32: the key as before
    assert key(precision="bf16", eval_precision="fp32") == {**key(), "precision": "bf16"}  # trained in bf16, scored in fp32: as before
    assert key(precision="bf16")["eval_precision"] == "bf16" and key(eval_precision="bf16")["eval_precision"] == "bf16"
    # a study's key says how its candidates are scored when the train section sets it (else: their fine-tuning's precision)
    plain = experiment_key(Experiment.from_dict({"finetune": {"precision": "bf16"}}))
    told = Experiment.from_dict({"finetune": {"precision": "bf16"}, "train": {"eval_precision": "fp32"}})
    assert "eval_precision" not in plain["train"] and experiment_key(told)["train"]["eval_precision"] == "fp32"
    # a study made before with train.precision bf16 keeps its key: it scores in fp32 by its build version, and its
    # parent and references are found under the keys they were stored with (scored in fp32)
    before = Experiment.from_dict({"train": {"precision": "bf16"}})
    assert experiment_key(before)["train"] == {**experiment_key(Experiment.from_dict({}))["train"], "precision": "bf16"}
    old, new = scored_as_built(before, EVALUATES_IN_PRECISION - 1), scored_as_built(before, EVALUATES_IN_PRECISION)
    assert train_key(old.train) == {**key(), "precision": "bf16"} and new is before
    assert scored_as_built(told, EVALUATES_IN_PRECISION - 1) is told  # what the section sets, it keeps
    model = _small_model(seed=1)
    data = SyntheticConfig(labels="binary", patch_size=16, val_images=1, val_size=32).build()
    fp32 = state_key(FAST, model, data, device="cpu", precision="bf16")
    assert "eval_precision" not in fp32["settings"] and fp32["run"] == ["cpu", "bf16"]  # states written before: still resumed
    assert state_key(dataclasses.replace(FAST, eval_precision="fp32"), model, data, device="cpu", precision="bf16") == fp32
    assert state_key(FAST, model, data, device="cpu", precision="bf16", evaluation="bf16")["run"] != fp32["run"]


def test_a_users_parent_file_is_scored_as_the_study_was_made(tmp_path, monkeypatch):
    """A search from a trained file scores that parent once, by the train section; a study made before build
    version 9 keeps the fp32 score it stored even where the train section now says bf16."""
    from search_helpers import tiny_experiment

    import compressor
    import compressor.candidates.setup as setup_module
    from compressor.candidates.versions import EVALUATES_IN_PRECISION

    path = compressor.save_model(tmp_path / "parent.pt", compressor.unet(in_channels=3, base_width=4, norm="batch"))
    experiment = tiny_experiment(tmp_path / "run", ("train.precision=bf16",), parent=str(path), init="inherit")
    asked = []
    scored = setup_module.evaluate
    monkeypatch.setattr(setup_module, "evaluate",
                        lambda model, data, config: asked.append(config.evaluation_precision) or scored(model, data, config))
    for version in (EVALUATES_IN_PRECISION - 1, EVALUATES_IN_PRECISION):
        setup_module.prepare(experiment, build_version=version, check_budget=False, echo=lambda line: None)
    assert asked == ["fp32", "bf16"]


def test_a_search_records_the_precision_its_trials_were_scored_in_and_its_table_says_so(tmp_path):
    from search_helpers import tiny_experiment

    from compressor import load_saved
    from compressor.pipeline import run_search
    from compressor.report import front_table
    from compressor.report.text import precision_note
    from compressor.search.export import export_trial
    from compressor.search.weights import WeightStore
    from compressor.study import trial_records

    scored = {}
    for precision in ("bf16", "fp32"):
        experiment = tiny_experiment(tmp_path / precision, (f"finetune.precision={precision}",), n_trials=2, init="inherit")
        run = run_search(experiment, echo=lambda line: None)
        trained = [record for record in run.records if record.trained]
        assert trained and {record.scored_in for record in trained} == {precision}
        scored[precision] = front_table(run.study)
        # an exported trial's file says its metrics were taken in that precision
        storage = f"sqlite:///{experiment.run_path / 'search.db'}"
        front = [record for record in trial_records(run.study)
                 if WeightStore(tmp_path / precision / "artifacts", create=False).has(record.weights)]  # weights kept
        exported = export_trial(storage, run.study.study_name, front[0].number, tmp_path / f"{precision}.pt")
        assert load_saved(exported.path).metadata["scored_in"] == precision
    assert "the trials were scored in bf16, as they trained" in scored["bf16"]
    assert "scored in bf16" not in scored["fp32"]
    # a study resumed after it was recorded: some of its trials were scored in fp32 (those before: not recorded)
    assert precision_note({"scored_in": ["bf16", "fp32"]}).startswith("some trials were scored in bf16")
    assert precision_note({"scored_in": ["fp32"]}) == precision_note({}) == ""


def test_a_resumable_training_is_keyed_by_the_precision_it_scores_in(buildings, monkeypatch, tmp_path):
    """train() hands state_key the precision its evaluations resolve to, so a state scored in fp32 is not
    resumed by a run that scores in bf16."""
    import compressor.train.loop as loop

    asked = []
    keyed = loop.state_key

    def spy(*args, **kwargs):
        asked.append(kwargs.get("evaluation"))
        return keyed(*args, **kwargs)

    monkeypatch.setattr(loop, "state_key", spy)
    for settings in ({}, {"precision": "bf16"}, {"precision": "bf16", "eval_precision": "fp32"}):
        train(_small_model(seed=3), buildings, dataclasses.replace(FAST, steps=1, **settings), resume=tmp_path / "state")
    assert asked == ["fp32", "bf16", "fp32"]
