"""Bounds in one place (compressor.bounds): every number a user gives, from a file, a ``--set`` or a flag.

The CLI cases run in-process (``main([...])``): each must be exactly one ``compressor CMD: error:``
line on stderr naming the key (or flag) and the value, exit code 2, no traceback, and nothing
written. A few of them are also rows of docs/bad_inputs.md, run there as real processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import typing
from pathlib import Path

import pytest
import torch
import yaml
from conftest import one_error_line
from search_helpers import tiny_experiment_data

from compressor import bounds
from compressor.bounds import (
    CONFIG_BOUNDS,
    MAX_ELEMENTS,
    MAX_SEED,
    MAX_SIDE,
    SEED,
    Bound,
    check_config_value,
    check_shape,
    check_threads,
    max_threads,
    output_argument,
    parse_threads,
    shown,
    threads_argument,
)
from compressor.cli import main
from compressor.data.base import DATASETS
from compressor.errors import ConfigError
from compressor.experiment import Experiment, load_experiment
from compressor.io import read_yaml
from compressor.schema import check_value
from compressor.threads import resolve_threads, torch_threads
from compressor.units import parse_shape

# -- the bounds themselves ---------------------------------------------------------------------


def test_a_bound_says_its_range_and_takes_its_edges():
    assert SEED.check(0, "s") == 0 and SEED.check(MAX_SEED, "s") == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 2**64 + 1, 1.0, True, "3", None):
        with pytest.raises(ConfigError, match=r"^s must be an integer in \[0, 4294967295\], got "):
            SEED.check(bad, "s")
    fraction = Bound(0, 1, integer=False, open_low=True)
    assert fraction.describe() == "a number in (0, 1]"
    assert fraction.check(1, "f") == 1 and fraction.check(0.5, "f") == 0.5
    for bad in (0, 0.0, 1.5, math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match=r"^f must be a number in \(0, 1\], got "):
            fraction.check(bad, "f")
    assert bounds.POSITIVE.describe() == "a finite number > 0"
    with pytest.raises(ConfigError, match="got inf"):
        bounds.POSITIVE.check(math.inf, "lr")


@pytest.mark.parametrize("text", ["-1", "4294967296", "1e3", "nan", "", "seven", "1.5"])
def test_a_flag_reads_text_and_quotes_it_when_refused(text):
    parse = SEED.argument("--seed")
    with pytest.raises(ConfigError) as raised:
        parse(text)
    assert str(raised.value) == f"--seed must be an integer in [0, 4294967295], got {text!r}"


def test_a_float_flag_refuses_nan_and_infinity():
    parse = bounds.SECONDS.argument("--timeout")
    assert parse("60") == 60.0 and parse("1.5") == 1.5
    for text in ("nan", "NaN", "inf", "-inf", "0", "-3", str(bounds.MAX_SECONDS + 1)):
        with pytest.raises(ConfigError, match=rf"^--timeout must be a number in \(0, {bounds.MAX_SECONDS}\], got '"):
            parse(text)


def test_threads_are_at_most_a_small_multiple_of_the_cores():
    cores = os.cpu_count() or 1
    assert max_threads() == bounds.THREADS_PER_CORE * cores
    assert check_threads(max_threads(), "t") == max_threads()
    assert check_threads("auto", "t") == "auto" and check_threads(None, "t") is None
    for bad in (0, -1, max_threads() + 1, 100_000, True, 2.0):
        with pytest.raises(ConfigError, match=rf"^t must be 'auto' or a count in \[1, {max_threads()}\] "
                                              rf"\(4 x the {cores} cores here\), got "):
            check_threads(bad, "t")
    assert parse_threads("auto") == "auto" and parse_threads(str(max_threads())) == max_threads()
    with pytest.raises(ConfigError, match="^--latency-threads must be .*, got '100000'$"):
        threads_argument("--latency-threads")("100000")


def test_torch_never_gets_more_threads_than_the_bound():
    """The library's own guard, for a caller who skips the configuration (torch crashes on 100000)."""
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match="threads must be"):
        resolve_threads(100_000)
    with pytest.raises(ConfigError, match="threads must be"), torch_threads(max_threads() + 1):
        pass  # pragma: no cover
    assert torch.get_num_threads() == before


def test_shapes_are_positive_integers_each_and_in_all_bounded():
    assert check_shape([1, 3, MAX_SIDE, 8], "shape") == (1, 3, MAX_SIDE, 8)
    assert parse_shape("1,3,64,64") == (1, 3, 64, 64)
    assert parse_shape((1, 3, 64, 64)) == (1, 3, 64, 64)
    for bad in ("1,3,1e20,32", "1,3,-4,32", "1,3", "1,3,32.5,32", "1,3,nan,32"):
        with pytest.raises(ConfigError, match="--input-shape"):
            parse_shape(bad, what="--input-shape")
    with pytest.raises(ConfigError, match=rf"^--input-shape must be at least 3 integers in \[1, {MAX_SIDE}\]"):
        parse_shape(f"1,3,{MAX_SIDE + 1},32", what="--input-shape")
    with pytest.raises(ConfigError, match=rf"has {16 * 3 * 8192 * 8192} elements; at most {MAX_ELEMENTS}"):
        check_shape((16, 3, 8192, 8192), "--input-shape")
    for bad in ((1, 3, 64.0, 64), (1, 3, True, 64)):
        with pytest.raises(ConfigError):
            parse_shape(bad)


def test_an_output_path_is_not_empty():
    assert output_argument("--out")("model.pt") == "model.pt"
    for bad in ("", "  "):
        with pytest.raises(ConfigError, match=rf"^--out must name a file or folder, got {bad!r}$"):
            output_argument("--out")(bad)


def test_a_huge_value_is_shown_short():
    assert shown(18446744073709551617) == "18446744073709551617"
    assert shown(10**5000) == "an integer of 5001 digits" and shown(10**5000 - 1) == "an integer of 5000 digits"  # repr() would refuse it (4300 digits)
    assert len(shown("x" * 1000)) == 40


# -- the experiment's keys -----------------------------------------------------------------------

_BUILT_IN_DATASETS = ("synthetic", "spacenet_sample", "folder")
#: numeric keys that are not amounts: the index of a model's output among its tensors
_NOT_AMOUNTS = {"model.output"}


def _numeric_keys(cls: type, prefix: str) -> set[str]:
    """The dotted keys of ``cls``'s fields whose type takes an int or a float, nested sections included."""
    keys = set()
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        annotation, key = hints[item.name], f"{prefix}{item.name}"
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        nested = annotation if dataclasses.is_dataclass(annotation) else (
            options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None)
        if nested is not None:
            keys |= _numeric_keys(nested, f"{key}.")
        elif _takes_number(annotation):
            keys.add(key)
    return keys


def _takes_number(annotation) -> bool:
    return annotation in (int, float) or any(_takes_number(option) for option in typing.get_args(annotation))


def _experiment_numeric_keys() -> set[str]:
    keys = set()
    for item in dataclasses.fields(Experiment):
        annotation = typing.get_type_hints(Experiment)[item.name]
        if item.name == "data":
            for kind in _BUILT_IN_DATASETS:
                keys |= _numeric_keys(DATASETS.get(kind), "data.")
        elif item.name == "budget":  # read as counts with units (300k) by Budget.from_dict: finite and > 0
            continue
        elif dataclasses.is_dataclass(annotation):
            keys |= _numeric_keys(annotation, f"{item.name}.")
    return keys


def test_every_numeric_key_of_an_experiment_has_bounds_and_every_bound_a_key():
    numeric = _experiment_numeric_keys()
    assert numeric - _NOT_AMOUNTS - set(CONFIG_BOUNDS) == set(), "a number without bounds: add it to CONFIG_BOUNDS"
    assert set(CONFIG_BOUNDS) - numeric == set(), "bounds of a key that does not exist"


@pytest.mark.parametrize(("override", "message"), [
    ("train.threads=100000", rf"train.threads must be 'auto' or a count in \[1, {max_threads()}\]"),
    ("train.threads=5000", r"train.threads must be 'auto' or a count in \[1, "),
    ("cost.latency={threads: 5000}", r"cost.latency.threads must be 'auto' or a count in \[1, "),
    ("train.seed=-1", r"train.seed must be an integer in \[0, 4294967295\], got -1$"),
    ("train.seed=18446744073709551617", r"train.seed must be an integer in \[0, 4294967295\], got 18446744073709551617$"),
    ("search.seed=4294967296", r"search.seed must be an integer in \[0, 4294967295\], got 4294967296$"),
    ("data.patch_size=1000000", r"data.patch_size must be an integer in \[8, 16384\], got 1000000$"),
    ("train.eval_window=100000", r"train.eval_window must be an integer in \[1, 16384\], got 100000$"),
    ("cost.input_size=0", r"cost.input_size must be an integer in \[1, 16384\], got 0$"),
    ("train.batch_size=1000000", r"train.batch_size must be an integer in \[1, 4096\], got 1000000$"),
    ("train.momentum=.nan", r"train.momentum: expected a finite number, got nan$"),
    ("train.momentum=1.5", r"train.momentum must be a number in \[0, 1\], got 1.5$"),
    ("train.grad_clip=-1", r"train.grad_clip must be a finite number > 0, got -1.0$"),
    ("train.lr=.inf", r"train.lr: expected a finite number, got inf$"),
    ("train.lr=1e999", r"train.lr: expected a finite number, got '1e999'$"),
    ("train.weight_decay=-.inf", r"train.weight_decay: expected a finite number, got -inf$"),
    ("train.class_weights=[1, .nan]", r"train.class_weights: expected a finite number, got \[1, nan\]$"),
    ("train.class_weights=[1, -2]", r"train.class_weights must be a finite number >= 0, got -2.0$"),
    ("search.timeout=.nan", r"search.timeout: expected a finite number, got nan$"),
    ("search.n_trials=10000000", r"search.n_trials must be an integer in \[1, 1000000\], got 10000000$"),
    ("search.rungs=[.nan]", r"search.rungs: expected a finite number, got \[nan\]$"),
    ("search.rung_share=0", r"search.rung_share must be in \(0, 1\], got 0.0$"),
    ("search.rung_share=1.5", r"search.rung_share must be in \(0, 1\], got 1.5$"),
    ("finetune.lr=.nan", r"finetune.lr: expected a finite number, got nan$"),
    ("train.steps=" + "9" * 4000, r"train.steps must be an integer in \[1, 1000000000\], got an integer of 4000 digits$"),
    ("train.steps=" + "9" * 5000, r"train.steps: expected integer or one of 'auto', got '9999.*\.\.\.$"),  # more digits than Python reads
], ids=lambda value: value[:40])
def test_an_experiment_key_out_of_bounds_is_refused_naming_key_value_and_range(tmp_path, override, message):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment_data(tmp_path / "run"), sort_keys=False))
    with pytest.raises(ConfigError, match=rf"^{path}: {message}"):
        load_experiment(path, overrides=[override])


def test_values_at_the_edges_are_taken():
    experiment = Experiment.from_dict({
        "data": {"name": "synthetic", "seed": MAX_SEED, "patch_size": MAX_SIDE},
        "train": {"seed": 0, "threads": max_threads(), "momentum": 0, "grad_clip": None},
        "search": {"seed": MAX_SEED, "timeout": 1e-3},
    })
    assert (experiment.data.seed, experiment.train.threads, experiment.search.seed) == (MAX_SEED, max_threads(), MAX_SEED)


def test_a_bound_checks_every_number_of_a_list_and_passes_words():
    assert check_config_value("train.class_weights", "auto", where="w") == "auto"
    assert check_config_value("data.palette", [[0, 0, 0], [255, 255, 255]], where="w")
    with pytest.raises(ConfigError, match=r"^w must be an integer in \[0, 255\], got 256$"):
        check_config_value("data.palette", [[0, 0, 0], [0, 256, 0]], where="w")
    assert check_config_value("model.name", "unet", where="w") == "unet"  # no bounds: as it is


def test_nan_is_refused_wherever_a_number_is_read():
    for value in (math.nan, math.inf, "1e999", 10**400):
        with pytest.raises(ConfigError, match="^x: expected a finite number, got "):
            check_value(value, float, where="x")
        with pytest.raises(ConfigError, match="^x: expected a finite number, got "):
            check_value(value, float | None, where="x")
    assert check_value(10**300, int, where="x") == 10**300  # an integer's bounds are its key's, not its type's
    with pytest.raises(ConfigError, match="expected integer, got nan"):
        check_value(math.nan, int, where="x")


# -- YAML files ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3 (first at line 1)"),
    ("train:\n  lr: 0.1\n  steps: 5\n  lr: 0.2\n", "duplicate key 'lr' at line 4 (first at line 2)"),
    ("{a: 1, a: 2}", "duplicate key 'a' at line 1 (first at line 1)"),
    ('{"a": 1, "b": {"c": 1, "c": 2}}', "duplicate key 'c' at line 1 (first at line 1)"),  # JSON too
    ("transforms:\n  - name: fire\n    name: prune\n", "duplicate key 'name' at line 3 (first at line 2)"),
])
def test_a_key_given_twice_is_refused_naming_key_and_file(tmp_path, text, message):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        read_yaml(path, what="experiment file")
    assert str(raised.value) == f"{path}: {message}"


def test_a_merge_may_give_a_key_again(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("defaults: &defaults {steps: 5, lr: 0.1}\ntrain:\n  <<: *defaults\n  lr: 0.2\n")
    assert read_yaml(path, what="experiment file")["train"] == {"steps": 5, "lr": 0.2}


@pytest.mark.parametrize(("data", "byte", "offset"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", 0x89, 0),
    (b"train:\n  steps: \xff\n", 0xFF, 16),
])
def test_a_binary_file_is_one_line_naming_it(tmp_path, data, byte, offset):
    path = tmp_path / "binary.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as raised:
        read_yaml(path, what="recipe")
    assert str(raised.value) == f"{path}: cannot read recipe: not UTF-8 text (byte 0x{byte:02x} at offset {offset})"


def test_an_integer_too_long_for_python_is_not_a_traceback(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("train:\n  steps: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML: Exceeds the limit"):
        read_yaml(path, what="experiment file")


# -- the command line, in-process ---------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_experiment_data(Path("run")), sort_keys=False))
    (tmp_path / "dup_key.yaml").write_text("name: dup\ntrain:\n  lr: 0.01\n  steps: 5\n  lr: 0.1\n")
    (tmp_path / "dup_recipe.yaml").write_text("transforms:\n  - name: fire\n    squeeze_ratio: 0.2\n    squeeze_ratio: 0.5\n")
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "nan_recipe.yaml").write_text("transforms:\n  - name: fire\n    squeeze_ratio: .nan\n")
    return tmp_path


def _snapshot(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))}


CLI_CASES = [
    # threads
    (["train", "tiny.yaml", "--threads", "100000"], ("--threads", "'100000'", f"[1, {max_threads()}]")),
    (["train", "tiny.yaml", "--set", "train.threads=100000"], ("tiny.yaml: train.threads", "100000", "[1, ")),
    (["train", "tiny.yaml", "--set", "train.threads=5000"], ("train.threads", "5000")),
    (["search", "tiny.yaml", "--threads", "0"], ("--threads", "'0'")),
    (["cost", "unet", "--threads", "100000"], ("--threads", "'100000'")),
    (["worker", "--storage", "sqlite:///nope.db", "--study", "x", "--threads", "5000"], ("--threads", "'5000'")),
    (["confirm", "--study", "x", "--threads", "auto7"], ("--threads", "'auto7'")),
    (["deploy", "m.pt", "--out", "m.onnx", "--latency-threads", "100000"], ("--latency-threads", "'100000'")),
    (["report", "--study", "x", "--latency-threads", "-1"], ("--latency-threads", "'-1'")),
    # seeds
    (["search", "tiny.yaml", "--seed", "-1"], ("--seed", "'-1'", "[0, 4294967295]")),
    (["worker", "--storage", "sqlite:///nope.db", "--study", "x", "--seed", "4294967296"], ("--seed", "'4294967296'")),
    (["train", "tiny.yaml", "--set", "train.seed=18446744073709551617"], ("train.seed", "18446744073709551617")),
    (["train", "tiny.yaml", "--set", "data.seed=-1"], ("tiny.yaml: data.seed", "-1", "[0, 4294967295]")),
    # sizes and shapes
    (["train", "tiny.yaml", "--set", "data.patch_size=1000000"], ("data.patch_size", "1000000", "[8, 16384]")),
    (["cost", "unet", "--input-shape", "1,3,1e20,32"], ("--input-shape", "'1,3,1e20,32'")),
    (["cost", "unet", "--input-shape", "1,3,100000,32"], ("--input-shape", "1,3,100000,32", "16384")),
    (["apply", "unet", "--input-shape", "64,3,8192,8192", "--transform", "fire"], ("--input-shape", "elements")),
    (["deploy", "m.pt", "--out", "m.onnx", "--input-size", "0"], ("--input-size", "'0'", "[1, 16384]")),
    (["report", "--study", "x", "--latency-size", "100000"], ("--latency-size", "'100000'")),
    # NaN and other numbers
    (["train", "tiny.yaml", "--set", "train.momentum=.nan"], ("train.momentum", "finite", "nan")),
    (["train", "tiny.yaml", "--set", "train.grad_clip=-1"], ("train.grad_clip", "-1", "> 0")),
    (["train", "tiny.yaml", "--set", "train.lr=.nan"], ("train.lr", "nan")),
    (["train", "tiny.yaml", "--set", "train.weight_decay=.inf"], ("train.weight_decay", "inf")),
    (["apply", "unet", "--recipe", "nan_recipe.yaml"], ("nan_recipe.yaml", "squeeze_ratio", "finite", "nan")),
    (["apply", "unet", "--transform", "fire:squeeze_ratio=.nan"], ("squeeze_ratio", "finite", "nan")),
    (["cost", "unet", "--latency-runs", "-5"], ("--latency-runs", "'-5'", "[0, 1000000]")),
    (["worker", "--storage", "sqlite:///nope.db", "--study", "x", "--timeout", "nan"], ("--timeout", "'nan'")),
    (["search", "tiny.yaml", "--timeout", "inf"], ("--timeout", "'inf'")),
    (["search", "tiny.yaml", "--n-trials", "0"], ("--n-trials", "'0'")),
    (["confirm", "--study", "x", "--seeds", "-1"], ("--seeds", "'-1'")),
    (["confirm", "--study", "x", "--trials", "1", "-2"], ("--trials", "'-2'")),
    (["export", "--study", "x", "--trial", "-1", "--out", "m.pt"], ("--trial", "'-1'")),
    (["compress", "unet", "tiny.yaml", "--transform", "fire", "--steps", "0"], ("--steps", "'0'")),
    (["deploy", "m.pt", "--out", "m.onnx", "--repeats", "0"], ("--repeats", "'0'")),
    (["deploy", "m.pt", "--out", "m.onnx", "--calibration", "-8"], ("--calibration", "'-8'")),
    # YAML files
    (["train", "dup_key.yaml"], ("dup_key.yaml", "duplicate key 'lr'", "line 5")),
    (["apply", "unet", "--recipe", "dup_recipe.yaml"], ("dup_recipe.yaml", "duplicate key 'squeeze_ratio'")),
    (["train", "binary.yaml"], ("binary.yaml", "cannot read experiment file", "not UTF-8")),
    (["apply", "unet", "--recipe", "binary.yaml"], ("binary.yaml", "cannot read recipe", "not UTF-8")),
    # --out ""
    (["apply", "unet", "--transform", "fire", "--out", ""], ("--out", "''")),
    (["compress", "unet", "tiny.yaml", "--transform", "fire", "--out", ""], ("--out", "''")),
    (["export", "--study", "x", "--trial", "0", "--out", ""], ("--out", "''")),
    (["deploy", "m.pt", "--out", ""], ("--out", "''")),
    (["report", "--study", "x", "--out", " "], ("--out", "' '")),
]


@pytest.mark.parametrize(("argv", "facts"), CLI_CASES, ids=[" ".join(argv)[:70] for argv, _ in CLI_CASES])
def test_a_bad_number_or_file_is_one_line_exit_2_and_nothing_written(workspace, capfd, argv, facts):
    before = _snapshot(workspace)
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == 2, out + err
    line = one_error_line(err, argv[0], *facts, out=out)
    assert err.splitlines() == [line]  # nothing but the one line, no progress note either
    assert "invalid" not in line and "usage" not in err  # our line, not argparse's
    assert _snapshot(workspace) == before


def test_other_argparse_errors_keep_their_usage(capsys):
    """Only a value refused by our bounds is our line; a missing argument is argparse's as ever."""
    with pytest.raises(SystemExit) as raised:
        main(["worker", "--storage", "sqlite:///x.db"])  # --study is missing
    assert raised.value.code == 2
    assert "usage: compressor worker" in capsys.readouterr().err
