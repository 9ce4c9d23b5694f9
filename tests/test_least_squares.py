"""``lstsq`` reconstruction: the replaced layers' last convolutions solved in closed form, layer after layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import compressor
from compressor.batchnorm import reestimate_on
from compressor.data import SyntheticConfig
from compressor.finetune import FinetuneConfig, calibration_batches
from compressor.models.blocks import Fire, SeparableConv2d
from compressor.train import TrainConfig, reestimate_batchnorm, train
from compressor.transforms import apply
from compressor.transforms.least_squares import MAX_FEATURES, NormalEquations, linear_tail
from compressor.transforms.reconstruct import output_gap, reconstruct


def _chain(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()


def test_layer_after_layer_each_is_solved_from_what_the_solved_ones_before_it_give():
    """Two replaced 1x1 convs the student can match exactly: solved in turn, the second from the first's
    solved output (not from the output it had before), the student ends on the teacher."""
    teacher, student = _chain(0), _chain(1)
    images = torch.randn(16, 3, 8, 8)
    reestimate_on(teacher, images.split(4))  # a teacher whose statistics are those of these images, as a trained one's
    student[1].load_state_dict(teacher[1].state_dict())  # the norm kept, only the convs replaced
    report = reconstruct(teacher, student, images, method="lstsq", batch_size=4, balance=False)
    assert report.points == ["0", "3"]
    assert report.output_error_before > 0.3
    assert report.output_error_after < 1e-3 and max(report.errors_after.values()) < 1e-3
    assert torch.allclose(student(images), teacher(images), atol=1e-3)
    assert report.steps == 200  # the Adam steps it was given, which lstsq does not take


def test_a_fire_and_a_separable_conv_are_solved_through_their_expands_and_pointwise():
    conv = nn.Conv2d(8, 12, 3, padding=2, dilation=2, bias=True)
    fire = Fire(8, 12, squeeze_ratio=1.0, dilation=2, bias=True, activation=False)
    assert [(c, part) for c, part in linear_tail(fire)] == [(fire.expand1x1.conv, slice(0, 6)), (fire.expand3x3.conv, slice(6, 12))]
    separable = SeparableConv2d(8, 12, 3, padding=1)
    assert linear_tail(separable) == [(separable.pointwise, slice(0, 12))]
    # no closed form through what comes after the convolutions, or for what the systems cannot hold
    assert linear_tail(Fire(8, 12, activation=True)) is None
    assert linear_tail(Fire(8, 12, norm="batch", activation=False)) is None
    assert linear_tail(nn.Conv2d(8, 8, 3, groups=8)) is None
    assert linear_tail(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")) is None
    assert linear_tail(nn.Conv2d(MAX_FEATURES // 9 + 1, 8, 3)) is None
    assert linear_tail(nn.Sequential(nn.Conv2d(8, 8, 1))) is None
    # the fire's expands from its own squeeze's output: the best the fire can do with that squeeze
    x = torch.randn(8, 8, 10, 10)
    with torch.no_grad():
        target = conv(x)
        squeezed = fire.squeeze(x)
        before = (fire(x) - target).pow(2).sum()
        for (layer, channels) in linear_tail(fire):
            system = NormalEquations(layer, channels)
            system.add(squeezed, target[:, channels], None)
            assert system.solve_into()
        after = (fire(x) - target).pow(2).sum()
    assert after < 0.5 * before


def test_a_solution_that_does_not_lower_the_error_leaves_the_weights():
    target = nn.Conv2d(4, 3, 1)
    x = torch.randn(8, 4, 6, 6)
    with torch.no_grad():
        goal = target(x)
    exact = copy.deepcopy(target)
    system = NormalEquations(exact, slice(0, 3))
    system.add(x, goal, None)
    assert not system.solve_into()  # already the least-squares solution: nothing to gain
    assert torch.equal(exact.weight, target.weight)
    weighted = NormalEquations(nn.Conv2d(4, 3, 1), slice(0, 3))
    with pytest.raises(ValueError, match="positions are not the convolution's output's"):
        weighted.add(x, goal[:, :, :3], None)


def test_partial_batchnorm_reestimation_stops_before_a_module_and_leaves_the_rest():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    network[3].running_mean.fill_(7.0)
    images = [torch.randn(4, 3, 6, 6) + 2 for _ in range(3)]
    full = copy.deepcopy(network)
    assert reestimate_on(network, images, before=network[2]) == 1
    assert torch.all(network[3].running_mean == 7.0) and network[3].momentum == 0.1  # not reached: as it was
    reestimate_on(full, images)
    assert torch.allclose(network[1].running_mean, full[1].running_mean)
    assert torch.allclose(network[1].running_var, full[1].running_var) and network[1].momentum == 0.1
    assert network.training is False


@pytest.fixture(scope="module")
def data():
    return SyntheticConfig(labels="binary", patch_size=32, train_images=32, val_images=1, val_size=48).build()


def test_on_the_papers_recipe_lstsq_brings_the_trained_unet_closer_without_adam(data):
    torch.manual_seed(0)
    teacher = compressor.unet(in_channels=3, base_width=8, norm="batch")
    train(teacher, data, TrainConfig(steps=40, lr=3e-3, batch_size=4, progress=False, eval_window=48, eval_overlap=0,
                                     threads=1))
    teacher.eval()
    images = torch.cat(calibration_batches(data, 4, batch_size=4, seed=0))
    torch.manual_seed(0)
    student, _ = apply(teacher, [{"name": "fire", "squeeze_ratio": 0.5}], (1, 3, 32, 32), init="inherit", count_flops=False)
    reestimate_batchnorm(student, data, batches=4, batch_size=4)
    untouched = copy.deepcopy(student)
    optimizers = []
    original = torch.optim.Adam.__init__
    try:
        torch.optim.Adam.__init__ = lambda self, *a, **k: (optimizers.append(1), original(self, *a, **k))[1]
        report = reconstruct(teacher, student, images, method="lstsq", batch_size=4)
    finally:
        torch.optim.Adam.__init__ = original
    assert optimizers == []  # closed form, no Adam
    assert len(report.points) > 4 and report.output_error_after < 0.8 * report.output_error_before
    assert report.output_error_after == pytest.approx(output_gap(teacher, student, images, 4), abs=1e-5)
    improved = [name for name in report.points if report.errors_after[name] < report.errors_before[name]]
    assert len(improved) >= len(report.points) - 1
    # only the fires' expands and the batch norms' statistics moved: every squeeze is as inherited
    for name, module in student.named_modules():
        if isinstance(module, Fire):
            assert torch.equal(module.squeeze.conv.weight, untouched.get_submodule(name).squeeze.conv.weight)
    assert FinetuneConfig(reconstruct="lstsq").reconstruct == "lstsq"


def test_a_point_left_as_it_is_between_two_solved_ones_does_not_leave_stale_statistics_behind():
    """A changed point with no closed form (a grouped conv) between two that have one: the norm after it is
    re-estimated before the last point is solved, so the final statistics are the ones it was solved with."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8),
                            nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    images = torch.randn(32, 3, 8, 8)
    reestimate_on(teacher, images.split(8))
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[0].weight.mul_(3.0)
        student[0].bias.add_(2.0)  # the first layer far off
        student[2].weight.add_(0.01 * torch.randn_like(student[2].weight))  # changed, grouped: no closed form
        student[5].weight.normal_()
        student[5].bias.zero_()
    reestimate_on(student, images.split(8))
    report = reconstruct(teacher, student, images, method="lstsq", batch_size=8, balance=False)
    assert report.points == ["0", "2", "5"]
    assert report.output_error_after < 0.2 * report.output_error_before


def test_each_position_counts_by_its_weight_and_a_strided_conv_is_solved_at_its_own_positions():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    strided = nn.Conv2d(3, 2, 3, stride=2, padding=1)
    with torch.no_grad():
        goal = strided(x)
    student = nn.Conv2d(3, 2, 3, stride=2, padding=1)
    system = NormalEquations(student, slice(0, 2))
    system.add(x, goal, None)
    assert system.solve_into() and torch.allclose(student(x), goal, atol=1e-4)
    # what no 1x1 conv can give exactly: the weighted fit is the weighted least-squares solution
    goal = torch.randn(4, 2, 8, 8)
    weights = torch.rand(4, 1, 16, 16) * 3  # at twice the resolution: averaged down to the target's positions
    fits = {}
    for name, given in (("weighted", weights), ("plain", None)):
        conv = nn.Conv2d(3, 2, 1, bias=False)
        system = NormalEquations(conv, slice(0, 2))
        system.add(x, goal, given)
        assert system.solve_into()
        fits[name] = conv.weight.detach().reshape(2, 3).double()
    rows = x.permute(0, 2, 3, 1).reshape(-1, 3).double()
    values = goal.permute(0, 2, 3, 1).reshape(-1, 2).double()
    pooled = torch.nn.functional.avg_pool2d(weights, 2).reshape(-1, 1).double()
    expected = torch.linalg.solve(rows.T @ (rows * pooled), (rows * pooled).T @ values).T
    assert torch.allclose(fits["weighted"], expected, atol=1e-3)
    assert not torch.allclose(fits["plain"], expected, atol=1e-3)


def test_stopping_before_a_norm_leaves_that_norm_as_it_was():
    network = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)).eval()
    network[1].running_mean.fill_(5.0)
    network[2].running_mean.fill_(3.0)
    assert reestimate_on(network, [torch.randn(2, 3, 4, 4)], before=network[1]) == 0
    assert torch.all(network[1].running_mean == 5.0) and torch.all(network[2].running_mean == 3.0)


def _under_a_norm(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()


def test_a_fit_with_less_spread_than_its_target_keeps_the_norm_after_it_as_solved():
    """A 1x1 conv standing for a 3x3 one fits a part of it: its output has less spread than the teacher's
    there, and re-estimating the norm after it scales the fit back up, further from the teacher. The norm
    then keeps the statistics it had; a study made before build version 7 (``choose_norms=False``)
    re-estimates it still."""
    teacher = _under_a_norm(0)
    images = torch.randn(32, 3, 8, 8)
    reestimate_on(teacher, images.split(8))
    student = copy.deepcopy(teacher)
    student[0] = nn.Conv2d(3, 8, 1)
    reports, states = {}, {}
    for choose in (True, False):
        trained = copy.deepcopy(student)
        reports[choose] = reconstruct(teacher, trained, images, method="lstsq", batch_size=8, balance=False,
                                      choose_norms=choose)
        states[choose] = trained
    kept, always = reports[True], reports[False]
    assert kept.norms_reestimated is False and always.norms_reestimated is True
    assert kept.errors_after == always.errors_after  # the same solve (the conv's own output, before the norm)
    assert kept.output_error_after < always.output_error_after - 0.1 < kept.output_error_before
    assert torch.equal(states[True][1].running_var, teacher[1].running_var)  # as the solve left it
    assert not torch.allclose(states[False][1].running_var, teacher[1].running_var)
    assert torch.equal(states[True][0].weight, states[False][0].weight)


def test_a_close_fit_under_stale_statistics_re_estimates_them():
    """The student's conv can match the teacher's exactly, and its norm holds the statistics of its own first
    weights: solved, the output is the teacher's only with the norms re-estimated, which the student keeps."""
    teacher, student = _under_a_norm(0), _under_a_norm(1)
    images = torch.randn(32, 3, 8, 8)
    reestimate_on(teacher, images.split(8))
    student[1].weight.data.copy_(teacher[1].weight)
    student[1].bias.data.copy_(teacher[1].bias)
    student[3].load_state_dict(teacher[3].state_dict())
    reestimate_on(student, images.split(8))  # its norm: the statistics of the conv it had
    kept = reconstruct(teacher, copy.deepcopy(student), images, method="lstsq", batch_size=8, balance=False)
    always = reconstruct(teacher, copy.deepcopy(student), images, method="lstsq", batch_size=8, balance=False,
                         choose_norms=False)
    assert kept.norms_reestimated is True and kept.output_error_after == always.output_error_after < 1e-3
    nothing = reconstruct(teacher, copy.deepcopy(teacher), images, method="lstsq", batch_size=8)
    assert nothing.norms_reestimated is None  # nothing to fit: nothing kept


@pytest.mark.parametrize("norm", ["none", "no running statistics"])
def test_without_running_statistics_there_is_no_norm_to_keep_or_re_estimate(norm):
    def chain(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        middle = nn.Identity() if norm == "none" else nn.BatchNorm2d(6, track_running_stats=False)
        return nn.Sequential(nn.Conv2d(3, 6, 1), middle, nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()

    teacher, student = chain(0), chain(1)
    if norm != "none":
        student[1].load_state_dict(teacher[1].state_dict())
    report = reconstruct(teacher, student, torch.randn(16, 3, 8, 8), method="lstsq", batch_size=4, balance=False)
    assert report.output_error_after < report.output_error_before  # solved and kept
    assert report.norms_reestimated is None and report.output_error_as_solved is None
