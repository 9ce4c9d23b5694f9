"""The networks users bring (segmentation_models_pytorch, torchvision, MONAI), end to end.

Every transform on every network either works (output shape kept, smaller where it shrinks)
or refuses for a reason inherent to the network; none refuses because the graph could not
be captured. The table the README shows is made by experiments/benchmarks/contract_matrix.py.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import third_party
import torch
from conftest import assert_refusal, run_cli
from torch import nn

import compressor
from compressor import TransformError, apply
from compressor.outputs import declare_output, primary_output

SHAPE = (1, 3, 64, 64)
TRANSFORMS = ["separable", "fire", "dilation", "downsample_depth", "skip_fusion", "prune"]

# Where a transform must refuse, and the reason, inherent to the network, its message gives.
REFUSALS = {
    ("smp FPN", "skip_fusion"): r"has no torch.cat",  # FPN adds its pyramid levels
    ("smp Linknet", "skip_fusion"): r"has no torch.cat",  # Linknet adds its skips
    ("tv LRASPP-MobileNetV3", "skip_fusion"): r"has no torch.cat",
    ("smp DeepLabV3+", "downsample_depth"): None,  # works: see test_deeplab_v3plus_cut_rescales_its_upsampling
    ("tv DeepLabV3-MobileNetV3", "downsample_depth"): r"hold the layer that makes the output .*stride_to_dilation=true",
    ("MONAI UNet", "skip_fusion"): r"feeds ConvTranspose2d, not a plain Conv2d",  # its up-sampling reads the cat
}
SHRINKS = {"separable", "fire", "downsample_depth", "skip_fusion", "prune"}


def _needs(network: str) -> None:
    reason = third_party.missing_reason(third_party.NETWORKS[network][1])
    if reason:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("network", list(third_party.NETWORKS))
def test_every_transform_works_or_refuses_for_a_reason_of_the_network(network, transform):
    _needs(network)
    model = third_party.build(network)
    example = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    expected = REFUSALS.get((network, transform))
    if expected:
        with pytest.raises(TransformError, match=expected) as refusal:
            apply(model, [{"name": transform}], example, count_flops=False)
        assert "capture" not in str(refusal.value) and "trace" not in str(refusal.value)
        return
    new, (record,) = apply(model, [{"name": transform}], example, count_flops=False)
    with torch.no_grad():
        before = primary_output(model(example))
        after = primary_output(new.eval()(example))
    assert after.shape == before.shape
    assert record.changed
    if transform in SHRINKS:
        assert record.params_after < record.params_before


def test_a_dict_output_is_read_at_out_and_the_aux_head_is_ignored():
    _needs("tv DeepLabV3-MobileNetV3")
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2, aux_loss=True).eval()
    assert set(model(torch.randn(SHAPE))) == {"out", "aux"}
    new, (record,) = apply(model, ["separable"], SHAPE)
    assert record.params_after < record.params_before
    assert isinstance(new(torch.randn(SHAPE)), dict)  # the network keeps its own output type


class TwoHeads(nn.Module):
    """Returns (masks, labels), as smp's models do with an auxiliary classification head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.masks = nn.Conv2d(8, 2, 1)
        self.labels = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor):
        features = self.body(x)
        return self.masks(features), self.labels(features.mean(dim=(2, 3)))


def test_a_tuple_output_needs_its_index_declared():
    with pytest.raises(compressor.errors.ConfigError, match=r"tuple of 2 outputs; the segmentation's index is not declared$"):
        apply(TwoHeads(), ["separable"], (1, 3, 16, 16))
    model = declare_output(TwoHeads(), 0)
    new, (record,) = apply(model, ["separable"], (1, 3, 16, 16))
    assert record.changed == ["body.0", "body.2"]
    assert new(torch.randn(1, 3, 16, 16))[0].shape == (1, 2, 16, 16)


def test_the_papers_recipe_skips_what_does_not_apply_on_torchvisions_deeplab():
    _needs("tv DeepLabV3-MobileNetV3")
    model = third_party.build("tv DeepLabV3-MobileNetV3")
    _, records = apply(model, compressor.Recipe.load("experiments/recipes/micronet_like.yaml"), (1, 3, 128, 128))
    assert [record.transform for record in records] == ["downsample_depth", "skip_fusion", "fire", "dilation"]
    assert "makes the output" in records[0].skipped_step
    assert records[0].params_after == records[0].params_before
    assert all(record.skipped_step is None and record.changed for record in records[1:])
    assert records[-1].params_after < records[0].params_before / 2


def test_the_papers_recipe_shrinks_smps_unet_with_every_step():
    _needs("smp Unet-resnet18")
    model = third_party.build("smp Unet-resnet18")
    _, records = apply(model, compressor.Recipe.load("experiments/recipes/micronet_like.yaml"), (1, 3, 128, 128))
    assert all(record.skipped_step is None for record in records)
    assert records[-1].params_after * 20 < records[0].params_before


def test_a_required_step_that_does_not_apply_still_refuses():
    _needs("smp FPN")
    with pytest.raises(TransformError, match=r"step 1 \(skip_fusion\).*has no torch.cat"):
        apply(third_party.build("smp FPN"), ["skip_fusion", "fire"], SHAPE)
    _, records = apply(third_party.build("smp FPN"), [{"name": "skip_fusion", "optional": True}, "fire"], SHAPE)
    assert records[0].skipped_step and records[1].changed


def test_smps_size_check_is_followed_and_named_in_the_notes():
    """FPN's forward() checks the input size in Python: the capture follows it for the example."""
    _needs("smp FPN")
    _, (record,) = apply(third_party.build("smp FPN"), ["downsample_depth"], SHAPE)
    assert record.params_after < record.params_before
    assert any("followed" in note and "model.py" in note and "output_stride" in note for note in record.notes)


def test_skip_fusion_looks_through_smps_identity_attention_and_projects_unequal_widths():
    _needs("smp Unet-resnet18")
    model = third_party.build("smp Unet-resnet18")
    new, (record,) = apply(model, ["skip_fusion"], SHAPE)
    convs = [name for name in record.changed if not name.startswith("skip_projections.")]
    assert convs == [f"decoder.blocks.{i}.conv1.0" for i in range(4)]  # the conv, not the Identity before it
    projections = [name for name in record.changed if name.startswith("skip_projections.")]
    assert len(projections) == 3  # block 3 joins equal widths (64 + 64)
    first = new.get_submodule("decoder.blocks.0.conv1.0")
    assert first.in_channels == 256 and model.get_submodule("decoder.blocks.0.conv1.0").in_channels == 512 + 256


def test_dilation_keeps_asps_rates_unless_told_to_overwrite():
    _needs("smp DeepLabV3+")
    model = third_party.build("smp DeepLabV3+")
    aspp = "decoder.aspp.0.convs.1.0.0"
    assert model.get_submodule(aspp).dilation == (12, 12)
    new, (record,) = apply(model, ["dilation"], SHAPE)
    assert new.get_submodule(aspp).dilation == (12, 12) and aspp not in record.changed
    assert "already has rate 12" in record.skipped[aspp]
    assert all(new.get_submodule(name).dilation != model.get_submodule(name).dilation for name in record.changed)
    rerated, (record,) = apply(model, [{"name": "dilation", "overwrite": True}], SHAPE)
    assert aspp in record.changed and rerated.get_submodule(aspp).dilation != (12, 12)


def test_deeplab_v3plus_cut_rescales_its_upsampling():
    """DeepLabV3+'s decoder up-samples the ASPP output x4, past the kept level: after the cut it
    up-samples the bridge x2 instead, and the output keeps its size."""
    _needs("smp DeepLabV3+")
    model = third_party.build("smp DeepLabV3+")
    new, (record,) = apply(model, ["downsample_depth"], SHAPE)
    assert new.get_submodule("decoder.up").scale_factor == 2.0
    assert any("now up-samples from the kept level" in note for note in record.notes)
    assert new(torch.randn(SHAPE)).shape == (1, 2, 64, 64)


def test_torchvisions_deeplab_flattens_with_stride_to_dilation():
    """The refusal's advice works: stride_to_dilation runs the head at a finer resolution."""
    _needs("tv DeepLabV3-MobileNetV3")
    model = third_party.build("tv DeepLabV3-MobileNetV3")
    new, (record,) = apply(model, [{"name": "downsample_depth", "stride_to_dilation": True}], SHAPE)
    assert record.flops_after > record.flops_before and record.params_after == record.params_before
    assert any(note.startswith("FLOPs rose") for note in record.notes)  # the table's notes say so
    assert new(torch.randn(SHAPE))["out"].shape == (1, 2, 64, 64)


def test_a_cut_that_costs_flops_says_so():
    """The bridge standing for MobileNetV2's last stage (96 -> 1280 channels at 1/16) costs more
    than the stage did at 1/32: params fall, FLOPs rise, and the record's notes say it."""
    _needs("smp Unet-mobilenet_v2")
    _, (record,) = apply(third_party.build("smp Unet-mobilenet_v2"), ["downsample_depth"], (1, 3, 128, 128))
    assert record.params_after < record.params_before and record.flops_after > record.flops_before
    assert any(note.startswith("FLOPs rose") for note in record.notes)


def test_prune_on_smps_manet_refuses_within_its_time_limit():
    """torch-pruning's grouping of MAnet's channels runs for more than 10 minutes; the limit ends it."""
    _needs("smp Unet-resnet18")
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.MAnet("resnet18", encoder_weights=None, classes=2).eval()
    with pytest.raises(TransformError, match=r"did not finish grouping .* MAnet within time_limit 2 s"):
        apply(model, [{"name": "prune", "time_limit": 2}], SHAPE, count_flops=False)


class DataBranch(nn.Module):
    """Branches on its input's values: no single graph stands for it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3, padding=1)
        self.b = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return self.a(x)
        return self.b(x)


def test_a_branch_on_tensor_values_is_refused_naming_the_line():
    with pytest.raises(TransformError, match=r"cannot capture the graph of DataBranch \(at tests/test_third_party_networks"
                                               r"\.py:\d+ \(if x\.mean\(\) > 0:\)\): forward\(\) branches on a tensor"):
        apply(DataBranch(), ["downsample_depth"], (1, 3, 16, 16))


def data_branch() -> nn.Module:
    return DataBranch()


def test_a_capture_refusal_prints_one_line_and_no_traceback():
    result = run_cli("apply", "test_third_party_networks:data_branch", "--transform", "skip_fusion",
                     "--input-shape", "1,3,16,16")
    assert_refusal(result, "apply", "cannot capture the graph of DataBranch", "if x.mean() > 0:")


@pytest.mark.slow  # kept out of the default run for CI's time; `pytest -m slow` runs it
def test_the_contract_matrix_script_runs_on_two_networks(tmp_path):
    _needs("smp Unet-resnet18")
    sys.path.insert(0, "experiments/benchmarks")
    try:
        import contract_matrix
    finally:
        sys.path.remove("experiments/benchmarks")
    rows = contract_matrix.matrix(["smp Unet-resnet18", "MONAI UNet"], size=64)
    cells = {(row["network"], row["transform"]): row for row in rows}
    assert cells[("smp Unet-resnet18", "separable")]["params_ratio"] > 1
    assert "feeds ConvTranspose2d" in cells[("MONAI UNet", "skip_fusion")]["refused"]


def test_search_on_a_users_network_trains_it_as_the_reference_and_reports_against_it(cli, tmp_path):
    _needs("smp Unet-resnet18")
    from search_helpers import write_tiny_experiment

    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", n_trials=3, baselines=True,
                                   references=["base"])
    result = cli("search", str(config), "--space", "generic", "--model", "third_party:small_smp_unet",
                     "--model-arg", "classes=2", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "reference third_party:small_smp_unet (9 steps, trained now" in result.stdout
    assert not (tmp_path / "run" / "baselines").exists()  # U-Net and Micro-Net were not asked for
    storage = f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    report = cli("report", "--study", "tiny", "--storage", storage, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    import pandas as pd

    params = sum(p.numel() for p in third_party.small_smp_unet().parameters())
    summary = (tmp_path / "report" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| rank |"))
    assert "params vs small_smp_unet (base)" in header and "U-Net" not in header
    (reference,) = [line for line in summary.splitlines() if line.startswith("| ref |")]
    cells = [cell.strip() for cell in reference.strip("|").split("|")]
    assert cells[1] == "small_smp_unet (base)" and cells[5:7] == ["1.00x", "1.00x"]
    assert 0 <= float(cells[4]) <= 1  # its metric: it was trained as the reference
    trials = pd.read_csv(tmp_path / "report" / "trials.csv")
    measured = trials[trials["params"].notna()]
    assert len(measured) and (measured["params_ratio"] - params / measured["params"]).abs().max() < 1e-6
    page = (tmp_path / "report" / "index.html").read_text()
    assert "params vs small_smp_unet (base)" in page and "compression vs" not in summary


def test_a_network_for_other_classes_is_refused_before_any_training(cli, tmp_path):
    _needs("smp Unet-resnet18")
    from search_helpers import write_tiny_experiment

    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", baselines=True)
    result = cli("search", str(config), "--space", "generic", "--model", "third_party:small_smp_unet",
                     "--model-arg", "classes=6")
    assert_refusal(result, "search", "model third_party:small_smp_unet outputs 6 classes but the data has 2",
                   "--model-arg classes=2")
    assert not (tmp_path / "run" / "baselines").exists() and not (tmp_path / "run" / "parents").exists()
    assert not (tmp_path / "run" / "search.db").exists()


def test_the_head_is_found_on_the_way_to_out_not_at_the_aux_head():
    """With aux_loss, torchvision's auxiliary classifier runs last; the cut must still see that the
    deepest level holds the real head (the one making ``out``) and refuse."""
    _needs("tv DeepLabV3-MobileNetV3")
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2, aux_loss=True).eval()
    with pytest.raises(TransformError, match=r"makes the output \(layer 'classifier.4'\)"):
        apply(model, ["downsample_depth"], SHAPE)
