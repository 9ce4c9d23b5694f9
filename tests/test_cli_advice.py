"""Library errors say what is wrong; the command line adds what to type about it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import assert_refusal, cli_env

from compressor.cli.advice import ADVICE, with_advice
from compressor.errors import (
    ClassCountError,
    ConfigError,
    MissingStorageError,
    NothingToRepeatError,
    NoWeightsError,
    OutputChoiceError,
    StudyMismatchError,
)
from compressor.study import load_study


@pytest.mark.parametrize(("error", "command", "advice"), [
    (MissingStorageError("no study storage at runs/x/search.db (file not found)"), "report",
     "run `compressor search` first, or pass --storage URL"),
    (StudyMismatchError("study 'x' in sqlite:///s.db was run with other train settings"), "search",
     "pass --study NEW_NAME for a new study"),
    (NoWeightsError("trial 3 has no kept weights in a/ (only trials on the Pareto front keep theirs)"), "export",
     "pass --untrained to export its architecture alone"),
    (NothingToRepeatError("nothing to repeat: no further seed and no fold asked for"), "confirm",
     "give --seeds N (further seeds) or --folds"),
    (NothingToRepeatError("nothing to repeat: no further seed and no fold asked for"), "search",
     "set search.confirm.seeds to N"),
    (OutputChoiceError("model returns a dict with keys 'a', 'b'"), "cost", "declare it with --model-output KEY"),
    (ClassCountError("model outputs 6 classes but the data has 2", classes=2), "train",
     "build it for 2 (e.g. --model-arg classes=2, as its builder names it)"),
])
def test_the_cli_adds_its_advice_after_the_message(error, command, advice):
    shown = with_advice(error, command)
    assert shown.startswith(f"{error}; ") and advice in shown
    assert "--" not in str(error) and "`compressor" not in str(error)  # the library's own words name no flag


def test_other_errors_are_shown_as_they_are():
    assert with_advice(ConfigError("train.steps must be >= 1"), "train") == "train.steps must be >= 1"
    assert all(issubclass(kind, ConfigError) for kind in ADVICE)


def test_a_missing_storage_from_python_and_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingStorageError, match=r"^no study storage at runs/nope/search.db \(file not found\)$"):
        load_study("sqlite:///runs/nope/search.db", "nope")
    result = subprocess.run([sys.executable, "-m", "compressor", "report", "--study", "nope"], cwd=tmp_path,
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert_refusal(result, "report", "no study storage at runs/nope/search.db (file not found); "
                                     "run `compressor search` first, or pass --storage URL")
    assert not (tmp_path / "runs").exists()
