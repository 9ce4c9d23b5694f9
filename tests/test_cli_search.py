"""``compressor search``, ``worker`` and ``export`` as a user runs them: separate processes, real files."""

from __future__ import annotations

import signal
import subprocess
import sys

import optuna
import pytest
from conftest import assert_refusal, cli_env, ctrl_c_as_in_a_shell
from optuna.trial import TrialState
from search_helpers import write_tiny_experiment

from compressor.saving import load_saved
from compressor.study import trial_records
from search_spaces.unet_family import LEGEND


def test_search_prints_a_line_per_trial_and_the_pareto_table_then_exports(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", n_trials=2)
    result = cli("search", str(config), "--sampler", "random", "--seed", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("trial ")] == ["0/2", "1/2"]
    assert "Pareto front of study tiny" in result.stdout and "one multiply-add = one flop" in result.stdout
    assert LEGEND in lines  # how to read the recipe column, under the front (the space's, kept on the study)
    assert "study 'tiny': 2 trials" in result.stdout
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'search.db'}")
    best = next(r for r in trial_records(study) if r.weights)
    out = tmp_path / "best.pt"
    exported = cli("export", "--study", "tiny", "--storage", f"sqlite:///{tmp_path / 'run' / 'search.db'}",
                   "--trial", str(best.number), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert f"saved {out}" in exported.stdout and load_saved(out).metadata["trial"] == best.number


def test_an_impossible_budget_is_one_line_and_exit_2(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    result = cli("search", str(config), "--max-params", "10")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("compressor search: error: no candidate")
    ] and "Traceback" not in result.stderr
    assert "smallest (cut 3, add" in result.stderr


def test_bad_options_and_missing_studies_are_one_line_errors(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    unknown = cli("search", str(config), "--space", "nope")
    assert_refusal(unknown, "search", "unknown search space 'nope'; valid names: generic, unet_family")
    missing = cli("export", "--study", "ghost", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--trial", "0",
                  "--out", str(tmp_path / "x.pt"))
    assert_refusal(missing, "export", "no study storage at")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "none.db").exists()
    bad_key = cli("search", str(config), "--set", "search.n_trial=3")
    assert_refusal(bad_key, "search", "search.n_trial: unknown key")


def test_ctrl_c_keeps_finished_trials_and_the_same_command_resumes(tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", n_trials=30)
    command = [sys.executable, "-m", "compressor", "search", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                               preexec_fn=ctrl_c_as_in_a_shell)
    seen = []
    for line in process.stdout:  # wait for a finished trial, then press Ctrl-C during the next one
        seen.append(line)
        if line.startswith("trial "):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "finished trials are kept in the study: run the same command to resume" in stderr
    storage = f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    kept = {r.number: (r.status, r.values) for r in trial_records(optuna.load_study(study_name="tiny", storage=storage))
            if r.status in ("complete", "infeasible", "stopped")}
    assert len(kept) >= 1
    resumed = subprocess.run([*command, "--n-trials", str(len(kept) + 1)], capture_output=True, text=True, env=cli_env(),
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    after = {r.number: (r.status, r.values) for r in trial_records(study)}
    assert {number: after[number] for number in kept} == kept
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == len(kept) + 1


@pytest.mark.slow  # kept out of the default run for CI's time; `pytest -m slow` runs it
def test_a_search_in_which_no_trial_trains_exits_non_zero_with_the_first_failure(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", n_trials=2)
    result = cli("search", str(config), "--set", "train.lr=1e30")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("compressor search: error:")]
    assert errors == [errors[0]] and "no trial trained: " in errors[0] and "the loss is nan" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # kept out of the default run for CI's time; `pytest -m slow` runs it
def test_model_args_without_model_are_for_the_network_the_space_searches(cli, tmp_path):
    """The experiment trains Micro-Net, the unet_family space searches U-Net: --model-arg alone is for U-Net."""
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run", n_trials=1)
    result = cli("search", str(config), "--set", "model.name=micronet", "--set", "model.args={}",
                 "--model-arg", "base_width=4", "--model-arg", "norm=batch")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'search.db'}")
    assert study.user_attrs["model"] == "unet"
    assert study.user_attrs["model_args"]["base_width"] == 4 and study.user_attrs["model_args"]["norm"] == "batch"
