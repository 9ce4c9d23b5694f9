"""Model files and studies are data: crafted ones run nothing, fetch nothing, write nothing.

Each crafted input is what an attacker (or a careless colleague) would hand over: a model file
whose third-party class is given arguments that download, read or write (issue 24), or a study
whose stored network, folders or parent were rewritten. Every one must be refused in one line
with exit code 2, before anything is built: the marker files stay absent and an empty
``TORCH_HOME`` stays empty.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import time
import urllib.error
import zipfile
from pathlib import Path

import optuna
import pytest
import third_party
import torch
from conftest import cli_in_process
from conftest import refused_in_process as refused
from search_helpers import tiny_experiment, write_tiny_experiment
from torch import nn

import compressor
from compressor.annotations import annotate
from compressor.cli import main
from compressor.errors import ConfigError, UntrustedModelError
from compressor.models import build_model, policy
from compressor.models.construction import no_downloads
from compressor.pipeline import run_search
from compressor.tensor_files import NotATensorFileError, read_tensor_file

SMP = "segmentation_models_pytorch"


def craft(path: Path, base: str, args: dict, *, state: dict | None = None, **fields) -> Path:
    """A model file as :func:`compressor.save_model` lays it out, with the builder and arguments of our choosing."""
    payload = {"format": "compressor.model/2", "origin": {"base": base, "args": args, "steps": [], "input_shape": None},
               "output": None, "state_dict": {} if state is None else state, "recipe": None, "base": None,
               "input_shape": None, "metadata": {}, **fields}
    torch.save(payload, path)
    return path


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A working folder, an empty TORCH_HOME, and a secret file a crafted URL points at."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    (tmp_path / "secret.txt").write_text("a file the attacker wants copied\n")
    write_tiny_experiment(tmp_path / "tiny.yaml", Path("runs"))
    return tmp_path


def nothing_fetched(world: Path) -> None:
    assert list((world / "torch_home").rglob("*")) == []
    assert not (world / "cache").exists()
    assert not (world / "pwned").exists()


# -- crafted model files -------------------------------------------------------------------------

CRAFTED = {
    # MONAI's HoVerNet downloads its encoder from pretrained_url through torch.hub (file:// too)
    "hovernet_url": ("monai.networks.nets:HoVerNet", {"pretrained_url": "file://{world}/secret.txt"},
                     ("pretrained_url", "monai.networks.nets:HoVerNet")),
    # smp with a timm encoder: timm fetches from the overlay's URL into the cache folder the file names
    "smp_timm_overlay": (f"{SMP}:Unet", {"encoder_name": "tu-resnet18", "encoder_weights": None,
                                         "pretrained_cfg_overlay": {"url": "file://{world}/secret.txt"},
                                         "cache_dir": "{world}/cache"},
                         ("pretrained_cfg_overlay", f"{SMP}:Unet")),
    "smp_cache_dir": (f"{SMP}:Unet", {"encoder_name": "resnet18", "encoder_weights": None, "cache_dir": "{world}/cache"},
                      ("cache_dir",)),
    "smp_imagenet": (f"{SMP}:Unet", {"encoder_name": "resnet18", "encoder_weights": "imagenet"},
                     ("encoder_weights", "'imagenet'", "loads weights")),
    "smp_hub_encoder": (f"{SMP}:Unet", {"encoder_name": "tu-hf-hub:timm/resnet18.a1_in1k", "encoder_weights": None},
                        ("encoder_name", "a path or a URL")),
    # MONAI's ResNet with a pretrained path: a file to read and unpickle
    "monai_resnet_pretrained": ("monai.networks.nets:ResNet", {"block": "basic", "layers": [1, 1, 1, 1],
                                                                "block_inplanes": [8, 16, 32, 64],
                                                                "pretrained": "{world}/secret.txt"},
                                ("pretrained", "loads weights")),
    "unknown_argument": (f"{SMP}:Unet", {"encoder_name": "resnet18", "encoder_weights": None, "hook": 1},
                         ("argument hook", "not an architecture argument")),
    "code_builder": ("subprocess:run", {"args": "touch pwned", "shell": True}, ("'subprocess:run'", "neither")),
    "missing_module": ("monai.networks.nosuch:Foo", {}, ("cannot import module 'monai.networks.nosuch'",)),
    "huge_unet": ("unet", {"base_width": 60_000}, ("more than",)),  # GiB of tensors, or parameters
    "deep_unet": ("unet", {"depth": 100_000}, ("argument depth", "out of range")),
}


def _filled(value, world: Path):
    if isinstance(value, str):
        return value.replace("{world}", str(world))
    if isinstance(value, dict):
        return {key: _filled(item, world) for key, item in value.items()}
    return value


@pytest.mark.parametrize("command", ["deploy", "compress"])
@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_model_file_is_refused_before_anything_is_built(name, command, world, capfd):
    base, args, facts = CRAFTED[name]
    if base.startswith(("monai", SMP)) and third_party.missing_reason(base.split(".")[0].split(":")[0]):
        pytest.skip(third_party.missing_reason(base.split(".")[0].split(":")[0]))
    craft(world / "evil.pt", base, _filled(args, world))
    argv = (["deploy", "evil.pt", "--out", "evil.onnx"] if command == "deploy"
            else ["compress", "evil.pt", "tiny.yaml", "--transform", "fire"])
    refused(capfd, argv, "evil.pt", *facts)
    nothing_fetched(world)
    assert not (world / "evil.onnx").exists() and not (world / "runs").exists()


def test_the_same_file_builds_when_trusted(world):
    # --trust calls the builder with the stored arguments: the policy is what stopped it, not luck
    path = craft(world / "cached.pt", f"{SMP}:Unet", {"encoder_name": "resnet18", "encoder_weights": None,
                                                      "encoder_depth": 3, "decoder_channels": [32, 16, 8], "hook": 1})
    with pytest.raises(UntrustedModelError, match="argument hook"):
        compressor.load_model(path)
    with pytest.raises(ConfigError, match="its weights do not fit the network rebuilt"):  # built: no weights in it
        compressor.load_model(path, trust=True)


def test_a_teacher_file_named_by_an_experiment_is_data_too(world, capfd):
    craft(world / "teacher.pt", "monai.networks.nets:HoVerNet", {"pretrained_url": f"file://{world}/secret.txt"})
    refused(capfd, ["train", "tiny.yaml", "--set", "train.distill.teacher=teacher.pt"], "teacher.pt", "pretrained_url")
    nothing_fetched(world)


def test_a_users_smp_file_still_loads_without_trust_with_weights_off(tmp_path):
    if third_party.missing_reason(SMP):
        pytest.skip(third_party.missing_reason(SMP))
    # encoder_weights not given: smp would download imagenet weights; a file's network is built with them off
    model = build_model(f"{SMP}:Unet", {"encoder_name": "resnet18", "encoder_weights": None, "encoder_depth": 3,
                                        "decoder_channels": [32, 16, 8]})
    path = compressor.save_model(tmp_path / "user.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["origin"]["args"]["encoder_weights"]
    torch.save(payload, path)
    loaded = compressor.load_model(path)
    example = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(example), model.eval()(example))


def test_the_size_is_counted_before_anything_is_allocated(tmp_path):
    # 27 trillion parameters would be 109 TB: the meta build asks for it and is stopped at the bound
    path = craft(tmp_path / "huge.pt", "unet", {"base_width": 60_000})
    started = time.perf_counter()
    with pytest.raises(UntrustedModelError, match=r"unet asks for more than 0.2 GiB of tensors while it is built"):
        compressor.load_model(path)
    assert time.perf_counter() - started < 5
    # the bound follows the file: a network far larger than the tensors it holds is not its network
    # (counted in stored bytes: a tensor expanded from one value to a trillion is one value)
    small = craft(tmp_path / "small.pt", "unet", {"base_width": 96}, state={"x": torch.zeros(1).expand(10**12)})
    with pytest.raises(UntrustedModelError, match=r"unet asks for more than 0.2 GiB"):
        compressor.load_model(small)
    with pytest.raises(ConfigError, match="weights do not fit"):  # trusted: built, then refused for its weights
        compressor.load_model(small, trust=True)


def test_a_network_that_cannot_be_counted_on_the_meta_device_is_bounded_while_built(tmp_path):
    # smp's Segformer encoder computes on its tensors' values: no meta build; the real one is watched
    if third_party.missing_reason(SMP):
        pytest.skip(third_party.missing_reason(SMP))
    path = craft(tmp_path / "mit.pt", f"{SMP}.encoders.mix_transformer:MixVisionTransformer", {"depths": [1, 1, 1, 300]})
    with pytest.raises(UntrustedModelError, match="asks for more than 0.2 GiB of tensors while it is built"):
        compressor.load_model(path)


def test_a_network_that_takes_too_long_to_build_is_stopped(tmp_path, monkeypatch):
    # 65536 tiny layers: little memory, minutes of Python; stopped at the build time limit
    monkeypatch.setattr(policy, "BUILD_SECONDS", 1.0)
    path = craft(tmp_path / "deep.pt", "torchvision.models.vision_transformer:VisionTransformer",
                 {"image_size": 16, "patch_size": 16, "num_layers": 65536, "num_heads": 1, "hidden_dim": 1, "mlp_dim": 1})
    started = time.perf_counter()
    with pytest.raises(UntrustedModelError, match="took more than 1 s to build"):
        compressor.load_model(path)
    assert time.perf_counter() - started < 10


def test_torch_hub_reaches_nothing_inside_the_second_wall(world):
    hub_before = torch.hub.get_dir()
    with no_downloads():
        with pytest.raises(urllib.error.URLError, match="downloads are off"):
            torch.hub.load_state_dict_from_url(f"file://{world}/secret.txt")
        hub = Path(torch.hub.get_dir())
        assert hub != Path(hub_before) and [path for path in hub.rglob("*") if path.is_file()] == []
    assert torch.hub.get_dir() == hub_before
    nothing_fetched(world)


# -- files that are not what they say -------------------------------------------------------------

def test_a_file_is_named_as_what_it_is(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    (tmp_path / "model.json").write_text('{"format": "compressor.model/2"}')
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, says in (("model.onnx", "an ONNX file"), ("model.json", "a JSON file"), ("empty.pt", "an empty file")):
        with pytest.raises(NotATensorFileError, match=says) as caught:
            compressor.load_model(tmp_path / name)
        assert "pickle" not in str(caught.value) and "trust" not in str(caught.value)


def test_a_deflated_archive_is_refused_before_it_is_unpacked(tmp_path):
    # 1.1 MB on disk that would unpack to 200 MB: torch.save never compresses, so this is not one of its files
    stored = tmp_path / "plain.pt"
    torch.save({"state": torch.zeros(12_500_000)}, stored)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry.filename))
    assert bomb.stat().st_size < stored.stat().st_size // 20
    with pytest.raises(NotATensorFileError, match="unpack to .* bytes from .*refused before reading"):
        read_tensor_file(bomb, what="model file")
    assert read_tensor_file(stored, what="model file")["state"].numel() == 12_500_000


@pytest.mark.parametrize(("change", "says"), [
    ({"state_dict": "weights"}, "its state_dict is not a mapping of names to tensors"),
    ({"state_dict": [1, 2]}, "its state_dict is not a mapping of names to tensors"),
    ({"origin": ["unet"]}, "its architecture is not a mapping naming a builder"),
    ({"input_shape": [1, -3, 32, 32]}, "input shape"),
    ({"input_shape": [1, 3, 2.5, 32]}, "input shape"),
    ({"input_shape": "big"}, "input shape"),
    ({"origin": {"base": "unet", "args": {"base_width": 4}, "steps": [{"name": "fire"}], "input_shape": [1, 3, 8192, 8192]}},
     "traced again at"),
])
def test_a_damaged_model_file_is_one_line(change, says, tmp_path, capfd):
    path = compressor.save_model(tmp_path / "good.pt", compressor.unet(base_width=4))
    payload = torch.load(path, weights_only=True)
    payload.update(change)
    torch.save(payload, tmp_path / "bad.pt")
    message = refused(capfd, ["deploy", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "x.onnx")], "bad.pt", says)
    assert "pickle" not in message


def test_weights_that_do_not_fit_say_where(tmp_path):
    path = compressor.save_model(tmp_path / "good.pt", compressor.unet(base_width=4))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.weight"] = torch.zeros(2, 5, 1, 1)
    torch.save(payload, path)
    with pytest.raises(ConfigError, match=r"head.weight is \(2, 5, 1, 1\) in the file, \(2, 4, 1, 1\) in the model"):
        compressor.load_model(path)


# -- studies --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def made_study(tmp_path_factory) -> Path:
    """A real study of one trained trial (the tiny search), made once; tests change copies of it."""
    root = tmp_path_factory.mktemp("made_study")
    run_search(tiny_experiment(root / "run", n_trials=1), echo=lambda line: None)
    return root


@pytest.fixture
def study_copy(made_study, world) -> Path:
    shutil.copytree(made_study / "run", world / "run")
    return world / "run" / "search.db"


def _rewrite(db: Path, **attrs) -> None:
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    for key, value in attrs.items():
        study.set_user_attr(key, value)


def _stored(db: Path, key: str):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").user_attrs[key]


STUDY_COMMANDS = {
    "worker": ["worker", "--storage", "sqlite:///run/search.db", "--study", "tiny", "--n-trials", "2"],
    "export": ["export", "--storage", "sqlite:///run/search.db", "--study", "tiny", "--trial", "0", "--out", "t.pt"],
    "confirm": ["confirm", "--storage", "sqlite:///run/search.db", "--study", "tiny", "--seeds", "1", "--top", "1"],
}


@pytest.mark.parametrize("command", sorted(STUDY_COMMANDS))
def test_a_study_whose_model_runs_a_command_runs_nothing(command, study_copy, world, capfd):
    experiment = _stored(study_copy, "experiment")
    evil = {"name": "subprocess:run", "args": {"args": "touch pwned", "shell": True}}
    _rewrite(study_copy, experiment={**experiment, "model": evil, "search": {**experiment["search"], "model": evil["name"]}},
             model="subprocess:run", model_args=evil["args"])
    refused(capfd, STUDY_COMMANDS[command], "study 'tiny'", "'subprocess:run'", "--trust")
    nothing_fetched(world)
    assert not (world / "t.pt").exists()


@pytest.mark.parametrize(("attrs", "says"), [
    ({"artifacts": "{world}/elsewhere"}, "not a folder named 'artifacts'"),
    ({"artifacts": "{world}/run/../../artifacts"}, "goes through '..'"),
    ({"parent": "{world}/run/../../etc/passwd.pt"}, "goes through '..'"),
    ({"parent": "/etc/passwd"}, "not a .pt weights file"),
    ({"model_args": ["base_width", 8]}, "its stored model_args is not a mapping"),
    ({"input_shape": [1, 3, "x", 64]}, "input_shape"),
])
def test_a_studys_paths_and_settings_are_checked(attrs, says, study_copy, world, capfd):
    _rewrite(study_copy, **_filled(attrs, world))
    refused(capfd, STUDY_COMMANDS["export"], "study 'tiny'", says)
    assert not (world / "elsewhere").exists() and not (world / "t.pt").exists()


def test_a_study_whose_run_folder_leaves_the_working_folder_is_refused(study_copy, world, capfd):
    experiment = _stored(study_copy, "experiment")
    _rewrite(study_copy, experiment={**experiment, "run_dir": "runs/../../outside"})
    refused(capfd, STUDY_COMMANDS["confirm"], "study 'tiny'", "run folder", "goes through '..'")
    assert not (world.parent / "outside").exists()


def test_the_users_own_study_exports_without_trust(study_copy, world, capfd):
    assert main(STUDY_COMMANDS["export"]) == 0, capfd.readouterr().err
    assert compressor.load_model(world / "t.pt")(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_a_study_made_with_more_threads_than_here_is_joined_with_fewer(study_copy, world, capfd):
    # a study made on a large machine stores its thread count; here it is out of bounds, --threads replaces it
    experiment = _stored(study_copy, "experiment")
    _rewrite(study_copy, experiment={**experiment, "train": {**experiment["train"], "threads": 100_000}})
    argv = ["worker", "--storage", "sqlite:///run/search.db", "--study", "tiny", "--n-trials", "1"]
    refused(capfd, argv, "study 'tiny'", "train.threads", "100000")
    assert main([*argv, "--threads", "1"]) == 0, capfd.readouterr().err
    assert "nothing to run" in capfd.readouterr().out


# -- what the adversarial review of these fixes found ---------------------------------------------

def test_weights_off_is_the_librarys_own_off_value(tmp_path):
    # smp reads encoder_weights=False as "load" (weights is not None): a file's False becomes None
    if third_party.missing_reason(SMP):
        pytest.skip(third_party.missing_reason(SMP))
    import segmentation_models_pytorch as smp

    source = policy.DataSource("f.pt")
    args = policy.checked_args(f"{SMP}:Unet", smp.Unet, {"encoder_name": "resnet18", "encoder_weights": False,
                                                         "aux_params": {"classes": 2, "pretrained": False}},
                               registered=False, source=source)
    assert args["encoder_weights"] is None and args["aux_params"]["pretrained"] is False


@pytest.mark.parametrize(("base", "args", "says"), [
    # a default that names a file the class reads (MONAI's CellSamWrapper reads a SAM checkpoint)
    ("monai.networks.nets.cell_sam_wrapper:CellSamWrapper", {}, "reads 'sam_vit_b_01ec64.pth' by default"),
    # tensors placed on the meta device would leave the network without weights
    ("monai.networks.nets:UNet", {"spatial_dims": 2, "in_channels": 3, "out_channels": 2, "channels": [4, 8],
                                  "strides": [2], "act": ["prelu", {"device": "meta"}]}, "key device"),
    # a module of a trusted package that is not where its networks live (timm's data readers print on import)
    ("timm.data.readers.reader_hfds:ReaderHfds", {}, "neither a registered model"),
])
def test_what_the_review_found_is_refused_in_one_line(base, args, says, tmp_path, capfd):
    if third_party.missing_reason(base.split(".")[0]):
        pytest.skip(third_party.missing_reason(base.split(".")[0]))
    craft(tmp_path / "f.pt", base, args)
    line = refused(capfd, ["deploy", str(tmp_path / "f.pt"), "--out", str(tmp_path / "o.onnx")], says)
    assert "f.pt" in line


def test_a_model_file_with_a_meta_tensor_is_one_line(tmp_path, capfd):
    path = compressor.save_model(tmp_path / "good.pt", compressor.unet(base_width=4))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.weight"] = torch.empty(2, 4, 1, 1, device="meta")
    torch.save(payload, path)
    refused(capfd, ["deploy", str(path), "--out", str(tmp_path / "o.onnx")], "its state_dict is not")


def test_a_study_does_not_make_its_artifacts_folder_on_export(study_copy, world, capfd):
    elsewhere = world / "victim" / "deep" / "artifacts"
    _rewrite(study_copy, artifacts=str(elsewhere))
    assert main(STUDY_COMMANDS["export"]) == 2  # no weights there: one line, and nothing made
    assert "has no kept weights" in capfd.readouterr().err
    assert not (world / "victim").exists()


def test_an_inheriting_study_without_a_parent_trains_nothing_in_a_worker(study_copy, world, capfd):
    experiment = _stored(study_copy, "experiment")
    run_dir = world / "victim3"
    _rewrite(study_copy, init="inherit", parent="",
             experiment={**experiment, "run_dir": str(run_dir), "search": {**experiment["search"], "init": "inherit"}})
    refused(capfd, STUDY_COMMANDS["worker"], "study 'tiny'")
    assert not run_dir.exists()


@pytest.mark.parametrize(("latency", "says"), [
    ({"bogus": 1}, "cost.latency is not valid"),
    ({"threads": "x"}, "latency.threads"),
    ({"batch": 4096, "input_size": 16384}, "pixels an input may have"),
])
def test_a_studys_latency_section_is_checked_before_report_int8_times_anything(latency, says, study_copy, world, capfd):
    experiment = _stored(study_copy, "experiment")
    _rewrite(study_copy, experiment={**experiment, "cost": {**experiment["cost"], "latency": latency}})
    refused(capfd, ["report", "--storage", "sqlite:///run/search.db", "--study", "tiny", "--int8", "--out", "r"], says)


def test_tensors_made_by_any_op_count_against_the_budget(tmp_path):
    # torchvision's Swin makes its relative-position index with arange, meshgrid and a broadcast
    # subtraction: 2 x window**4 int64 values a block, from a 1.6 KB file of allowlisted arguments
    path = craft(tmp_path / "swin.pt", "torchvision.models.swin_transformer:SwinTransformer",
                 {"patch_size": [4, 4], "embed_dim": 8, "depths": [2], "num_heads": [1], "window_size": [64, 64],
                  "num_classes": 2})
    with pytest.raises(UntrustedModelError, match="asks for more than 0.2 GiB of tensors while it is built"):
        compressor.load_model(path)


def test_a_files_transform_steps_run_under_a_budget_too(tmp_path, monkeypatch):
    # a step's parameters may ask for a network far larger than its base: a separable convolution of
    # depth multiplier 20000 on a 4-wide U-Net, or a pruning of 65536 steps without a time limit
    monkeypatch.setattr(policy, "STEPS_BYTES", 64 << 20)
    wide = craft(tmp_path / "wide.pt", "unet", {"base_width": 4, "depth": 2}, input_shape=None)
    payload = torch.load(wide, weights_only=True)
    payload["origin"].update(steps=[{"name": "separable", "depth_multiplier": 20000}], input_shape=[1, 3, 32, 32])
    torch.save(payload, wide)
    with pytest.raises(UntrustedModelError, match="transform steps asks for more than 0.1 GiB"):
        compressor.load_model(wide)
    monkeypatch.setattr(policy, "STEPS_SECONDS", 2.0)
    slow = tmp_path / "slow.pt"
    payload["origin"].update(steps=[{"name": "prune", "ratio": 0.5, "steps": 65536, "time_limit": 0}])
    torch.save(payload, slow)
    started = time.perf_counter()
    with pytest.raises(UntrustedModelError, match="transform steps took more than 2 s"):
        compressor.load_model(slow)
    assert time.perf_counter() - started < 30


def test_a_list_shared_many_times_in_the_pickle_is_counted_as_often(tmp_path, capfd):
    # pickle stores a repeated object once: 64**4 values in a 2 KB file; counted without copying, and
    # the message stays one short line
    nested = 7
    for _ in range(4):
        nested = [nested] * 64
    craft(tmp_path / "nest.pt", "unet", {"base_width": nested})
    assert (tmp_path / "nest.pt").stat().st_size < 10_000
    started = time.perf_counter()
    line = refused(capfd, ["deploy", str(tmp_path / "nest.pt"), "--out", str(tmp_path / "o.onnx")],
                   "a damaged model file (its architecture holds more than 65,536 values)")
    assert len(line) < 400 and time.perf_counter() - started < 10


def test_a_searchs_own_confirmation_trusts_only_the_experiment_it_was_given(made_study):
    # a search confirms its front with the network of the experiment this process was given (the
    # user's own code, trusted as their Python is); a study storing another network is data
    from compressor.candidates.setup import prepare
    from compressor.search import _made_from
    from compressor.study import load_study

    study = load_study(f"sqlite:///{made_study / 'run' / 'search.db'}", "tiny")
    assert _made_from(prepare(tiny_experiment(made_study / "run", n_trials=1), echo=lambda line: None), study)
    other = tiny_experiment(made_study / "run", ("model.args.base_width=4",), n_trials=1)
    assert not _made_from(prepare(other, echo=lambda line: None), study)


def _rewrite_recipe(db: Path, recipe: list) -> None:
    """A finished trial's stored recipe changed in the storage itself (Optuna updates only running trials)."""
    import json
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        assert connection.execute("update trial_user_attributes set value_json=? where key='recipe'",
                                  (json.dumps(recipe),)).rowcount >= 1


def test_a_studys_recipe_is_built_under_a_files_budget(study_copy, world, capfd, monkeypatch):
    # export rebuilds a stored trial's recipe: a separable convolution of depth multiplier 400000 asked for
    # 5 GB here and ended in a traceback, a pruning of a million steps without a time limit never ended
    monkeypatch.setattr(policy, "STEPS_BYTES", 64 << 20)
    _rewrite_recipe(study_copy, [{"name": "separable", "depth_multiplier": 400000}])
    refused(capfd, [*STUDY_COMMANDS["export"], "--untrained"], "study 'tiny'", "transform steps asks for more than 0.1 GiB")
    monkeypatch.setattr(policy, "STEPS_SECONDS", 2.0)
    _rewrite_recipe(study_copy, [{"name": "prune", "ratio": 0.9, "steps": 1000000, "time_limit": 0}])
    started = time.perf_counter()
    refused(capfd, [*STUDY_COMMANDS["export"], "--untrained"], "study 'tiny'", "transform steps took more than 2 s")
    assert time.perf_counter() - started < 60 and not Path("t.pt").exists()


@pytest.mark.parametrize(("section", "key", "value"), [
    ("data", "patch_size", 8192), ("cost", "input_size", 9000), ("finetune", "calibrate", 1000000),
    ("train", "eval_window", 10000)])
def test_a_studys_sizes_are_bounded(section, key, value, study_copy, world, capfd):
    # each makes a worker or a confirmation allocate without end: candidates costed at 9000x9000, a million
    # calibration batches stacked
    experiment = _stored(study_copy, "experiment")
    _rewrite(study_copy, experiment={**experiment, section: {**(experiment.get(section) or {}), key: value}})
    refused(capfd, STUDY_COMMANDS["worker"], f"study 'tiny': its {section}.{key} {value} is more than the")


def test_one_op_that_would_make_a_huge_tensor_is_refused_before_it_allocates(tmp_path):
    # a 1x1 convolution to 16000 channels at 512x512: 16.8 GB in one output, from a 1.5 KB file; the budget
    # used to count it only once it was allocated (and written)
    from compressor.models.construction import construction_budget
    from compressor.models.policy import DataSource

    conv, image = nn.Conv2d(4, 16000, 1), torch.zeros(1, 4, 512, 512)
    started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UntrustedModelError, match="asks for more than 1.0 GiB of tensors"):
        with construction_budget("t", DataSource("t.pt"), max_bytes=1 << 30):
            conv(image)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - started < 200_000  # KiB: nothing near 16 GB taken
    with construction_budget("t", DataSource("t.pt"), max_bytes=1 << 30):  # the ops whose size is worked out
        row, column = torch.zeros(1, 20000), torch.zeros(20000, 1)
        with pytest.raises(UntrustedModelError, match="asks for more than 1.0 GiB"):
            row + column  # noqa: B018 - 1.6 GB from two 80 kB tensors
        assert torch.cat([row, row]).shape == (2, 20000) and (row * 2).shape == (1, 20000)


@pytest.mark.parametrize("where", ["input_shape", "include", "output", "weights"])
def test_a_list_shared_so_that_it_holds_2_to_the_60_values_is_refused_at_once(where, tmp_path, capfd):
    shared: list = ["x"]
    for _ in range(60):
        shared = [shared, shared]
    origin = {"base": "unet", "args": {"base_width": 4}, "steps": [], "input_shape": None}
    fields = {}
    if where == "input_shape":
        origin["input_shape"] = [1, 3, shared]
    elif where == "include":
        origin.update(steps=[{"name": "fire", "include": shared}], input_shape=[1, 3, 32, 32])
    elif where == "output":
        fields["output"] = shared
    else:
        origin["args"] = {"base_width": 4, "weights": shared}
    path = tmp_path / f"{where}.pt"
    torch.save({"format": "compressor.model/2", "origin": origin, "output": None, "state_dict": {}, **fields}, path)
    started = time.perf_counter()
    line = refused(capfd, ["cost", str(path)], f"{path}: a damaged model file (its architecture is nested deeper "
                                               "than 16 levels)")
    assert len(line) < 300 and time.perf_counter() - started < 10


def test_a_steps_patterns_and_integers_are_bounded_and_odd_tensors_refused(tmp_path, capfd):
    wide = craft(tmp_path / "many.pt", "unet", {"base_width": 4, "depth": 2})
    payload = torch.load(wide, weights_only=True)
    payload["origin"].update(steps=[{"name": "fire", "include": [f"p{index}" for index in range(5000)] + ["*"]}],
                             input_shape=[1, 3, 32, 32])
    torch.save(payload, wide)
    refused(capfd, ["cost", str(wide)], f"{wide}: fire: include has 5,001 patterns, more than 4,096")
    payload["origin"].update(steps=[{"name": "separable", "depth_multiplier": 10**30}])
    torch.save(payload, wide)
    refused(capfd, ["cost", str(wide)], f"{wide}: ", "depth_multiplier: 1000000000000000000000000000000 is out of range")
    state = compressor.unet(base_width=4, depth=2).state_dict()
    first = next(iter(state))
    for kind, tensor in (("sparse", state[first].to_sparse()),
                         ("nested", torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]))):
        odd = craft(tmp_path / f"{kind}.pt", "unet", {"base_width": 4, "depth": 2}, state={**state, first: tensor})
        refused(capfd, ["cost", str(odd)], f"a damaged model file (its weight '{first}' is a {kind} tensor, not a dense one)")


def test_a_trial_enqueued_with_a_value_outside_the_space_is_not_built(study_copy, world, capfd):
    # anyone who can write a study's storage can enqueue a trial; Optuna takes its fixed values even out of
    # range (with a warning), and a worker's own draws are built without a file's budget
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_copy}")
    name, distribution = next((name, distribution) for name, distribution in study.trials[0].distributions.items()
                              if isinstance(distribution, (optuna.distributions.FloatDistribution,
                                                           optuna.distributions.IntDistribution)))
    value = type(distribution.high)(distribution.high * 1000 + 1)
    study.enqueue_trial({**study.trials[0].params, name: value}, skip_if_exists=False)
    main(["worker", "--storage", "sqlite:///run/search.db", "--study", "tiny", "--n-trials", "2"])
    capfd.readouterr()
    last = next(trial for trial in optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_copy}").trials
                if trial.params.get(name) == value)
    assert last.state == optuna.trial.TrialState.FAIL, last
    assert last.user_attrs["failure"] == f"parameter {name}={value!r} is outside the space's range; not built"


def test_a_file_whose_network_would_need_too_much_memory_to_run_is_refused_before_it_runs(tmp_path, capfd,
                                                                                          monkeypatch):
    # unet with 65,536 classes: a 1.5 MB file whose one forward pass at 224x224 asks for 13 GB; run first on the
    # meta device at the shape asked for (here with the limit lowered to 64 MiB, for 512 classes)
    from compressor.models import construction

    monkeypatch.setattr(construction, "RUN_BYTES", 64 << 20)
    args = {"base_width": 4, "depth": 2, "num_classes": 512}
    path = craft(tmp_path / "classes.pt", "unet", args, state=build_model("unet", args).state_dict())
    refused(capfd, ["cost", str(path)], f"{path}: its network at input (1, 3, 224, 224) asks for more than 0.1 GiB of "
                                        "tensors while it runs")
    refused(capfd, ["deploy", str(path), "--out", str(tmp_path / "c.onnx")],
            "its network at input (2, 3, 384, 384) asks for more than 0.1 GiB")
    assert not (tmp_path / "c.onnx").exists()
    trusted = cli_in_process(capfd, "cost", str(path), "--trust")  # trusted: it runs, as any network of your own
    assert trusted.returncode == 0 and "activation memory" in trusted.stdout
    assert compressor.measure(compressor.load_model(path, trust=True), (1, 3, 32, 32)).params > 0


def test_the_run_check_covers_tied_weights_values_read_in_forward_gradients_and_apply(tmp_path, capfd, monkeypatch):
    from compressor.models import construction

    class Tied(nn.Module):  # one weight under two names: functional_call refuses both names
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Conv2d(3, 512, 1), nn.Conv2d(3, 512, 1)
            self.second.weight = self.first.weight

        def forward(self, x):
            return self.first(x) + self.second(x)

    class ReadsItself(nn.Module):  # a value read in forward: it cannot run on meta
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 512, 1)

        def forward(self, x):
            return self.conv(x) * (2.0 if x.sum().item() > 0 else 1.0)

    class Deep(nn.Module):  # without gradients each output is freed at once; with them all 40 are kept
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(40)])

        def forward(self, x):
            return self.layers(x)

    monkeypatch.setattr(construction, "RUN_BYTES", 64 << 20)
    for network in (Tied(), ReadsItself()):  # 512 x 128 x 128 x 4 bytes: 32 MiB an output
        annotated = annotate(network, construction.UNTRUSTED_FILE, "net.pt")
        with pytest.raises(UntrustedModelError, match="net.pt: its network at input .1, 3, 256, 256. asks for more"):
            construction.check_runs_within(annotated, (1, 3, 256, 256))
        construction.check_runs_within(annotated, (1, 3, 16, 16))  # small enough: nothing said
    deep = annotate(Deep(), construction.UNTRUSTED_FILE, "deep.pt")
    construction.check_runs_within(deep, (2, 64, 64, 64))  # 2 MiB an output: 4 MiB at once without gradients
    with pytest.raises(UntrustedModelError, match="deep.pt: its network at input .2, 64, 64, 64. asks for more"):
        construction.check_runs_within(deep, (2, 64, 64, 64), training=True)  # 40 outputs kept: 80 MiB
    with pytest.raises(UntrustedModelError, match="net.pt: its network at input .1, 3, 256, 256."):
        compressor.apply(annotate(Tied(), construction.UNTRUSTED_FILE, "net.pt"), "fire",
                         (1, 3, 256, 256))


def test_a_steps_long_pattern_and_a_files_long_strings_are_refused_short(tmp_path, capfd):
    wide = craft(tmp_path / "long.pt", "unet", {"base_width": 4, "depth": 2})
    payload = torch.load(wide, weights_only=True)
    payload["origin"].update(steps=[{"name": "fire", "include": ["*" * 300]}], input_shape=[1, 3, 32, 32])
    torch.save(payload, wide)
    refused(capfd, ["cost", str(wide)], f"{wide}: fire: include has a pattern of 300 characters, more than 256")
    payload["origin"].update(steps=[{"name": "fire", "include": ["x" * 100_000]}])
    torch.save(payload, wide)
    line = refused(capfd, ["cost", str(wide)], f"{wide}: a damaged model file (its architecture holds a string of "
                                               "100,000 characters (at most 1,024))")
    assert len(line) < 400
