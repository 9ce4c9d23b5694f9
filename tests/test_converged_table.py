"""The converged table's reading of its job records (experiments/benchmarks/converged.py): what is paired
with what, and which rows a target may be judged on. Records are made up; the reading is the script's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_script

ROOT = Path(__file__).resolve().parents[1]
PARENT = {"params": 31_000_000, "flops": 37_000_000_000}


@pytest.fixture(scope="module")
def converged():
    yield from benchmark_script("converged")


def _record(job: str, kind: str, test: float, *, seed: int | None = None, params: int = 700_000, flops: int = 4_000_000_000,
            val: float | None = None, best_step: int = 500) -> dict:
    return {"job": job, "kind": kind, "parent": 0, "seed": seed, "test": {"score": test}, "val": {"score": test if val is None else val},
            "score_name": "building IoU", "params": params, "flops": flops, "steps_done": 1000, "best_step": best_step,
            "converged": True, "train_seconds": 10.0, "curve": [[100, test]]}


def _records(**extra: dict) -> dict:
    records = {"parent-p0": _record("parent-p0", "parent", 0.30, seed=0, **PARENT)}
    for seed, (recipe, control, micronet, scratch) in enumerate([(0.31, 0.30, 0.25, 0.20), (0.33, 0.31, 0.27, 0.24)]):
        records[f"recipe-s{seed}"] = _record(f"recipe-s{seed}", "recipe", recipe, seed=seed)
        records[f"control-s{seed}"] = _record(f"control-s{seed}", "control", control, seed=seed, best_step=0, **PARENT)
        records[f"micronet-s{seed}"] = _record(f"micronet-s{seed}", "micronet", micronet, seed=seed, params=1_000_000,
                                              flops=7_000_000_000)
        records[f"scratch-s{seed}"] = _record(f"scratch-s{seed}", "scratch", scratch, seed=seed)
    records.update(extra)
    return records


def test_rows_are_paired_by_seed_with_the_control_micronet_and_scratch(converged):
    records = _records()
    del records["micronet-s0"]  # Micro-Net on seeds 1 and 2, the recipe on 0 and 1: one pair, seed 1
    records["micronet-s2"] = _record("micronet-s2", "micronet", 0.9, seed=2)
    found = converged.table(records)
    rows = {row["label"]: row for row in found["rows"]}
    recipe = rows["the paper's recipe, inherited, fine-tuned"]
    assert (recipe["minus_control_points"]["mean"], recipe["minus_control_points"]["n"]) == (pytest.approx(1.5), 2)
    assert recipe["minus_parent_points"]["mean"] == pytest.approx(2.0)
    micronet = found["recipe_dominates_micronet"]["minus_micronet_points"]
    assert (micronet["mean"], micronet["n"]) == (pytest.approx(6.0), 1)
    scratch_gain = found["recipe_minus_scratch_points"]
    assert (scratch_gain["mean"], scratch_gain["n"]) == (pytest.approx(10.0), 2)
    assert rows["control: the parent fine-tuned the same way"]["start_kept"] == 2
    scratch = rows["the paper's recipe's network from scratch (trained to its plateau)"]
    assert scratch["n"] == 2 and scratch["minus_control_points"] is None  # not fine-tuned: nothing to pair with the control


def test_the_recipe_against_scratch_is_paired_on_validation_too_and_each_row_shows_its_validation_mean(converged):
    records = _records()
    records["scratch-s1"]["val"] = {"score": 0.40}  # ahead of the recipe on validation, behind it on test
    found = converged.table(records)
    on_val = found["recipe_minus_scratch_val_points"]
    assert (on_val["mean"], on_val["n"]) == (pytest.approx(((0.31 - 0.20) + (0.33 - 0.40)) * 50), 2)
    assert found["recipe_minus_scratch_points"]["mean"] == pytest.approx(10.0)
    shown = {row[0]: row for row in converged.table_rows(found)}
    column = converged.HEADERS.index("validation (mean)")
    assert shown["the paper's recipe's network from scratch (trained to its plateau)"][column] == "0.300"
    assert all(len(row) == len(converged.HEADERS) for row in shown.values())


def test_the_size_target_is_judged_on_rows_compressed_from_the_parent_only(converged):
    tiny = {"params": 100_000, "flops": 1_000_000_000}  # 310x / 37x
    records = _records(**{f"scratch-s{seed}": _record(f"scratch-s{seed}", "scratch", 0.5, seed=seed, val=0.9, **tiny)
                          for seed in (0, 1)})
    found = converged.table(records)
    assert next(iter(converged.targets(found).values())) == "not run"  # the scratch row, best on validation, is no candidate
    records.update({f"small-s{seed}": _record(f"small-s{seed}", "small", 0.30, seed=seed, val=0.2, **tiny) for seed in (0, 1)})
    verdict = next(iter(converged.targets(converged.table(records)).values()))
    assert "the paper's recipe + prune 0.6" in verdict


def _search_records(converged, **val_of: float) -> dict:
    """A finished parent, its search (the 1M and 300k picks one trial, the 100k pick another) and seed 0 of every
    small row, the validation scores ``val_of`` (by row)."""
    tiny = {"params": 200_000, "flops": 2_000_000_000}  # 155x / 18.5x
    picks = {size: {"trial": trial, "recipe_short": f"trial {trial}"} for size, trial in (("1m", 1), ("300k", 1), ("100k", 7))}
    records = {"parent-p0": _record("parent-p0", "parent", 0.30, seed=0, **PARENT),
               "search-p0": {"job": "search-p0", "kind": "search", "picks": picks}}
    for row in ("small", "pick1m", "pick100k"):
        records[f"{row}-s0"] = _record(f"{row}-s0", "small" if row == "small" else "pick", 0.3, seed=0, val=val_of[row], **tiny)
    records["pick300k-s0"] = {**records["pick1m-s0"], "job": "pick300k-s0", "same_run_as": "pick1m-s0"}
    return records


def test_seed_zero_of_every_row_comes_first_then_the_seeds_of_the_rows_the_targets_are_judged_on(converged):
    args = converged.parsed([])
    records = _search_records(converged, small=0.30, pick1m=0.35, pick100k=0.32)
    assert converged.size_target_job(records, search=True) == "pick1m"  # the best on seed 0's validation; pick300k is its same run
    order = [job["job"] for job in converged.jobs(args, records)]
    assert order[:2] == ["parent-p0", "search-p0"]
    first_later = next(index for index, name in enumerate(order) if name.endswith("-s1"))
    assert all(name.endswith("-s0") for name in order[2:first_later])  # the whole table once
    assert len(order[2:first_later]) == 9  # recipe, control, distilled, small, Micro-Net, 3 picks, scratch
    judged = order[first_later:first_later + 12]
    assert judged == [f"{row}-s{seed}" for seed in range(1, 5) for row in ("recipe", "micronet", "pick1m")]
    assert order.index("control-s1") > order.index("pick1m-s4")  # the other rows' seeds after
    assert order[-4:] == ["parent-p1", "recipe-p1-s0", "parent-p2", "recipe-p2-s0"]
    assert len(order) == len(set(order)) == 2 + 9 * 3 + 8 * 2 + 4  # every job once (scratch on seeds 0-2)
    by_name = {job["job"]: job for job in converged.jobs(args, records)}
    assert converged.needs(by_name["pick300k-s2"]) == ["parent-p0", "search-p0", "pick1m-s2"]  # the same trial: reuses it
    assert converged.needs(by_name["pick100k-s2"]) == ["parent-p0", "search-p0"]  # another trial: needs no other pick
    before = {**by_name["pick100k-s2"]}
    del before["same_as"]  # the search not finished yet: every larger pick first, as it may be the same run
    assert converged.needs(before) == ["parent-p0", "search-p0", "pick1m-s2", "pick300k-s2"]


def test_the_small_row_is_chosen_once_every_candidate_has_its_seed_zero_and_only_among_rows_small_enough(converged):
    args = converged.parsed([])
    records = _search_records(converged, small=0.30, pick1m=0.35, pick100k=0.32)
    records["pick1m-s0"]["flops"] = 5_000_000_000  # 7.4x fewer FLOPs: not small enough, however good
    records["pick300k-s0"]["flops"] = 5_000_000_000
    assert converged.size_target_job(records, search=True) == "pick100k"
    del records["pick100k-s0"]  # not finished: no choice yet, and no small row's seeds before the others'
    assert converged.size_target_job(records, search=True) is None
    order = [job["job"] for job in converged.jobs(args, records)]
    first_later = next(index for index, name in enumerate(order) if name.endswith("-s1"))
    assert order[first_later:first_later + 8] == [f"{row}-s{seed}" for seed in range(1, 5) for row in ("recipe", "micronet")]
    records["pick100k-s0"] = {"job": "pick100k-s0", "kind": "pick", "seed": 0, "not_reached": True}
    assert converged.size_target_job(records, search=True) == "small"  # a pick not reached is no candidate


def test_the_size_target_verdict_reads_the_row_the_runs_chose(converged):
    records = _records()
    records.update(_search_records(converged, small=0.40, pick1m=0.35, pick100k=0.32))
    for seed in (1, 2):  # the chosen row's further seeds score lower on validation: the choice stays
        records[f"small-s{seed}"] = _record(f"small-s{seed}", "small", 0.31, seed=seed, val=0.1, params=200_000, flops=2_000_000_000)
    found = converged.table(records)
    assert found["size_target"] == "small"
    verdict = next(iter(converged.targets(found).values()))
    assert "the paper's recipe + prune 0.6" in verdict and verdict.startswith("met")


def test_the_small_row_waits_for_a_search_still_running_and_not_for_a_pick_that_failed(converged):
    records = _search_records(converged, small=0.30, pick1m=0.35, pick100k=0.32)
    early = {name: record for name, record in records.items() if name in ("parent-p0", "small-s0")}
    assert converged.size_target_job(early, search=True) is None  # the search's picks may still beat it
    assert converged.size_target_job(early, search=False) == "small"  # no search: the fixed recipe is the only one
    assert converged.size_target_job(early, search=True, failed={"search-p0"}) == "small"
    del records["pick1m-s0"], records["pick300k-s0"]
    assert converged.size_target_job(records, search=True) is None
    # pick1m failed: pick300k, the same trial, will not come either; the choice is made among the rest
    assert converged.size_target_job(records, search=True, failed={"pick1m-s0"}) == "pick100k"
    found = converged.table({**_records(), **records}, failed={"pick1m-s0"})
    assert found["size_target"] == "pick100k"
    assert "the search's best at <= 100k" in next(iter(converged.targets(found).values()))
    assert converged.jobs(converged.parsed(["--seeds", "0", "--parents", "1"]), records) == \
        [{"job": "parent-p0", "kind": "parent", "parent": 0, "seed": 0}, {"job": "search-p0", "kind": "search", "parent": 0, "seed": 0}]


def _stored(tmp_path, converged, monkeypatch, records: dict) -> Path:
    """A results file holding ``records`` as the building tile's jobs; the script reads it from ``tmp_path``."""
    import json

    monkeypatch.setattr(converged, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    run_dir = tmp_path / "runs"  # not the default folder: its own results file, converged-runs.json
    stored = {"run_dir": converged.run_dir_label(run_dir), "tasks": {"spacenet_sample": {"jobs": records}}}
    (tmp_path / "results" / f"{converged.results_name(run_dir, 'converged')}.json").write_text(json.dumps(stored))
    return run_dir


def test_restore_writes_the_rows_and_keeps_the_parent_aside_to_be_trained_again(tmp_path, converged, monkeypatch):
    import json

    records = _records()
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    kept = run_dir / "spacenet_sample" / "jobs" / "recipe-s1.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({**records["recipe-s1"], "test": {"score": 0.5}}))  # a row of this machine's own
    converged.restore(run_dir, ["spacenet_sample"])
    folder = run_dir / "spacenet_sample"
    restored = {path.stem for path in (folder / "jobs").glob("*.json")}
    assert restored == set(records) - {"parent-p0"}  # not the parent: nothing pairs with it before it is trained again
    assert json.loads((folder / "parent-p0.stored.json").read_text()) == records["parent-p0"]
    assert json.loads((folder / "jobs" / "recipe-s0.json").read_text()) == records["recipe-s0"]
    assert json.loads(kept.read_text())["test"]["score"] == 0.5  # a record already there is not overwritten


def test_restore_refuses_a_folder_with_another_parent_and_writes_nothing(tmp_path, converged, monkeypatch):
    import json

    records = _records()
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    local = run_dir / "spacenet_sample" / "jobs" / "parent-p0.json"
    local.parent.mkdir(parents=True)
    local.write_text(json.dumps({**records["parent-p0"], "steps_done": 1100}))
    with pytest.raises(SystemExit, match="another parent.*steps 1100 against 1000.*nothing restored"):
        converged.restore(run_dir, ["spacenet_sample"])
    assert [path.name for path in local.parent.iterdir() if path.suffix != ".lock"] == ["parent-p0.json"]
    assert not (run_dir / "spacenet_sample" / "parent-p0.stored.json").exists()
    with pytest.raises(SystemExit, match="no job records of spacenet_roads"):
        converged.restore(run_dir, ["spacenet_roads"])


def test_a_parent_trained_again_counts_only_if_it_is_the_stored_one(tmp_path, converged, monkeypatch):
    records = _records()
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    converged.restore(run_dir, ["spacenet_sample"])
    folder = run_dir / "spacenet_sample"
    converged.check_parent(folder, dict(records["parent-p0"]))  # the same steps and scores: goes on
    leftovers = [folder / "parent-p0.pt", folder / "parent-p0.model.pt", folder / "jobs" / "parent-p0.state"]
    for changed in ({"best_step": 600}, {"test": {"score": 0.30 + 1e-6}}, {"val": {"score": 0.31}}):
        for path in leftovers:
            path.write_bytes(b"weights")
        with pytest.raises(SystemExit, match="not the stored parent"):
            converged.check_parent(folder, {**records["parent-p0"], **changed})
        assert not any(path.exists() for path in leftovers)  # nothing left to fine-tune from
    assert not (folder / "jobs" / "parent-p0.json").exists()


def test_a_parent_trained_again_stops_at_its_first_evaluation_off_the_stored_curve(tmp_path, converged, monkeypatch):
    from types import SimpleNamespace

    records = _records()
    records["parent-p0"]["curve"] = [[100, 0.06872], [200, 0.09857]]
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    folder = run_dir / "spacenet_sample"
    job = {"job": "parent-p0", "kind": "parent", "parent": 0, "seed": 0}
    assert converged.follows_stored(folder, job) == {}  # nothing stored: an ordinary run
    converged.restore(run_dir, ["spacenet_sample"])
    assert converged.follows_stored(folder, {**job, "job": "micronet-s0", "kind": "micronet"}) == {}
    follow = converged.follows_stored(folder, job)
    assert follow["evaluate_at"] == [100, 200]  # the plateau rule's own evaluations: the same run
    assert follow["callback"](100, SimpleNamespace(score=0.068721)) is True  # the stored score, as it was rounded
    assert follow["callback"](150, SimpleNamespace(score=0.5)) is True  # no stored evaluation there
    (folder / "jobs" / "parent-p0.state").write_bytes(b"state")
    (folder / "parent-p0.pt").write_bytes(b"weights")
    with pytest.raises(SystemExit, match="not the stored parent.*0.06620 at step 100 against 0.06872"):
        follow["callback"](100, SimpleNamespace(score=0.0662))
    assert not (folder / "jobs" / "parent-p0.state").exists() and not (folder / "parent-p0.pt").exists()


def test_only_runs_the_rows_asked_for_and_the_jobs_they_need(converged):
    args = converged.parsed(["--seeds", "3", "--parents", "2"])
    planned = converged.jobs(args)
    names = [job["job"] for job in converged.only(planned, ["recipe"])]
    assert names == ["parent-p0", "recipe-s0", "recipe-s1", "recipe-s2"]  # no distilled row, no other parent's
    assert [job["job"] for job in converged.only(planned, ["scratch"])] == ["scratch-s0", "scratch-s1", "scratch-s2"]
    picks = [job["job"] for job in converged.only(planned, ["pick100k"])]
    assert picks[:2] == ["parent-p0", "search-p0"] and {"pick1m-s0", "pick300k-s0", "pick100k-s0"} <= set(picks)
    assert [job["job"] for job in converged.only(planned, ["recipe-p1"])] == ["parent-p1", "recipe-p1-s0"]
    assert converged.only(planned, None) == planned


def test_another_run_folder_writes_its_own_results_file(converged):
    assert converged.results_name(ROOT / "runs" / "converged", "converged") == "converged"
    assert converged.results_name(ROOT / "runs" / "converged-b", "converged") == "converged-b"
    assert converged.results_name("/tmp/second", "converged") == "converged-second"


def test_restore_refuses_rows_whose_parent_the_file_lacks_or_a_parent_in_training(tmp_path, converged, monkeypatch):
    records = _records()
    records["recipe-p1-s0"] = {**_record("recipe-p1-s0", "recipe", 0.3, seed=0), "parent": 1}
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    with pytest.raises(SystemExit, match="recipe-p1-s0 needs parent-p1, which it does not hold; nothing restored"):
        converged.restore(run_dir, ["spacenet_sample"])
    del records["recipe-p1-s0"]
    (tmp_path / "again").mkdir()
    run_dir = _stored(tmp_path / "again", converged, monkeypatch, records)
    jobs = run_dir / "spacenet_sample" / "jobs"
    jobs.mkdir(parents=True)
    with converged.claimed(jobs, "parent-p0") as mine:  # another process trains the parent
        assert mine
        with pytest.raises(SystemExit, match="a process is training spacenet_sample parent-p0"):
            converged.restore(run_dir, ["spacenet_sample"])
    assert not any(path.suffix == ".json" for path in run_dir.rglob("*"))


def test_restore_writes_the_stored_parent_before_any_row_and_drops_an_unchecked_state(tmp_path, converged, monkeypatch):
    run_dir = _stored(tmp_path, converged, monkeypatch, _records())
    state = run_dir / "spacenet_sample" / "jobs" / "parent-p0.state"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"evaluations no callback saw")
    written = []
    write = converged.atomic_write_text
    monkeypatch.setattr(converged, "atomic_write_text", lambda path, text: written.append(path.name) or write(path, text))
    converged.restore(run_dir, ["spacenet_sample"])
    assert written[0] == "parent-p0.stored.json" and len(written) == len(_records())
    assert not state.exists()
    state.write_bytes(b"the restored parent's own run, cut short")
    converged.restore(run_dir, ["spacenet_sample"])  # again (the next session): its state goes on
    assert state.exists()


def test_a_parent_trained_here_is_checked_on_every_run_and_summary(tmp_path, converged, monkeypatch):
    import json
    from types import SimpleNamespace

    records = _records()
    records["recipe-p1-s0"] = {**_record("recipe-p1-s0", "recipe", 0.3, seed=0), "parent": 1}
    records["parent-p1"] = {**_record("parent-p1", "parent", 0.29, seed=1, **PARENT), "parent": 1}
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    converged.restore(run_dir, ["spacenet_sample"])
    folder = run_dir / "spacenet_sample"
    (folder / "jobs" / "parent-p0.json").write_text(json.dumps(records["parent-p0"]))
    found = converged.summarize(run_dir)["spacenet_sample"]
    assert set(found["jobs"]) == set(records)  # parent-p1, not trained again yet, stays beside its row
    (folder / "jobs" / "parent-p0.json").write_text(json.dumps({**records["parent-p0"], "best_step": 900}))
    assert "spacenet_sample" not in converged.summarize(run_dir)  # not tabled (its file record stays); the others are
    monkeypatch.setattr(converged, "experiment_for", lambda *args, **kwargs: SimpleNamespace(
        data=SimpleNamespace(build=lambda: SimpleNamespace(description="stub"))))
    args = converged.parsed(["--run-dir", str(run_dir)])
    with pytest.raises(SystemExit, match="another parent than the stored one"):
        converged.run_task("spacenet_sample", args)


def test_run_task_refuses_and_marks_a_parent_that_is_not_the_stored_one(tmp_path, converged, monkeypatch):
    from types import SimpleNamespace

    records = _records()
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    converged.restore(run_dir, ["spacenet_sample"])
    monkeypatch.setattr(converged, "experiment_for", lambda *args, **kwargs: SimpleNamespace(
        data=SimpleNamespace(build=lambda: SimpleNamespace(description="stub"))))
    monkeypatch.setattr(converged, "run_job", lambda task, job, args, data: {**records["parent-p0"], "steps_done": 700})
    args = converged.parsed(["--run-dir", str(run_dir), "--only", "recipe"])
    with pytest.raises(SystemExit, match="not the stored parent"):
        converged.run_task("spacenet_sample", args)
    jobs = run_dir / "spacenet_sample" / "jobs"
    assert not (jobs / "parent-p0.json").exists() and "steps 700" in (jobs / "parent-p0.failed").read_text()


def test_a_parent_trained_again_is_trained_with_the_stored_curve_s_check(tmp_path, converged, monkeypatch):
    import compressor.experiment

    records = _records()
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    converged.restore(run_dir, ["spacenet_sample"])
    asked = {}

    class Asked(Exception):
        pass

    def train_model(*args, **kwargs):
        asked.update(kwargs)
        raise Asked

    monkeypatch.setattr(compressor.experiment, "train_model", train_model)
    args = converged.parsed(["--run-dir", str(run_dir)])
    with pytest.raises(Asked):
        converged.run_job("spacenet_sample", {"job": "parent-p0", "kind": "parent", "parent": 0, "seed": 0}, args, None)
    assert asked["evaluate_at"] == [100] and callable(asked["callback"])


def test_another_run_folder_s_summary_writes_its_own_file_and_refuses_a_namesake(tmp_path, converged, monkeypatch):
    import json

    run_dir = _stored(tmp_path, converged, monkeypatch, _records())
    (tmp_path / "results" / "converged.json").write_text('{"tasks": {}}')
    converged.restore(run_dir, ["spacenet_sample"])
    (run_dir / "spacenet_sample" / "jobs" / "parent-p0.json").write_text(json.dumps(_records()["parent-p0"]))
    monkeypatch.setattr(sys, "argv", ["converged.py", "--summarize", "--run-dir", str(run_dir)])
    converged.main()
    written = json.loads((tmp_path / "results" / "converged-runs.json").read_text())
    assert written["tasks"]["spacenet_sample"]["jobs"]["recipe-s1"]["test"]["score"] == 0.33
    assert (tmp_path / "results" / "converged-runs-spacenet_sample.png").exists()
    assert (tmp_path / "results" / "converged.json").read_text() == '{"tasks": {}}'  # the first line's, untouched
    assert written["machine"] == converged.machine()  # a new file: this machine
    stored = {**written, "machine": {"platform": "the machine the rows ran on"}}
    (tmp_path / "results" / "converged-runs.json").write_text(json.dumps(stored))
    converged.main()  # the table made again keeps the machine its file names
    assert json.loads((tmp_path / "results" / "converged-runs.json").read_text())["machine"] == stored["machine"]
    namesake = tmp_path / "elsewhere" / "runs"
    monkeypatch.setattr(sys, "argv", ["converged.py", "--summarize", "--run-dir", str(namesake)])
    with pytest.raises(SystemExit, match="holds the records of .*name the run folder otherwise"):
        converged.main()
    monkeypatch.chdir(tmp_path)  # the same folder, named relative to where the command runs: its own file
    monkeypatch.setattr(sys, "argv", ["converged.py", "--summarize", "--run-dir", "runs"])
    converged.main()
    (tmp_path / "results" / "converged-first.json").write_text('{"tasks": {}}')  # records kept as they were
    monkeypatch.setattr(sys, "argv", ["converged.py", "--summarize", "--run-dir", str(tmp_path / "first")])
    with pytest.raises(SystemExit, match="holds the records of no named run folder"):
        converged.main()
    monkeypatch.setattr(sys, "argv", ["converged.py", "--only", "recipes", "--run-dir", str(run_dir)])
    with pytest.raises(SystemExit, match="--only: no row recipes"):
        converged.main()


def test_a_target_whose_rows_have_not_run_says_so(converged):
    records = {"parent-p0": _record("parent-p0", "parent", 0.30, seed=0, **PARENT)}
    for seed, score in enumerate([0.32, 0.33, 0.32]):
        records[f"recipe-s{seed}"] = _record(f"recipe-s{seed}", "recipe", score, seed=seed)
    records["recipe-distill-s0"] = {**_record("recipe-distill-s0", "recipe", 0.30, seed=0), "distill": True}
    verdicts = converged.targets(converged.table(records, search=False))
    assert verdicts["the paper's recipe within 1 point of the parent"] == "met"  # +2.3 [+0.9, +3.8]
    assert verdicts["the paper's recipe, distilled, within 1 point of the parent"] == "not settled (fewer than 2 seeds)"
    assert verdicts["the control within +-1 point of the parent (the parent has converged)"] == "not run"
    assert verdicts["the paper's recipe dominates Micro-Net"] == "not run"


def test_a_cut_short_parent_s_state_is_checked_against_the_stored_curve_before_it_resumes(tmp_path, converged, monkeypatch):
    import torch

    from compressor.train.resume import FORMAT

    records = _records()
    records["parent-p0"]["curve"] = [[100, 0.06872], [200, 0.09857]]
    run_dir = _stored(tmp_path, converged, monkeypatch, records)
    converged.restore(run_dir, ["spacenet_sample"])
    folder = run_dir / "spacenet_sample"
    job = {"job": "parent-p0", "kind": "parent", "parent": 0, "seed": 0}
    state = folder / "jobs" / "parent-p0.state"
    torch.save({"format": FORMAT, "key": {}, "history": [[100, {"score": 0.068721}]]}, state)
    assert converged.follows_stored(folder, job)["evaluate_at"] == [100, 200]  # its evaluations are the stored ones
    assert state.exists()
    torch.save({"format": FORMAT, "key": {}, "history": [[100, {"score": 0.0662}]]}, state)  # written by older code
    with pytest.raises(SystemExit, match="0.06620 at step 100 against 0.06872"):
        converged.follows_stored(folder, job)
    assert not state.exists() and (folder / "jobs" / "parent-p0.failed").exists()


def test_a_row_whose_seeds_differ_in_size_is_judged_on_its_largest_and_shows_the_range(converged):
    records = _records()
    for seed, params in enumerate((250_000, 270_000)):  # each seed's pruning keeps other channels
        records[f"small-s{seed}"] = _record(f"small-s{seed}", "small", 0.32, seed=seed, params=params,
                                            flops=3_000_000_000 + seed * 100_000_000)
    found = converged.table(records)
    small = next(row for row in found["rows"] if row.get("row") == "small")
    assert small["params_ratio"] == pytest.approx(PARENT["params"] / 270_000)
    assert small["flops_ratio"] == pytest.approx(PARENT["flops"] / 3_100_000_000)
    shown = {row[0]: row for row in converged.table_rows(found)}[small["label"]]
    low, high = PARENT["params"] / 270_000, PARENT["params"] / 250_000
    assert shown[converged.HEADERS.index("params vs U-Net")] == f"{low:.1f}-{high:.1f}x"
    recipe = {row[0]: row for row in converged.table_rows(found)}["the paper's recipe, inherited, fine-tuned"]
    assert recipe[converged.HEADERS.index("params vs U-Net")] == f"{PARENT['params'] / 700_000:.1f}x"  # one size: one ratio


def test_a_row_whose_seeds_and_parent_kept_their_test_bands_gets_the_strips_interval_too(converged):
    records = _records()
    bands = [[[900, 20], [30 + 5 * band, 60]] for band in range(10)]
    records["parent-p0"]["test_bands"] = bands
    records["parent-p0"]["test"]["iou"] = {"background": 0.9, "building": 0.3}  # the class names it scores by
    for seed in (0, 1):
        records[f"recipe-s{seed}"]["test_bands"] = [[[900, 20], [20 + 5 * band, 70]] for band in range(10)]
    found = converged.table(records)
    rows = {row["label"]: row for row in found["rows"]}
    recipe = rows["the paper's recipe, inherited, fine-tuned"]["minus_parent_bands_points"]
    assert recipe["low"] < recipe["mean"] < recipe["high"] and recipe["mean"] > 0  # 10 more hits in every band
    assert rows["control: the parent fine-tuned the same way"]["minus_parent_bands_points"] is None  # no bands kept
    shown = {row[0]: row for row in converged.table_rows(found)}["the paper's recipe, inherited, fine-tuned"]
    assert f"over the strip's bands [{recipe['low']:+.1f}, {recipe['high']:+.1f}]" in shown[converged.HEADERS.index(
        "minus parent, points [95% CI]")]


def test_a_job_keeps_its_test_bands_only_when_they_add_up_to_its_test_evaluation(converged, capsys):
    from types import SimpleNamespace

    from compressor.data import SpacenetSampleConfig
    from compressor.models import micronet
    from compressor.train.config import TrainConfig
    from compressor.train.evaluation import evaluate

    data = SpacenetSampleConfig(patch_size=32, val_fraction=0.2, test_fraction=0.2, guard=32).build()
    network = micronet(in_channels=data.in_channels, num_classes=data.num_classes, base_width=4)
    experiment = SimpleNamespace(train=TrainConfig(eval_window=256))
    test = evaluate(network, data, experiment.train, split="test")
    kept = converged.test_bands_of(network, data, experiment, test, "recipe-s0")
    assert np.asarray(kept["test_bands"]).sum(axis=0).tolist() == [list(row) for row in test.confusion]
    assert len(kept["test_bands"]) == 10  # the strip in ten bands, as strip_noise.py cuts it
    other = SimpleNamespace(confusion=np.asarray(test.confusion) + 1)  # evaluated with other windows, say
    assert converged.test_bands_of(network, data, experiment, other, "recipe-s0") == {}
    assert "recipe-s0: the test bands do not add up to its test evaluation; not kept" in capsys.readouterr().err


def test_a_prediction_that_fails_after_training_costs_the_job_its_bands_not_its_record(converged, capsys):
    from types import SimpleNamespace

    import torch

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            raise ValueError("cannot read these windows")

    data = SimpleNamespace(scenes=lambda split: [SimpleNamespace()], num_classes=2)
    experiment = SimpleNamespace(train=SimpleNamespace(eval_window=64, eval_overlap=0, eval_batch_size=1))
    assert converged.test_bands_of(Broken(), data, experiment, SimpleNamespace(confusion=[[1, 0], [0, 1]]), "small-s3") == {}
    assert "small-s3: no test bands (" in capsys.readouterr().err


def test_a_model_dominating_micronet_is_the_smaller_row_best_on_validation_once_every_candidate_has_seed_zero(converged):
    target = "a model dominates Micro-Net (the row best on validation among those smaller than it)"
    tiny = {"params": 270_000, "flops": 2_800_000_000}
    records = _records()  # the recipe (0.7M, 4G) above Micro-Net (1M, 7G) on both seeds: +6.0 points
    records.update({f"small-s{seed}": _record(f"small-s{seed}", "small", score, seed=seed, val=0.9, **tiny)
                    for seed, score in enumerate([0.20, 0.22])})  # best on validation, 5 points below Micro-Net on test
    records["scratch-s0"]["val"] = {"score": 0.99}  # from scratch: not compressed from the parent, never chosen
    records["parent-p1"] = _record("parent-p1", "parent", 0.30, seed=1, **PARENT)
    records["recipe-p1-s0"] = {**_record("recipe-p1-s0", "recipe", 0.99, seed=0, val=0.99), "parent": 1}  # another parent's
    found = converged.table(records)
    assert found["dominates_micronet"] == {"reason": "waiting for seed 0 of recipe-distill"}  # it may still be the best
    assert converged.targets(found)[target] == "not settled (waiting for seed 0 of recipe-distill)"
    assert converged.micronet_target_job(records, search=False) is None
    assert converged.micronet_target_job(records, search=False, failed={"recipe-distill-s0"}) == "small"
    # the distilled row: fewer params than Micro-Net but more FLOPs, and best on validation: not smaller, no candidate
    records.update({f"recipe-distill-s{seed}": {**_record(f"recipe-distill-s{seed}", "recipe", 0.5, seed=seed, val=0.95,
                                                          flops=8_000_000_000), "distill": True} for seed in (0, 1)})
    found = converged.table(records)
    chosen = found["dominates_micronet"]
    assert chosen["row"] == "small" and chosen["minus_micronet_points"]["mean"] == pytest.approx(-5.0)
    assert chosen["minus_micronet_points"]["n"] == 2  # its own two seeds, nothing of the other parent's or rows'
    assert converged.targets(found)[target].startswith("not met (the paper's recipe + prune 0.6")
    assert converged.targets(found)["the paper's recipe dominates Micro-Net"] == "met"  # +6.0 on both seeds: its own line stays
    for seed in (0, 1):
        records[f"small-s{seed}"]["params"] = 400_000  # 78x: no longer the size target's row, still under Micro-Net
    assert converged.size_target_job(records, search=False) is None
    order = [job["job"] for job in converged.jobs(converged.parsed(["--search-trials", "0"]), records)]
    assert order.index("small-s4") < order.index("control-s1")  # the chosen row's seeds come with the judged rows'
    records["small-s0"]["val"] = {"score": 0.1}  # the recipe is now best on seed 0's validation
    found = converged.table(records)
    assert found["dominates_micronet"]["row"] == "recipe" and converged.targets(found)[target].startswith("met")
    records["recipe-s1"]["params"] = 1_200_000  # chosen on seed 0's size; a larger seed makes it "not smaller"
    assert converged.targets(converged.table(records))[target].startswith("not met (the paper's recipe, inherited")
    records["recipe-s1"]["params"] = 700_000
    del records["micronet-s1"]  # one pair: no interval
    assert converged.targets(converged.table(records))[target] == "not settled (the paper's recipe, inherited, fine-tuned)"
    records["micronet-s0"]["params"] = 200_000  # Micro-Net smaller than every row
    found = converged.table(records)
    assert converged.targets(found)[target] == "not met (no row compressed from the parent is smaller than Micro-Net)"
    del records["micronet-s0"]
    assert converged.targets(converged.table(records))[target] == "not run (Micro-Net's seed 0 has not run)"


def test_a_search_pick_dominating_micronet_is_the_larger_pick_of_a_shared_trial_and_never_one_not_reached(converged):
    records = {**_records(), **_search_records(converged, small=0.30, pick1m=0.35, pick100k=0.32)}
    records["recipe-distill-s0"] = {**_record("recipe-distill-s0", "recipe", 0.3, seed=0, val=0.2), "distill": True}
    found = converged.table(records)
    assert found["dominates_micronet"]["row"] == "pick1m"  # pick300k is the same run, with the same validation score
    records["pick100k-s0"] = {"job": "pick100k-s0", "kind": "pick", "seed": 0, "not_reached": True}
    records["pick1m-s0"]["val"] = {"score": 0.1}
    records["pick300k-s0"]["val"] = {"score": 0.1}
    records["recipe-s0"]["val"] = {"score": 0.1}
    assert converged.table(records)["dominates_micronet"]["row"] == "small"  # 0.30 on validation; pick100k not reached


def test_a_table_summarized_before_the_new_targets_reads_not_run_and_prints(converged, capsys):
    found = converged.table(_records())
    old = {**found, "rows": [{key: value for key, value in row.items() if key not in ("row", "val_mean")} for row in found["rows"]]}
    del old["size_target"], old["dominates_micronet"]  # what results files of earlier days hold
    verdicts = converged.targets(old)
    assert next(iter(verdicts.values())) == "not run"  # no row is taken for the chosen one
    assert verdicts["a model dominates Micro-Net (the row best on validation among those smaller than it)"] == "not run"
    converged.print_table({"spacenet_sample": {**old, "targets": verdicts}}, markdown=True)
    assert "| the paper's recipe, inherited, fine-tuned |" in capsys.readouterr().out
