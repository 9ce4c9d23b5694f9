"""A study read as data: what it stores is checked before a worker, an export or a confirmation uses it.

Anyone who can write a study's storage (the SQLite file, the PostgreSQL database) chooses
what ``compressor worker``, ``export`` and ``confirm`` do with it: the network they build
(the study's ``model`` and its arguments), the folders they write (the run folder, the
artifacts folder) and the weights file they read (the parent). So, as for a model file, a
study is data unless the user trusts it (``--trust``):

- its network is built under :func:`compressor.models.policy.building_from`: a registered
  model or a model class of a known package, with plain architecture arguments, weights off,
  its size counted first, nothing downloaded;
- its settings have the types compressor stored (a mapping of arguments, a list of sizes);
- its artifacts folder is a folder named ``artifacts`` and its parent a ``.pt`` file; none of
  them, nor its run folder, is reached through ``..`` (a study name like ``../../x`` makes
  the default run folder ``runs/../../x``); what is written there has names compressor
  chooses (``baselines/unet.pt``, Optuna's artifact ids); the weights files are read as data
  (:func:`compressor.tensor_files.read_tensor_file`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

from compressor.bounds import shown
from compressor.errors import ConfigError, UntrustedModelError
from compressor.experiment import Experiment
from compressor.models.loading import allowed
from compressor.models.policy import building_from
from compressor.study import StudyInfo
from compressor.units import parse_shape

__all__ = ["stored_experiment", "building_study", "check_study", "check_study_models"]

_INITS = ("random", "inherit", "distill")
#: the largest patch a study's candidates are built at without trust (a 1024x1024 patch: 2**20 values a band)
MAX_STUDY_PATCH = 1024


def check_study(study_name: str, info: StudyInfo, *, trust: bool) -> None:
    """Refuses a study whose settings are not what compressor stores, or (unless ``trust``) whose
    paths leave the places compressor puts them.

    Raises:
        ConfigError: a setting of the wrong type.
        UntrustedModelError: a path that leaves its place.
    """
    where = f"study {study_name!r}"
    _expect(isinstance(info.experiment, dict), where, "experiment", "a mapping of settings", info.experiment)
    _expect(isinstance(info.model, str) and bool(info.model), where, "model", "a model name", info.model)
    _expect(isinstance(info.model_args, dict), where, "model_args", "a mapping of arguments", info.model_args)
    _expect(isinstance(info.artifacts, str), where, "artifacts", "a folder", info.artifacts)
    _expect(isinstance(info.parent, str), where, "parent", "a file", info.parent)
    _expect(info.init in _INITS, where, "init", f"one of {', '.join(_INITS)}", info.init)
    _expect(isinstance(info.input_shape, list) and len(info.input_shape) >= 3, where, "input_shape",
            "a list of sizes", info.input_shape)
    parse_shape(info.input_shape, what=f"{where}: its input_shape")
    if trust:
        return
    if info.artifacts:
        _inside(info.artifacts, where, "artifacts folder")
        if PurePath(info.artifacts).name != "artifacts":
            raise _untrusted(where, f"its artifacts folder {shown(info.artifacts, 80)} is not a folder named 'artifacts' "
                                    "(where compressor keeps a study's weights)")
    stored_parent = (info.experiment.get("search") or {}).get("parent")  # a search from a trained file
    for parent in filter(None, (info.parent, stored_parent)):
        _expect(isinstance(parent, str), where, "parent", "a file", parent)
        _inside(parent, where, "parent")
        if PurePath(parent).suffix not in (".pt", ".pth"):
            raise _untrusted(where, f"its parent {shown(parent, 80)} is not a .pt weights file")


def stored_experiment(study_name: str, info: StudyInfo, *, trust: bool, threads: int | str | None = None) -> Experiment:
    """The experiment ``study_name`` stored, checked (:func:`check_study`); unless ``trust``, its run
    folder not reached through ``..`` and the networks it names allowed (:func:`check_study_models`).
    ``threads`` replaces the stored ``train.threads`` before it is checked (a study made on a
    machine with more cores is joined with fewer threads).

    Raises:
        ConfigError: a stored setting that is not valid.
        UntrustedModelError: a run folder reached through ``..``, or another path of :func:`check_study`.
    """
    check_study(study_name, info, trust=trust)
    data = info.experiment
    if threads is not None:
        data = {**data, "train": {**(data.get("train") or {}), "threads": threads}}
    experiment = Experiment.from_dict(data, source=f"study {study_name!r}")
    if not trust:
        _inside(str(experiment.run_path), f"study {study_name!r}", "run folder")
        _within_bounds(f"study {study_name!r}", experiment)
        check_study_models(study_name, info, experiment, trust=trust)
    return experiment


def check_study_models(study_name: str, info: StudyInfo, experiment: Experiment, *, trust: bool) -> None:
    """Refuses, before any work, a study naming a network the policy would refuse to build (the
    search's model, the experiment's, and the one export rebuilds), unless ``trust``.

    Raises:
        UntrustedModelError: a builder or an argument the policy refuses.
    """
    named = [(info.model, info.model_args), (experiment.model.name, experiment.model.args)]
    if experiment.search.model:
        named.append((experiment.search.model, {}))
    with building_study(study_name, info, trust=trust):
        for spec, args in named:
            allowed(spec, args)


@contextlib.contextmanager
def building_study(study_name: str, info: StudyInfo, *, trust: bool) -> Iterator[None]:
    """While inside, networks are built as the study's data (:mod:`compressor.models.policy`).

    A study whose candidates start from random weights builds its network exactly as stored, so
    a builder that would start from downloaded weights is refused rather than built without them.
    """
    with building_from(f"study {study_name!r}", trust=trust, replaces_weights=info.init != "random"):
        yield


#: the largest value a study read without trust may set, by setting: what its commands allocate grows with each
STUDY_BOUNDS = {"data.patch_size": MAX_STUDY_PATCH, "data.val_size": 8192, "data.val_images": 256,
                "data.train_images": 1 << 20, "cost.input_size": 2048, "finetune.calibrate": 64,
                "train.batch_size": 512, "train.eval_window": 4096, "train.eval_batch_size": 64}


def _within_bounds(where: str, experiment: Experiment) -> None:
    for key, bound in STUDY_BOUNDS.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(experiment, section), name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > bound:
            raise _untrusted(where, f"its {key} {value} is more than the {bound} a study read as data may set")


def _inside(path: str, where: str, what: str) -> None:
    if ".." in PurePath(path).parts:
        raise _untrusted(where, f"its {what} {shown(path, 80)} goes through '..'")


def _expect(ok: bool, where: str, key: str, kind: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{where}: its stored {key} is not {kind} ({type(value).__name__} {shown(value, 60)}); "
                          "the study was not written by compressor search")


def _untrusted(where: str, reason: str) -> UntrustedModelError:
    return UntrustedModelError(f"{where}: {reason}; a study is used so only when you trust it (trust=True)")
