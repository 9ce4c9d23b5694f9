"""The layers that make a network's outputs, and fire leaving them as they are.

A fire module is sized by its conv's output channels; for the classifier those are the classes, so
smp's 3x3 ``segmentation_head`` (16 -> 2) became a one-channel squeeze, and every fire-based student
of a trained smp Unet-resnet34 stayed at building IoU 0 through 400 fine-tuning steps (BENCHMARKS,
knowledge). These tests pin the rule down.
"""

from __future__ import annotations

import dataclasses

import pytest
import third_party
import torch
from torch import nn

import compressor
from compressor import apply
from compressor.outputs import declare_output
from compressor.transforms.heads import output_layers


class Decoder(nn.Module):
    """A body, then a 3x3 head to 2 classes (as smp's ``segmentation_head``) and an auxiliary 3x3 head."""

    def __init__(self, aux: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Conv2d(16, 2, 3, padding=1), nn.Identity())
        self.aux = nn.Conv2d(16, 2, 3, padding=1) if aux else None

    def forward(self, x: torch.Tensor):
        features = self.body(x)
        out = self.head(features)
        return {"out": out, "aux": self.aux(features)} if self.aux is not None else out


def test_the_output_layers_are_the_nearest_layers_to_the_output_compressor_reads():
    assert output_layers(Decoder(), torch.zeros(1, 1, 8, 8)) == {"head.0"}
    assert output_layers(Decoder(aux=True), torch.zeros(1, 1, 8, 8)) == {"head.0"}  # "out", not the auxiliary head
    declared = declare_output(Decoder(aux=True), "aux")
    assert output_layers(declared, torch.zeros(1, 1, 8, 8)) == {"aux"}
    two = Decoder(aux=True)
    two.forward = lambda x: (two.head(two.body(x)), two.aux(two.body(x)))  # two tensors, none declared: both
    assert output_layers(two, torch.zeros(1, 1, 8, 8)) == {"head.0", "aux"}
    # an in-place ReLU after the head and a residual add on the way do not hide it
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 2, 1), nn.ReLU(inplace=True))
    assert output_layers(net, torch.zeros(1, 1, 8, 8)) == {"1"}


class InPlace(nn.Module):
    """Scales its input in place, and ends with a functional convolution of its own weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.last = nn.Parameter(torch.randn(2, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0)
        return nn.functional.conv2d(self.conv(x), self.last)


def test_an_input_changed_in_place_and_a_functional_head_are_handled():
    # the functional conv makes the output: the conv before it does not, so fire may replace it
    assert output_layers(InPlace(), torch.zeros(1, 1, 8, 8)) == set()
    model = InPlace()
    model.forward = lambda x: {"out": model.conv(x.mul_(2.0)), "features": nn.functional.conv2d(model.conv(x), model.last)}
    assert output_layers(model, torch.zeros(1, 1, 8, 8)) == {"conv"}


def test_integer_inputs_and_outputs_without_history_still_find_a_head():
    class Normalizing(Decoder):
        def forward(self, x):
            return super().forward(x.float() / 255)

    assert output_layers(Normalizing(), torch.zeros(1, 1, 8, 8, dtype=torch.uint8)) == {"head.0"}
    detached = Decoder()
    detached.forward = lambda x: detached.head(detached.body(x)).detach()
    assert output_layers(detached, torch.zeros(1, 1, 8, 8)) == {"head.0"}  # the last layer to run stands for it


def test_finding_them_works_on_frozen_weights_and_leaves_the_network_as_it_was():
    net = Decoder().train()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    net.body[1].eval()  # a frozen batch norm inside a network in training mode stays frozen
    statistics = net.body[1].running_mean.clone()
    assert output_layers(net, torch.randn(2, 1, 8, 8)) == {"head.0"}
    assert net.training and not net.body[1].training and torch.equal(net.body[1].running_mean, statistics)
    assert not any(parameter.requires_grad or parameter.grad is not None for parameter in net.parameters())
    assert not any(module._forward_hooks for module in net.modules())


def test_fire_keeps_a_wide_head_and_says_why_unless_told():
    new, (record,) = apply(Decoder(), ["fire"], (1, 1, 16, 16))
    assert record.changed == ["body.0", "body.3"]
    assert "head.0" in record.skipped
    assert record.skipped["head.0"].startswith("makes the network's output (2 channels): a fire module would squeeze its 16 inputs to 1 channel")
    assert isinstance(new.head[0], nn.Conv2d)
    replaced, (record,) = apply(Decoder(), [{"name": "fire", "head": True}], (1, 1, 16, 16))
    assert record.changed == ["body.0", "body.3", "head.0"] and not isinstance(replaced.head[0], nn.Conv2d)
    # keeping it is a choice, not a refusal: strict still replaces every other layer
    _, (record,) = apply(Decoder(), [{"name": "fire", "strict": True}], (1, 1, 16, 16))
    assert record.changed == ["body.0", "body.3"] and "head.0" in record.skipped


def test_files_and_studies_made_before_the_head_was_kept_rebuild_as_they_were(tmp_path):
    """A model file records every parameter of its steps: one saved before ``head`` existed replaced
    the head, and loads so; a study made before (build version 3) rebuilds its trials so."""
    from compressor.candidates.versions import as_built_for
    from compressor.origin import origin_of, set_origin

    old, _ = apply(compressor.build_model("test_heads:Decoder", {}), [{"name": "fire", "head": True}], (1, 1, 16, 16))
    origin = origin_of(old)
    steps = tuple({key: value for key, value in step.items() if key != "head"} for step in origin.steps)
    set_origin(old, dataclasses.replace(origin, steps=steps))  # as the version before wrote it
    compressor.save_model(tmp_path / "old.pt", old)
    loaded = compressor.load_model(tmp_path / "old.pt", trust=True)  # our own class: trusted
    assert not isinstance(loaded.head[0], nn.Conv2d)
    assert torch.equal(loaded.head[0].squeeze.conv.weight, old.head[0].squeeze.conv.weight)
    recipe = compressor.Recipe.from_data([{"name": "fire"}])
    assert dict(as_built_for(recipe, 3).steps[0].params) == {"head": True}
    assert as_built_for(recipe, 4) is recipe


def test_a_1x1_head_is_skipped_for_what_it_is_and_the_papers_recipe_builds_unet_as_before():
    _, records = apply(compressor.unet(in_channels=1, base_width=4), compressor.Recipe.load("experiments/recipes/micronet_like.yaml"),
                       (1, 1, 64, 64))
    fire = next(record for record in records if record.transform == "fire")
    assert set(fire.skipped.values()) == {"is a 1x1 conv (a fire module would not be smaller)"}  # the head among them
    # head: true changes nothing on U-Net, so the recipe's hash leaves it out at its default
    assert (compressor.Recipe.from_data([{"name": "fire"}]).hash()
            == compressor.Recipe.from_data([{"name": "fire", "head": False}]).hash()
            != compressor.Recipe.from_data([{"name": "fire", "head": True}]).hash())


def test_fire_on_smps_unet_keeps_its_segmentation_head():
    reason = third_party.missing_reason(third_party.NETWORKS["smp Unet-resnet18"][1])
    if reason:
        pytest.skip(reason)
    model = third_party.build("smp Unet-resnet18", in_channels=1)
    new, (record,) = apply(model, ["fire"], (1, 1, 64, 64))
    assert "segmentation_head.0" not in record.changed and "segmentation_head.0" in record.skipped
    assert isinstance(new.segmentation_head[0], nn.Conv2d)
    assert len(record.changed) == 27  # every other 3x3 conv of the encoder and decoder
