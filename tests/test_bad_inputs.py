"""Every row of docs/bad_inputs.md, run as a user runs it: the real CLI.

The rows marked ``process=True`` run in a fresh process (a pickle that would run code, a search
that diverges, pip without an index, the lists of names the test plugins would lengthen); the
others run ``compressor.cli.main`` in this process (:func:`conftest.cli_in_process`), which
checks the same exit code and output without importing torch again for each row.

The table in docs/bad_inputs.md is the specification: for each row this test runs its command
(in a folder holding the files the commands name, built by :func:`build_workspace`) and checks
the exit code and the one-line message the table shows, word for word, plus the key facts
the message must name and that nothing already on disk was lost, changed or half-written.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import TESTS, run_cli
from PIL import Image
from report_studies import add, make_study, realistic_study
from search_helpers import tiny_experiment_data
from test_refusals_io import huge_png
from test_untrusted_inputs import craft as craft_model_file

import compressor
from compressor.bounds import THREADS_PER_CORE, max_threads
from compressor.models import build_model
from compressor.origin import set_origin
from compressor.runtime import deploy_available
from compressor.study import trial_records

DOC = Path(TESTS).parent / "docs" / "bad_inputs.md"
STORAGE = "sqlite:///run/search.db"


# -- the files the commands of the table name ----------------------------------------------

def _write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


class _RunsCode:
    """What a malicious pickle holds: unpickling it runs a command (here, one that leaves a file)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def build_workspace(root: Path) -> None:
    """The files of the table's commands, relative to the folder they run in."""
    tiny = tiny_experiment_data(Path("run"), n_trials=2)
    tiny["finetune"] = {"reconstruct_steps": 5, "reconstruct_batches": 1}  # compress's default hints, short
    _write_yaml(root / "tiny.yaml", tiny)
    _write_yaml(root / "bad_key.yaml", {**tiny, "train": {**tiny["train"], "learning_rate": 0.1}})
    _write_yaml(root / "bad_type.yaml", {**tiny, "train": {**tiny["train"], "steps": "many"}})
    # A study already in the experiment's default storage: no failing command may touch it.
    (root / "run").mkdir()
    realistic_study(storage=f"sqlite:///{root / 'run' / 'search.db'}", name="tiny")

    (root / "not_yaml.yaml").write_text("transforms: [\n  - name: fire\n")
    (root / "bad_step_key.yaml").write_text("transforms:\n  - name: fire\n    squeeze_rate: 0.2\n")
    (root / "bad_step_type.yaml").write_text("transforms:\n  - name: fire\n    squeeze_ratio: lots\n")
    (root / "bad_optional.yaml").write_text("transforms:\n  - name: fire\n    optional: maybe\n")
    (root / "small.pt").write_bytes(b"a model saved earlier\n")
    (root / "run" / "train" / "micronet").mkdir(parents=True)
    (root / "run" / "train" / "micronet" / "model.pt").write_bytes(b"a model trained earlier\n")
    (root / "mynet_builder.py").write_text("import torch\ndef build():\n    return torch.nn.Conv2d(3, 2, 1)\n")
    compressor.save_model(root / "teacher3.pt", compressor.unet(in_channels=3, num_classes=3, base_width=4))
    torch.save({"format": "compressor.model/1", "model": _RunsCode()}, root / "evil.pt")
    # what compressor wrote before model files held their architecture: a pickled module, no origin on it
    torch.save({"format": "compressor.model/1", "model": set_origin(compressor.unet(base_width=4), None),
                "recipe": None, "base": "unet", "input_shape": None, "metadata": {}}, root / "legacy.pt")
    torch.save(compressor.micronet(in_channels=3, base_width=4).state_dict(), root / "other_weights.pt")
    compressor.save_model(root / "spectral.pt", build_model("deploy_networks:SpectralNet"))
    compressor.save_model(root / "four_bands.pt", compressor.unet(in_channels=4, base_width=4))
    compressor.save_model(root / "own.pt", build_model("networks:ResidualStridedNet"))  # a user's own builder

    spacenet = {"name": "sn", "run_dir": "run_sn", "data": {"name": "spacenet_sample", "patch_size": 32},
                "model": {"name": "unet", "args": {"base_width": 8}},
                "train": {"steps": 2, "batch_size": 2, "threads": 1, "progress": False}}
    _write_yaml(root / "spacenet.yaml", spacenet)
    (root / "empty-cache").mkdir()
    (root / "bad-cache").mkdir()
    (root / "bad-cache" / "solaris-0.4.0-py3-none-any.whl").write_bytes(b"not a wheel\n")

    rng = np.random.default_rng(0)
    for folder, masks in (("tiles", {"a": (48, 48), "b": (40, 48), "c": (48, 48)}),
                          ("unpaired", {"a": (48, 48), "b": (48, 48)})):
        for name in "abc":
            _png(root / folder / "images" / f"{name}.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
            if name in masks:
                _png(root / folder / "masks" / f"{name}.png", rng.integers(0, 2, masks[name], dtype=np.uint8))
        _write_yaml(root / f"{folder}.yaml", {**spacenet, "name": folder, "run_dir": f"run_{folder}",
                                               "data": {"name": "folder", "root": folder, "patch_size": 32}})

    huge_png(root / "huge" / "images" / "a.png")  # 20000x20000 by its header
    _png(root / "huge" / "masks" / "a.png", np.zeros((48, 48), dtype=np.uint8))
    _write_yaml(root / "huge.yaml", {**spacenet, "name": "huge", "run_dir": "run_huge",
                                     "data": {"name": "folder", "root": "huge", "patch_size": 32}})
    named = make_study(storage=f"sqlite:///{root / 'named.db'}", name="../../x")
    add(named, params=500_000, flops=4 * 10**9, metric=0.2)
    (root / "afile").write_text("a file, not a folder\n")
    (root / "dup_key.yaml").write_text("name: dup\ntrain:\n  lr: 0.01\n  steps: 5\n  lr: 0.1\n")
    (root / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))  # an image named .yaml
    (root / "adir.pt").mkdir()
    (root / "report").mkdir()
    (root / "report" / "index.html").write_text("<html>the report written earlier</html>\n")
    (root / "report" / "summary.md").mkdir()  # in the way of the report's summary.md
    # a model file whose third-party class would download (torch.hub) from a URL it names
    craft_model_file(root / "hovernet.pt", "monai.networks.nets:HoVerNet", {"pretrained_url": "https://example.com/w.pth"})
    (root / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")  # what compressor deploy writes
    # a study whose stored network is a command: anyone who can write the storage chose it
    evil = realistic_study(storage=f"sqlite:///{root / 'evil.db'}", name="evil")
    evil.set_user_attr("model", "subprocess:run")
    evil.set_user_attr("model_args", {"args": "touch pwned", "shell": True})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs_template")
    build_workspace(root)
    return root


@pytest.fixture
def workspace(template, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the files, as the current folder (the CLI runs there)."""
    root = tmp_path / "work"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: sha256 of files, ``dir`` for folders."""
    return {path.relative_to(root).as_posix(): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))}


def finished_trials(study_name: str) -> dict[int, tuple]:
    study = optuna.load_study(study_name=study_name, storage=STORAGE)
    try:
        return {t.number: (t.state, t.values, t.user_attrs) for t in study.get_trials(deepcopy=False)}
    finally:
        study._storage.remove_session()


# -- the table -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    input: str
    command: str
    message: str
    code: int


def documented() -> dict[str, Row]:
    """The rows of the table in docs/bad_inputs.md, by command."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        row = Row(cells[0], cells[1].strip("`"), cells[2].strip("`"), int(cells[3]))
        assert row.command not in rows, f"two rows run {row.command}"
        rows[row.command] = row
    return rows


@dataclass(frozen=True)
class Case:
    command: str                          # exactly as in the table
    facts: tuple[str, ...] = ()           # what the message must name
    may_change: tuple[str, ...] = ()      # files (globs) the command may write; everything else stays as it was
    check: Callable[[Path, object], None] | None = None
    here: Callable[[str], str] | None = None  # the table's message as this machine words it (its cores)
    process: bool = False                 # run in a fresh process (else in this one: see the module's docstring)


def _cores_here(message: str) -> str:
    """The table shows the threads bound of a 2-core machine; it is 4 threads a core of the machine running."""
    return message.replace(f"[1, 8] ({THREADS_PER_CORE} x the 2 cores here)",
                           f"[1, {max_threads()}] ({THREADS_PER_CORE} x the {os.cpu_count() or 1} cores here)")


def _check_nan_search(root: Path, result) -> None:
    # Every trained candidate diverges at lr 1e12: the first trial (the paper's recipe) fails with
    # the reason and the search goes on; with this seed the next candidate is over the budget, is
    # not trained, and completes the study's target of one.
    records = trial_records(optuna.load_study(study_name="nan", storage=STORAGE))
    assert [r.status for r in records] == ["failed", "infeasible"]
    assert records[0].failure == "training failed at step 2: the loss is nan; lower train.lr or check the data"
    lines = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert [line.split()[2] for line in lines] == ["failed", "infeasible"]
    assert "study 'nan': 2 trials (1 failed, 1 infeasible)" in result.stdout


def _check_written_safe(root: Path, result) -> None:
    # its result holds no architecture as data either: a pickle, said so, loading only when trusted
    assert "legacy_small.pt is a pickle too" in result.stdout
    assert "legacy_small.pt', trust=True) or --trust" in result.stdout  # how it loads, said where it was saved
    student = compressor.load_model(root / "legacy_small.pt", trust=True)
    assert student(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(compressor.errors.UntrustedModelError):
        compressor.load_model(root / "legacy_small.pt")


def _check_report_kept_the_page(root: Path, result) -> None:
    # The page is written last: the earlier one is still there; the files written before the
    # failure are whole (each was renamed into place complete); no scratch file is left.
    assert (root / "report" / "index.html").read_text() == "<html>the report written earlier</html>\n"
    with (root / "report" / "pareto.csv").open() as file:
        assert "number" in next(csv.reader(file))
    assert not [path.name for path in (root / "report").iterdir() if path.name.endswith(".tmp")]


def _check_report_inside_reports(root: Path, result) -> None:
    # the whole report in one folder of reports/, nothing beside the workspace (where ../../x would be)
    assert (root / "reports" / "_._.._x" / "summary.md").is_file()
    assert [path.name for path in (root / "reports").iterdir()] == ["_._.._x"]
    assert not (root.parent.parent / "x").exists()


CASES = [
    Case("compressor apply unet --transform nosuch --out small.pt", ("'nosuch'", "valid names: dilation"), process=True),
    Case("compressor search tiny.yaml --space nope", ("'nope'", "generic, unet_family"), process=True),
    Case("compressor apply unet --recipe not_yaml.yaml --out small.pt", ("not_yaml.yaml", "not valid YAML")),
    Case("compressor apply unet --recipe bad_step_key.yaml --out small.pt",
         ("bad_step_key.yaml", "transforms[0] (fire)", "'squeeze_rate'", "valid keys")),
    Case("compressor apply unet --recipe bad_step_type.yaml --out small.pt",
         ("bad_step_type.yaml", "squeeze_ratio", "expected number", "'lots'")),
    Case("compressor search bad_key.yaml", ("bad_key.yaml", "train.learning_rate", "unknown key")),
    Case("compressor search bad_type.yaml", ("bad_type.yaml", "train.steps", "expected integer or one of 'auto'", "'many'")),
    Case("compressor apply unet --recipe bad_optional.yaml --out small.pt",
         ("bad_optional.yaml", "transforms[0]", "optional", "'maybe'")),
    Case("compressor search tiny.yaml --max-params 10", ("params <= 10", "smallest", "params")),
    Case("compressor search tiny.yaml --study classes --model networks:ResidualStridedNet --model-arg num_classes=3",
         ("networks:ResidualStridedNet", "outputs 3 classes", "the data has 2", "--model-arg")),
    Case("compressor search tiny.yaml --max-params 12q", ("max_params", "'12q'")),
    Case("PIP_NO_INDEX=1 compressor train spacenet.yaml --cache-dir empty-cache",
         ("cannot download solaris==0.4.0", "put it at empty-cache/solaris-0.4.0-py3-none-any.whl"), process=True),
    Case("compressor train spacenet.yaml --cache-dir bad-cache",
         ("bad-cache/solaris-0.4.0-py3-none-any.whl", "sha256 is", "expected")),
    Case("compressor train tiles.yaml", ("differ in size", "b (image 48x48, mask 48x40)")),
    Case("compressor train unpaired.yaml", ("unpaired", "images without a mask: c")),
    Case("compressor search tiny.yaml --model no.such.module:fn", ("'no.such.module'", "No module named")),
    Case("compressor search tiny.yaml --model builtins:dict", ("'builtins:dict'", "not a torch.nn.Module")),
    Case("compressor apply networks:TinyClassifier --transform downsample_depth --out small.pt",
         ("downsample_depth", "nothing to pair", "stride_to_dilation")),
    Case("compressor apply networks:GroupedInstanceNet --transform downsample_depth --out small.pt",
         ("GroupedInstanceNet has 1 down-sampling level", "remove at most 0", "all_levels=true")),
    Case("compressor search tiny.yaml --study nan --set train.lr=1e12 --n-trials 1 --seed 5",
         may_change=("run/search.db", "run/artifacts"), check=_check_nan_search, process=True),
    Case("compressor train tiny.yaml --set train.distill.teacher=teacher3.pt",
         ("distillation teacher", "(4, 3, 32, 32)", "(4, 2, 32, 32)")),
    Case("compressor compress unet tiny.yaml --model-arg base_width=8 --checkpoint other_weights.pt --transform fire",
         ("other_weights.pt", "another architecture", "decoder.0.0.squeeze.conv.weight")),
    Case("compressor compress networks:TinyClassifier tiny.yaml --transform fire",
         ("'networks:TinyClassifier'", "random weights", "--checkpoint")),
    # nothing in the pickle runs: it would have left the file `pwned`, and the folder must be as it was
    Case("compressor compress evil.pt tiny.yaml --transform fire", ("evil.pt", "pickled model", "--trust"), process=True),
    Case("compressor compress legacy.pt tiny.yaml --transform fire --steps 1 --trust --out legacy_small.pt",
         may_change=("legacy_small.pt",), check=_check_written_safe),
    Case("compressor apply networks:TinyClassifier --transform fire --out afile/model.pt",
         ("afile/model.pt", "afile is a file")),
    Case("compressor apply networks:TinyClassifier --transform fire --out adir.pt", ("adir.pt", "folder")),
    Case("compressor confirm --study tiny --storage sqlite:///run/search.db --trials 99 --seeds 1",
         ("trial 99", "no such trial")),
    Case("compressor confirm --study tiny --storage sqlite:///run/search.db --folds",
         ("search.confirm.folds", "data.folds >= 2")),
    Case("compressor train spacenet.yaml --set data.fold=2", ("spacenet.yaml", "data.fold", "data.folds >= 2")),
    Case("compressor deploy teacher3.pt --out model.onnx --int8", ("--int8", "calibration data", "--experiment")),
    Case("compressor deploy spectral.pt --out model.onnx --trust",
         ("module 'features.1' (Spectral)", "aten::fft_fft2", "opset 17")),
    Case("compressor deploy four_bands.pt --out model.onnx --experiment tiny.yaml",
         ("four_bands.pt", "tiny.yaml's data", "4 channels")),
    Case("compressor report --study tiny --storage sqlite:///run/search.db --out report",
         ("report/summary.md", "folder"),
         may_change=("report/*.png", "report/trials.csv", "report/pareto.csv"), check=_check_report_kept_the_page),
    Case("compressor train tiny.yaml --threads 100000", ("--threads", "'100000'", "cores"), here=_cores_here),
    Case("compressor train tiny.yaml --set train.seed=18446744073709551617",
         ("tiny.yaml", "train.seed", "18446744073709551617", "[0, 4294967295]")),
    Case("compressor train tiny.yaml --set train.momentum=.nan", ("tiny.yaml", "train.momentum", "nan")),
    Case("compressor compress small.pt tiny.yaml --transform fire --set finetune.reconstruct=all",
         ("tiny.yaml", "finetune.reconstruct", "none, layer, block, hints", "'all'")),
    Case("compressor compress small.pt tiny.yaml --transform fire --set finetune.feature_weight=-1",
         ("tiny.yaml", "finetune.feature_weight", ">= 0", "-1.0")),
    Case("compressor search tiny.yaml --set finetune.precision=half",
         ("tiny.yaml", "finetune.precision", "'fp32', 'bf16', 'auto' or null", "'half'")),
    Case("compressor train dup_key.yaml", ("dup_key.yaml", "'lr'", "line 5", "line 3")),
    Case("compressor apply unet --recipe binary.yaml --out small.pt", ("binary.yaml", "recipe", "not UTF-8")),
    Case("compressor search tiny.yaml --storage sqlite:///:memory:", ("sqlite:///:memory:", "in-memory", "outlive")),
    Case("compressor train huge.yaml", ("huge/images/a.png", "20000x20000", "decompression bombs")),
    Case("compressor deploy hovernet.pt --out model2.onnx", ("hovernet.pt", "pretrained_url", "--trust")),
    Case("compressor deploy model.onnx --out model2.onnx", ("model.onnx", "an ONNX file")),
    Case("compressor deploy teacher3.pt --out model2.onnx --experiment tiny.yaml", ("teacher3.pt", "3 classes", "has 2")),
    Case("compressor deploy teacher3.pt --out model2.onnx --set data.labels=multiclass", ("--set", "--experiment")),
    Case("compressor train tiny.yaml --model micronet", ("run/train/micronet/model.pt", "--overwrite")),
    Case("compressor compress unet tiny.yaml --transform fire --out small.pt", ("small.pt", "--overwrite")),
    Case("compressor cost mynet_builder:build --input-shape 1,3,32,32", ("mynet_builder", "PYTHONPATH=.")),
    Case("compressor search tiny.yaml --model nothere.pt", ("nothere.pt", "no such file")),
    Case("compressor compress own.pt tiny.yaml --transform fire", ("own.pt", "networks:ResidualStridedNet", "--trust")),
    Case("compressor search tiny.yaml --model teacher3.pt --init random", ("teacher3.pt", "--init random", "inherit")),
    Case("compressor search tiny.yaml --model teacher3.pt", ("teacher3.pt", "3 classes", "has 2")),
    Case("compressor export --study evil --storage sqlite:///evil.db --trial 0 --out t.pt",
         ("study 'evil'", "'subprocess:run'", "--trust")),
    Case("compressor report --study ../../x --storage sqlite:///named.db", may_change=("reports",),
         check=_check_report_inside_reports),
]


def test_every_row_of_the_table_has_a_case_and_every_case_a_row():
    assert sorted(documented()) == sorted(case.command for case in CASES)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES, ids=[case.command.split(" ", 2)[-1][:60] for case in CASES])
def test_a_bad_input_is_one_line_a_nonzero_code_and_loses_nothing(case, workspace, cli, monkeypatch):
    row = documented()[case.command]
    if case.command.startswith("compressor deploy") and not deploy_available():
        pytest.skip("the deploy extra (onnx, onnxruntime) is not installed: pip install -e '.[deploy]'")
    words = shlex.split(case.command)
    while "=" in words[0]:  # VAR=value before the command: its environment
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
        if name == "PIP_NO_INDEX":  # no index and no local wheel folder either: as without network
            monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    assert words[0] == "compressor"
    study_before = finished_trials("tiny")
    before = snapshot(workspace)

    if case.process:
        result = run_cli(*words[1:], timeout=240, plugins=False)  # what a user sees: no test plugin installed
    else:
        result = cli(*words[1:])

    assert result.returncode == row.code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    prefix = f"compressor {words[1]}: error: "
    errors = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    # Only progress notes ("compressor: fetching ...") besides the error line.
    assert all(line.startswith("compressor: ") for line in result.stderr.splitlines() if line not in errors), \
        result.stderr
    if row.code in (0, 3):  # 3: done, and the result is at the floor (compress says so in its output)
        assert errors == [] and row.message in result.stdout
    elif row.code == 1:  # the work ran and ended with no result: the reason in the output, one error line
        assert row.message in result.stdout and len(errors) == 1, result.stderr
    else:
        assert row.code == 2 and errors == [case.here(row.message) if case.here else row.message], result.stderr
        for fact in case.facts:
            assert fact in row.message, fact

    after = snapshot(workspace)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    allowed = {path for path in changed if any(Path(path).match(pattern) or path.startswith(f"{pattern}/")
                                                 for pattern in case.may_change)}
    assert changed == allowed, sorted(changed - allowed)
    assert finished_trials("tiny") == study_before  # the study already there: every trial as it was
    if case.check is not None:
        case.check(workspace, result)
