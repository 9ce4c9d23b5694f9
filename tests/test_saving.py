"""Model files that cannot run code: weights as tensors, the architecture as data, rebuilt on load."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import compressor
from compressor.errors import ConfigError, UntrustedModelError
from compressor.origin import origin_of
from compressor.outputs import declare_output, declared_output

SHAPE = (1, 3, 64, 64)
RECIPE = [{"name": "downsample_depth", "levels": 1}, {"name": "skip_fusion"}, {"name": "fire"},
          {"name": "prune", "ratio": 0.5, "steps": 4}]


@pytest.fixture(scope="module")
def small() -> nn.Module:
    torch.manual_seed(0)
    network, _ = compressor.apply(compressor.unet(base_width=8, norm="batch"), RECIPE, SHAPE)
    return network.eval()


def test_a_saved_network_is_tensors_and_data_and_comes_back_the_same(small, tmp_path):
    path = compressor.save_model(tmp_path / "small.pt", small, metadata={"metric": 0.5})
    payload = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert payload["format"] == "compressor.model/2" and "model" not in payload
    assert [step["name"] for step in payload["origin"]["steps"]] == [step["name"] for step in RECIPE]
    assert payload["origin"]["steps"][-1]["widths"]  # the pruned widths: they depend on the weights ranked
    loaded = compressor.load_saved(path)
    example = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.model(example), small(example))
    assert loaded.metadata == {"metric": 0.5} and origin_of(loaded.model) == origin_of(small)
    again = compressor.save_model(tmp_path / "again.pt", loaded.model)  # a loaded network saves again
    assert torch.equal(compressor.load_model(again)(example), small(example))


def test_a_model_class_of_a_known_package_loads_and_the_users_own_needs_trust(tmp_path):
    network = declare_output(compressor.build_model("monai.networks.nets:BasicUNet", {
        "spatial_dims": 2, "in_channels": 3, "out_channels": 2, "features": [4, 4, 8, 8, 16, 4]}), "out")
    loaded = compressor.load_model(compressor.save_model(tmp_path / "monai.pt", network))
    assert type(loaded).__name__ == "BasicUNet" and declared_output(loaded) == "out"
    # a class of the user's own module: importing it runs that module, so only when trusted (or registered)
    own = compressor.save_model(tmp_path / "net.pt", compressor.build_model("networks:ResidualStridedNet", {"width": 4}))
    with pytest.raises(UntrustedModelError, match=r"'networks:ResidualStridedNet', which is neither a registered"):
        compressor.load_model(own)
    assert type(compressor.load_model(own, trust=True)).__name__ == "ResidualStridedNet"


@pytest.mark.parametrize("base", [
    "monai.networks.utils:torch.os.system",   # a path through another module to any function
    "monai.networks.utils:torch",             # a module, not a model
    "monai.networks:save_state",              # a function of a known package that writes files
    "evilmod:Net",                            # a module of the file's choosing: never imported
])
def test_a_builder_the_file_chooses_cannot_run_code(base, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "compressor.model/2", "origin": {"base": base, "args": {"command": f"touch {marker}"}},
                "state_dict": {}}, crafted)
    with pytest.raises(UntrustedModelError, match="neither a registered model nor a model class"):
        compressor.load_model(crafted)
    assert not marker.exists()


def test_a_pickle_is_refused_unless_trusted_and_nothing_in_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "compressor.model/1", "model": RunsCode()}, evil)
    with pytest.raises(UntrustedModelError, match=r"evil.pt: a pickled model .*\(trust=True\)$"):
        compressor.load_model(evil)
    assert not marker.exists()
    legacy = compressor.save_model(tmp_path / "legacy.pt", compressor.unet(base_width=4), pickle=True)
    with pytest.raises(UntrustedModelError):
        compressor.load_model(legacy)
    assert type(compressor.load_model(legacy, trust=True)).__name__ == "UNet"


def test_a_file_naming_an_arbitrary_function_as_builder_is_refused_unless_trusted(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "compressor.model/2", "origin": {"base": "subprocess:run",
                                                           "args": {"args": ["touch", str(marker)]}},
                "state_dict": {}}, crafted)
    with pytest.raises(UntrustedModelError, match=r"built by 'subprocess:run', which is neither"):
        compressor.load_model(crafted)
    assert not marker.exists()
    # a factory function of the user's own: saved as data, loaded only when trusted (or registered)
    factory = compressor.save_model(tmp_path / "factory.pt", compressor.build_model("networks:monai_segresnet"))
    with pytest.raises(UntrustedModelError, match="networks:monai_segresnet"):
        compressor.load_model(factory)
    assert type(compressor.load_model(factory, trust=True)).__name__ == "SegResNet"
    with pytest.raises(UntrustedModelError, match=r"built by 'subprocess:run', which is neither"):
        compressor.load_model(crafted)


def test_what_cannot_be_saved_or_loaded_is_one_clear_error(small, tmp_path):
    with pytest.raises(ConfigError) as refused:
        compressor.save_model(tmp_path / "conv.pt", nn.Conv2d(3, 2, 1))
    assert str(refused.value).startswith("cannot save Conv2d as data: compressor does not know how it was built; build "
                                         "it with compressor.build_model('torch.nn.modules.conv:Conv2d', ARGS) (")
    assert not (tmp_path / "conv.pt").exists()

    class Local(nn.Conv2d):  # no import path to suggest: a class inside a function
        pass

    with pytest.raises(ConfigError, match=r"build it with compressor.build_model\(SPEC, ARGS\)"):
        compressor.save_model(tmp_path / "local.pt", Local(3, 2, 1))
    # a network compressed from one compressor did not build: the message names that one, the one to build
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                          nn.Upsample(scale_factor=2), nn.Conv2d(4, 2, 1))
    student, _ = compressor.apply(plain, [{"name": "downsample_depth", "levels": 1, "all_levels": True}], (1, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"^cannot save Sequential as data: it is a transformed Sequential, which "
                                          r"compressor did not build; build Sequential with compressor.build_model"):
        compressor.save_model(tmp_path / "student.pt", student)
    # a layer changed behind the recipe's back: the file would not load, so it is not written
    changed = compressor.unet(base_width=4)
    changed.head = nn.Conv2d(4, 2, 3, padding=1)
    with pytest.raises(ConfigError, match=r"built again from its recipe, it differs at head.weight"):
        compressor.save_model(tmp_path / "changed.pt", changed)
    assert not (tmp_path / "changed.pt").exists()
    plain = {"format": "compressor.model/1", "recipe": None}  # loads weights-only, and holds no network
    torch.save(plain, tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match=r"plain.pt: not a model file saved by compressor \(it holds no network\)"):
        compressor.load_model(tmp_path / "plain.pt")
    path = compressor.save_model(tmp_path / "small.pt", small)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {key: value[:1] if value.ndim else value for key, value in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(ConfigError, match=r"cut.pt: its weights do not fit the network rebuilt from its architecture"):
        compressor.load_model(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model\n")
    with pytest.raises(ConfigError, match=r"junk.pt: "):
        compressor.load_model(tmp_path / "junk.pt")


def test_loading_a_model_file_does_not_import_torch_dynamo(tmp_path):
    """The construction budget's dispatch mode is not wrapped in dynamo's ``disable`` (whose first call imports
    torch._dynamo: 1.3 s of every command that loads a file, for a mode nothing compiles under)."""
    import subprocess
    import sys

    from conftest import cli_env

    torch.manual_seed(0)
    path = compressor.save_model(tmp_path / "small.pt", compressor.apply(compressor.unet(base_width=8), "fire",
                                                                         (1, 3, 32, 32))[0])
    code = ("import sys; from compressor.saving import load_model; load_model(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))[:1])")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=cli_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
