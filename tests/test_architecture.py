"""docs/architecture.md holds: each package pulls in only the layers its row allows, every
package has a row, and the worked examples (a transform, a search space, a dataset) run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _layers() -> tuple[dict[str, str], dict[str, set[str]]]:
    """``package -> layer`` and ``layer -> the layers it may import``, from the doc's table."""
    table = DOC.split("## The layers", 1)[1].split("\n\n")[2]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    layer_of, allowed = {}, {}
    names = [row.split("|")[1].strip() for row in rows]
    for row in rows:
        layer, packages, imports = (cell.strip() for cell in row.split("|")[1:4])
        for package in re.findall(r"`([a-z_]+)`", packages):
            layer_of[package] = layer
        allowed[layer] = set(names) - {"bundled spaces"} if imports == "everything" else {
            name.strip() for name in imports.split(",")}
    return layer_of, allowed


LAYER_OF, ALLOWED = _layers()


def test_the_table_is_read_and_names_known_layers():
    assert len(LAYER_OF) >= 25 and {"study", "search", "report", "transforms"} <= set(LAYER_OF)
    assert all(imports <= set(ALLOWED) for imports in ALLOWED.values())


def test_every_package_of_compressor_has_a_row():
    packages = {path.stem for path in (ROOT / "compressor").glob("*.py") if path.stem not in ("__init__", "__main__")}
    packages |= {path.name for path in (ROOT / "compressor").iterdir() if (path / "__init__.py").exists()}
    assert packages - set(LAYER_OF) == set()
    assert set(LAYER_OF) - packages == {"search_spaces"}


# One interpreter loads the third-party libraries once, then forks a child per package: each
# child imports that package alone and lists the compressor modules it pulled in.
_PROBE = """
import importlib, json, os, sys
import numpy, optuna, pandas, seaborn, torch, torch_pruning, fvcore.nn, yaml, tqdm  # not ours: load them once
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        importlib.import_module(module)
        ours = sorted(m for m in sys.modules if m.startswith(("compressor.", "search_spaces")))
        print(json.dumps([module, ours]), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def _pulled_in(packages: list[str]) -> dict[str, set[str]]:
    modules = [package if package == "search_spaces" else f"compressor.{package}" for package in packages]
    result = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, env=cli_env(),
                            timeout=600)
    assert result.returncode == 0, result.stderr
    pulled = {}
    for line in result.stdout.splitlines():
        module, loaded = json.loads(line)
        pulled[module.removeprefix("compressor.")] = {
            name.split(".")[0] if name.startswith("search_spaces") else name.split(".")[1] for name in loaded}
    assert set(pulled) == set(packages), result.stderr
    return pulled


def test_each_package_pulls_in_only_the_layers_it_may_import():
    pulled = _pulled_in(sorted(LAYER_OF))
    assert "study" in pulled["search"] and "report" not in pulled["search"]  # the check can fail
    violations = {
        package: sorted(other for other in found if LAYER_OF[other] not in ALLOWED[LAYER_OF[package]])
        for package, found in pulled.items()
    }
    assert {package: found for package, found in violations.items() if found} == {}


def test_compressor_never_names_the_top_level_search_spaces():
    offending = [str(path.relative_to(ROOT)) for path in (ROOT / "compressor").rglob("*.py")
                 if re.search(r"^\s*(from|import) search_spaces\b", path.read_text(), re.M)]
    assert offending == []


EXAMPLES = re.findall(r"^## (Adding a [a-z ]+)\n.*?```python\n(.*?)```", DOC, re.S | re.M)


def test_there_is_a_worked_example_for_each_extension_point():
    assert [title for title, _ in EXAMPLES] == ["Adding a transform", "Adding a search space", "Adding a dataset"]


@pytest.mark.parametrize("code", [code for _, code in EXAMPLES], ids=[title for title, _ in EXAMPLES])
def test_a_worked_example_runs(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[a-z_]+: .+\n", result.stdout)
