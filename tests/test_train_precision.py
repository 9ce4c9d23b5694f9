"""``train.precision``: bf16 autocast runs the forward passes in bfloat16, keeps the weights and
the losses in float32, and stays out of the keys of results stored before it existed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_train import FAST, _small_model

from compressor.data import SyntheticConfig
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.experiment.baselines import train_key
from compressor.train import train
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


def test_auto_takes_bf16_only_where_the_hardware_runs_it():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_supported(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert not bf16_supported(torch.device("meta"))


def test_precision_is_checked_and_fp32_leaves_stored_keys_alone():
    assert Experiment.from_dict({}).train.precision == "fp32"
    assert "precision" not in train_key(Experiment.from_dict({}).train)  # baselines stored before keep their key
    assert train_key(Experiment.from_dict({"train": {"precision": "bf16"}}).train)["precision"] == "bf16"
    with pytest.raises(ConfigError, match=r"train.precision: expected one of 'fp32', 'bf16', 'auto', got 'half'"):
        Experiment.from_dict({"train": {"precision": "half"}})
