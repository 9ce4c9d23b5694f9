"""``compressor compress``: a trained network + a recipe + an experiment -> a smaller network that kept what it learned."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from compressor.bounds import NON_NEGATIVE, STEPS, output_argument
from compressor.cli.common import add_builder_arguments, names_a_file
from compressor.cli.experiment_args import add_experiment_arguments, experiment_from_args
from compressor.cli.recipe_args import add_recipe_arguments, recipe_from_args, record_notes, records_table
from compressor.compression import compress, finetuned
from compressor.errors import ConfigError
from compressor.experiment import BASELINE_MODELS, Experiment, ModelConfig, ensure_parent
from compressor.io import check_writable
from compressor.models import build_model, parse_model_args
from compressor.origin import origin_of
from compressor.outputs import declare_output, parse_output_key
from compressor.saving import load_hint, load_saved, save_model
from compressor.tensor_files import read_tensor_file
from compressor.train import load_weights
from compressor.transforms.reconstruct import METHODS

COMMAND = {"name": "compress", "help": "compress a trained network: transform it keeping its weights, fine-tune with distillation",
           "description": "Apply a recipe to a trained network with weight inheritance (and calibration if "
                          "the experiment's finetune.calibrate asks), fine-tune the result on the "
                          "experiment's data distilling from the original, evaluate both on the same "
                          "validation pixels, and save the result."}


LEARNED_NOTHING = 3
"""The exit status of a compression whose student ends at or below the floor (it is saved, and said)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL",
        help="a model file saved by compressor (compressor train, apply, export), or 'unet', 'micronet', "
        "'package.module:callable' with --checkpoint (a registered model without it: the experiment's stored baseline)",
    )
    add_experiment_arguments(parser)
    parser.add_argument("--checkpoint", metavar="FILE", help="trained weights for MODEL (a state_dict or a compressor checkpoint)")
    add_builder_arguments(parser)
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=_steps, metavar="N",
                        help="fine-tuning steps, or auto: until validation stops improving, at most train.max_steps "
                             "(default: finetune.steps, else train.steps)")
    parser.add_argument("--no-distill", action="store_true", help="fine-tune without distilling from the original")
    parser.add_argument("--reconstruct", choices=METHODS, metavar="METHOD",
                        help="before fine-tuning, train what the recipe changed to give the original's tensors there: "
                             "hints (the whole network, the default), block, layer, lstsq (closed form, layer after layer) or none "
                             "(default: finetune.reconstruct)")
    parser.add_argument("--feature-weight", type=NON_NEGATIVE.argument("--feature-weight"), metavar="W",
                        help="feature distillation while fine-tuning: weight of the error at the changed blocks "
                             "(default: finetune.feature_weight, 0)")
    parser.add_argument("--compare-scratch", action="store_true",
                        help="also train the compressed architecture from random weights for as many steps, and compare")
    parser.add_argument("--out", type=output_argument("--out"), metavar="PATH", help="where to save the result (default: <run_dir>/compress/<model>-<recipe hash>.pt)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists (refused by default)")
    parser.add_argument("--trust", action="store_true",
                        help="also load a MODEL file that runs code when loaded (a pickled module, compressor's old "
                        "format, or a network built by an arbitrary function); only for a file you trust")


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args.recipe, args.transform)
    experiment = finetuned(experiment_from_args(args), args.steps, reconstruct=args.reconstruct,
                           feature_weight=args.feature_weight)
    out = Path(args.out) if args.out else experiment.run_path / "compress" / f"{model_name(args)}-{recipe.hash()[:8]}.pt"
    check_writable(out)  # before the teacher is loaded (perhaps trained) and fine-tuned, not after
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists: give --overwrite to replace it, or --out another file; nothing was compressed")
    model, label = teacher_from_args(args, experiment)
    # A trusted pickle from before model files held their architecture: its result can only be a pickle too.
    as_pickle = origin_of(model) is None
    # an interrupted fine-tuning (to its plateau: hours) goes on from its last evaluation when run again; the
    # state's key holds the student's starting weights and the teacher's, so another teacher starts afresh
    resume = out.with_name(f"{out.name}.state")
    result = compress(model, recipe, experiment, distill=not args.no_distill, cache_dir=args.cache_dir,
                      compare_scratch=args.compare_scratch, resume=resume)
    save_model(
        out, result.student, recipe=recipe, base=label, input_shape=result.student_cost.input_shape,
        metadata={"teacher": label, **result.to_dict()}, pickle=as_pickle,
    )
    status = 0 if result.learned else LEARNED_NOTHING
    if args.json:
        print(json.dumps({"model": label, "recipe": recipe.to_data(), "out": str(out), **result.to_dict()}, indent=2))
        return status
    print(records_table(label, result.example_shape, result.records))
    for line in record_notes(result.records):
        print(line)
    print()
    print(result.table(f"teacher ({label})"))
    for line in result.knowledge_lines():
        print(line)
    print(f"saved to {out} ({load_hint(out)})")
    if as_pickle:
        print(f"  {label} holds no architecture as data (an older pickle), so {out} is a pickle too")
    return status


def model_name(args: argparse.Namespace) -> str:
    """A file-name-safe name of the whole model MODEL names: the builder and its arguments, or the
    file's own name (``train``'s ``model.pt`` by its folder's, which names the model)."""
    path = Path(args.model)
    if names_a_file(args.model):
        named = path.parent.name if path.stem == "model" and path.parent.name else path.stem
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", named)
    return ModelConfig(name=args.model, args=parse_model_args(args.model_arg),
                       output=parse_output_key(args.model_output)).full_label


def teacher_from_args(args: argparse.Namespace, experiment: Experiment) -> tuple[object, str]:
    """The trained network MODEL names, and a label for it."""
    path = Path(args.model)
    if names_a_file(args.model):
        if args.checkpoint or args.model_arg:
            raise ConfigError(f"{args.model} is a model file: it carries its weights and arguments; "
                              "drop --checkpoint and --model-arg")
        try:
            model = load_saved(path, trust=args.trust).model
            if args.model_output is not None:
                declare_output(model, parse_output_key(args.model_output))
            return model, str(path)
        except ConfigError as error:
            if _is_weights_file(path):
                raise ConfigError(
                    f"{path} holds weights only, not a network: name the network and give the file as its weights, "
                    f"e.g. compressor compress unet CONFIG.yaml --checkpoint {path}"
                ) from None
            raise error from None
    model_args = parse_model_args(args.model_arg)
    if args.checkpoint:
        model = declare_output(build_model(args.model, model_args), parse_output_key(args.model_output))
        load_weights(args.checkpoint, model)
        return model, args.model
    if args.model in BASELINE_MODELS and not model_args:
        parent = ensure_parent(experiment, ModelConfig(name=args.model), cache_dir=args.cache_dir)
        return parent.model, args.model
    raise ConfigError(
        f"MODEL {args.model!r} would be built with random weights: give --checkpoint FILE with its trained weights, "
        "or a model file"
    )


def _is_weights_file(path: Path) -> bool:
    """True for a ``state_dict`` or a compressor checkpoint (read weights-only, nothing runs)."""
    try:
        payload = read_tensor_file(path, what="weights file")
    except ConfigError:  # not a weights file, whatever it is
        return False
    if not isinstance(payload, dict) or str(payload.get("format", "")).startswith("compressor.model/"):
        return False  # a model file, refused for what it is
    return isinstance(payload, dict) and ("state_dict" in payload or all(
        isinstance(value, torch.Tensor) for value in payload.values()))


def _steps(text: str) -> int | str:
    """``--steps``: a number of steps or ``auto``."""
    return "auto" if text.strip().lower() == "auto" else STEPS.parse(text, "--steps")


_steps.__name__ = "--steps"
