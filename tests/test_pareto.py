from __future__ import annotations

import math

import numpy as np
import pytest

from compressor.study import as_minimization, dominates, hypervolume, nondominated_ranks, pareto_mask

UP_DOWN = ["maximize", "minimize"]


def test_as_minimization_negates_maximized_columns():
    assert as_minimization([[0.3, 10]], UP_DOWN).tolist() == [[-0.3, 10.0]]
    with pytest.raises(ValueError, match="'up'"):
        as_minimization([[1, 2]], ["up", "minimize"])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0.3, 100], [0.2, 200], True),     # better in both
        ([0.3, 100], [0.3, 200], True),     # equal metric, smaller
        ([0.3, 100], [0.3, 100], False),    # equal: no one dominates
        ([0.3, 300], [0.2, 200], False),    # a trade-off
        ([0.2, 200], [0.3, 100], False),
    ],
)
def test_dominates(a, b, expected):
    assert dominates(a, b, UP_DOWN) is expected


def test_front_keeps_ties_and_duplicates():
    points = [[0.30, 500], [0.25, 200], [0.30, 500], [0.20, 300], [0.25, 200], [0.10, 100]]
    assert pareto_mask(points, UP_DOWN).tolist() == [True, True, True, False, True, True]


def test_ranks_peel_fronts_in_order():
    points = [[0.1, 100], [0.3, 300], [0.2, 400], [0.05, 500], [0.3, 300]]
    # front: (0.1,100), (0.3,300) twice; then (0.2,400); then (0.05,500)
    assert nondominated_ranks(points, UP_DOWN).tolist() == [0, 0, 1, 2, 0]


def test_nan_points_take_part_in_nothing():
    points = [[0.3, 100], [math.nan, 50], [0.2, 200]]
    ranks = nondominated_ranks(points, UP_DOWN)
    assert ranks.tolist() == [0, 2, 1]
    assert pareto_mask(points, UP_DOWN).tolist() == [True, False, False]


def test_empty_and_single():
    assert nondominated_ranks(np.empty((0, 2)), UP_DOWN).tolist() == []
    assert pareto_mask([[0.5, 10]], UP_DOWN).tolist() == [True]


def test_hypervolume_two_objectives_by_hand():
    reference = [0.0, 1.0]
    assert hypervolume([[0.5, 0.5]], UP_DOWN, reference) == pytest.approx(0.25)
    # the union of [0,0.5]x[0.5,1] and [0,0.2]x[0.1,1]: 0.25 + 0.2 * 0.4
    assert hypervolume([[0.5, 0.5], [0.2, 0.1]], UP_DOWN, reference) == pytest.approx(0.33)
    # a dominated point and a duplicate add nothing
    assert hypervolume([[0.5, 0.5], [0.2, 0.1], [0.1, 0.6], [0.5, 0.5]], UP_DOWN, reference) == pytest.approx(0.33)


def test_hypervolume_three_objectives_by_hand():
    directions = ["maximize", "minimize", "minimize"]
    assert hypervolume([[0.4, 0.5, 0.25]], directions, [0.0, 1.0, 1.0]) == pytest.approx(0.4 * 0.5 * 0.75)


def test_hypervolume_ignores_points_outside_the_reference_and_nan():
    reference = [0.0, 1.0]
    assert hypervolume([[0.5, 2.0]], UP_DOWN, reference) == 0.0          # bigger than the reference
    assert hypervolume([[0.0, 0.5]], UP_DOWN, reference) == 0.0          # not better than the metric reference
    assert hypervolume([[math.nan, 0.5], [0.5, 0.5]], UP_DOWN, reference) == pytest.approx(0.25)
    assert hypervolume([], UP_DOWN, reference) == 0.0


@pytest.mark.parametrize(
    "call",
    [lambda points: nondominated_ranks(points, UP_DOWN), lambda points: hypervolume(points, UP_DOWN, [0.0, 200.0])],
    ids=["nondominated_ranks", "hypervolume"],
)
def test_inputs_are_not_modified(call):
    points = np.array([[0.3, 100.0], [0.2, 50.0]])
    call(points)
    assert points.tolist() == [[0.3, 100.0], [0.2, 50.0]]


def _union_of_boxes(points, bound):
    """The volume of the union of the boxes [point, bound] by inclusion-exclusion (minimization)."""
    import itertools

    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(points, size):
            corner = np.max(np.array(subset), axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.clip(bound - corner, 0, None)))
    return total


@pytest.mark.parametrize("dimensions", [2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_equals_the_inclusion_exclusion_of_the_boxes(dimensions, seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0.0, 1.0, size=(7, dimensions)).round(2)  # rounded: ties and shared edges happen
    bound = np.full(dimensions, 1.0)
    expected = _union_of_boxes(points, bound)
    assert expected > 0
    assert hypervolume(points, ["minimize"] * dimensions, bound) == pytest.approx(expected, rel=1e-9)


def test_no_private_optuna_module_is_imported():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    sources = [*root.glob("compressor/**/*.py"), *root.glob("search_spaces/**/*.py"), *root.glob("tests/*.py"),
               *root.glob("experiments/**/*.py")]
    offending = [str(path.relative_to(root)) for path in sources
                 if "optuna._" in path.read_text() and path.name != "test_pareto.py"]
    assert sources and offending == []
