"""Creating, checking and resuming the Optuna study of a search."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna

from compressor.candidates.setup import SearchSetup, metric_label, metric_value
from compressor.candidates.versions import version_attrs
from compressor.errors import ConfigError, StudyMismatchError
from compressor.experiment import ModelConfig, TrainedNetwork, load_baselines, to_data
from compressor.metrics import SegmentationMetrics
from compressor.search.keys import experiment_key
from compressor.study import FORMAT, StudyInfo, open_storage

__all__ = ["make_sampler", "open_search_study", "references", "resumed_seed"]


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped: the spaces are conditional), NSGA-II, Gaussian process or random; seeded.

    Budgets reach the samplers as trial constraints (``Trial.set_constraint``), which
    TPE and NSGA-II read to prefer feasible candidates.
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        try:
            import scipy  # noqa: F401 - what Optuna's GP sampler fits with
        except ImportError:
            raise ConfigError("search.sampler: gp needs scipy, which is not installed: "
                              "pip install 'compressor[gp]' (or scipy)") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a conditional space's other parameters are drawn at random, as TPE's start-up trials are
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; valid: tpe, nsga2, gp, random")


def resumed_seed(seed: int, held: int) -> int:
    """The sampler's seed for a study that already holds ``held`` trials: ``seed`` itself for a new
    study (a fresh search draws as it always did), another one fixed by both for a resumed study.
    A seeded sampler starts its generator afresh in every process, so a search resumed with the
    same seed drew the first run's recipes again (each a duplicate, reused, not trained: a random
    search resumed from 4 to 8 trials tried 1 new recipe, not 4).

    Example:
        >>> resumed_seed(7, 0), resumed_seed(7, 24) == resumed_seed(7, 24), resumed_seed(7, 24) != resumed_seed(7, 25)
        (7, True, True)
    """
    if held == 0:
        return seed
    return int(np.random.SeedSequence([seed, held]).generate_state(1)[0] % 2**31)


def references(setup: SearchSetup, base: TrainedNetwork | None = None) -> dict[str, dict[str, Any]]:
    """Each reference model's cost at the search's input shape, and its metric if trained.

    ``base`` (the search's own network trained with the experiment's recipe) gives the
    ``base`` reference's metric; it is labelled with the network's name.
    """
    trained = load_baselines(setup.experiment)
    found: dict[str, dict[str, Any]] = {}
    for name in setup.references:
        network = setup.context.model if name == "base" else ModelConfig(name=name).build(
            in_channels=setup.data.in_channels, num_classes=setup.data.num_classes)
        cost = setup.measure(network)
        metrics = base.metrics if name == "base" and base is not None else (
            trained[name].metrics if name in trained else None)
        metric = metric_value(SegmentationMetrics.from_dict(metrics), setup.config.metric) if metrics else None
        found[name] = {"params": cost.params, "flops": cost.flops, "latency_ms": cost.latency_ms, "metric": metric}
        if name in trained and name != "base" and len(trained[name].history) > 1:
            found[name]["curve"] = [
                [entry["step"], round(metric_value(SegmentationMetrics.from_dict(entry), setup.config.metric), 5)]
                for entry in trained[name].history
            ]
        if name == "base":
            found[name]["label"] = setup.base_label
    return found


def open_search_study(
    setup: SearchSetup, *, sampler_seed: int | None, create: bool = True, resumed: bool = False
) -> optuna.Study:
    """Creates the study, or loads it and checks it was made with the same settings.

    With ``resumed`` (the search's own run, not a worker's, whose seed is the user's), a study
    that already holds trials gets a sampler seeded by :func:`resumed_seed`.

    Raises:
        ConfigError: a study of that name made with other data, training, budget or space.
    """
    config = setup.config
    storage = open_storage(
        setup.storage_url, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period,
        max_retry=config.max_retry, create=create,
    )
    sampler = make_sampler(config.sampler, sampler_seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage, study_name=setup.study_name, directions=setup.directions, sampler=sampler,
        load_if_exists=True,
    )
    held = sum(trial.state != optuna.trial.TrialState.WAITING for trial in study.get_trials(deepcopy=False))
    if resumed and held and sampler_seed is not None:  # a seeded sampler would draw the first run's trials again
        study.sampler = make_sampler(config.sampler, resumed_seed(sampler_seed, held))
    key = experiment_key(setup.experiment)
    if study.user_attrs.get("compressor_format") == FORMAT:
        stored = study.user_attrs.get("experiment_key")
        if stored != key:
            changed = sorted(part for part in key if key[part] != (stored or {}).get(part))
            raise StudyMismatchError(
                f"study {setup.study_name!r} in {setup.storage_url} was run with other {', '.join(changed)} settings"
            )
        return study
    if study.get_trials(deepcopy=False):
        raise ConfigError(f"study {setup.study_name!r} in {setup.storage_url} was not created by `compressor search`")
    info = StudyInfo(
        experiment=setup.experiment.to_dict(), space=setup.space.name, model=setup.model_config.name,
        objectives=list(config.objectives), metric=config.metric,
        metric_label=metric_label(config.metric, setup.data.class_names), budget=to_data(setup.budget),
        references={}, input_shape=list(setup.input_shape), artifacts=str(setup.artifacts),
        model_args=setup.model_config.builder_args(
            in_channels=setup.data.in_channels, num_classes=setup.data.num_classes
        ),
        init=setup.init.name, parent=str(setup.parent.weights_path.resolve()) if setup.parent is not None else "",
        floor=setup.floor.to_dict(),
        ratio_to=setup.references[0], parent_subject=setup.parent_subject, recipe_legend=setup.space.legend,
    )
    for name, value in {**info.to_attrs(), "experiment_key": key, **version_attrs()}.items():
        study.set_user_attr(name, value)
    for choices in setup.space.starts(setup.context):
        study.enqueue_trial(dict(choices), skip_if_exists=True)
    return study
