"""What a confirmation's subjects are: how each result is keyed, which are references, which is the
control, and what each is called.

A *subject* is a front trial (``trial-7``), one of the study's references (``base``, the user's own
network; ``unet``; ``micronet``) or the control (``base-finetuned``: the parent fine-tuned as the
candidates are). The reference ratios, differences and claims are against is the study's
``ratio_to``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compressor.references import REFERENCE_MODELS
from compressor.study import StudyInfo, base_label, reference_label

__all__ = [
    "RESULT_PREFIX", "PLAN_KEY", "REFERENCES", "CONTROL", "CONTROL_SUFFIX", "Repeat", "subject_of", "trial_of",
    "result_key", "reference_subjects", "primary_reference", "parent_subject", "study_control", "control_subject",
    "is_control", "subject_label",
]

RESULT_PREFIX = "confirm/"
PLAN_KEY = "confirm_plan"
REFERENCES = REFERENCE_MODELS
"""The project's own reference models (a study's references may also hold ``base``, the user's network)."""
CONTROL_SUFFIX = "-finetuned"
"""In a study whose candidates inherit, the parent fine-tuned exactly as the candidates are
(``unet-finetuned``, ``base-finetuned``): a candidate trains for the parent's steps plus its own, so
the difference to the plain parent mixes the cost of compression with the gain of the extra
training; this control separates them."""
CONTROL = "unet-finetuned"
"""The control of a study whose parent is U-Net."""

Repeat = tuple[int, "int | None"]
"""A seed and a fold (None: the data's single split)."""


def subject_of(trial: int | None = None, reference: str | None = None) -> str:
    """``trial-7`` or ``unet``: how a confirmed model is keyed."""
    return reference if reference is not None else f"trial-{trial}"


def trial_of(subject: str) -> int:
    """The trial number of a subject ``trial-7``."""
    return int(subject.split("-", 1)[1])


def result_key(subject: str, seed: int, fold: int | None) -> str:
    """The study attribute a result is stored under: ``confirm/trial-7/1/-``."""
    return f"{RESULT_PREFIX}{subject}/{seed}/{'-' if fold is None else fold}"


def reference_subjects(info: StudyInfo) -> list[str]:
    """The study's reference models as confirmation subjects, the ratio reference first."""
    names = list(info.references) or list(REFERENCES)
    first = primary_reference(info)
    return sorted(names, key=lambda name: name != first)


def primary_reference(info: StudyInfo) -> str:
    """The reference ratios, differences and claims are against: the study's ``ratio_to`` (U-Net, or
    ``base``: the user's own network), else U-Net."""
    return info.ratio_to or "unet"


def parent_subject(info: StudyInfo) -> str:
    """The subject whose model is the search's base network (the parent candidates inherit from):
    ``base``, or ``unet`` when the search ran on U-Net as its baseline is trained."""
    if info.parent_subject:
        return info.parent_subject
    if "base" in info.references or ((info.experiment or {}).get("search") or {}).get("parent"):
        return "base"
    return info.model if info.model in REFERENCES and info.model in info.references else "base"


def study_control(info: StudyInfo, attrs: Mapping[str, Any]) -> str:
    """The control's subject in this study: the parent's (``base-finetuned``), or ``unet-finetuned``
    where a study stored before the control was named after its parent holds results under it
    (then it was the parent fine-tuned, whatever the parent)."""
    legacy = f"{RESULT_PREFIX}{CONTROL}/"
    if any(key.startswith(legacy) for key in attrs):
        return CONTROL
    return control_subject(parent_subject(info))


def control_subject(parent: str) -> str:
    """``unet-finetuned``, ``base-finetuned``: the parent fine-tuned as the candidates are."""
    return f"{parent}{CONTROL_SUFFIX}"


def is_control(subject: str) -> bool:
    return subject.endswith(CONTROL_SUFFIX)


def subject_label(subject: str, info: StudyInfo) -> str:
    """``trial 7``, ``U-Net``, ``Unet (base)``, ``Unet (base) fine-tuned``."""
    if subject.startswith("trial-"):
        return f"trial {trial_of(subject)}"
    if is_control(subject):  # a study has one control: its parent fine-tuned, whatever the key says
        return f"{_named(parent_subject(info), info)} fine-tuned"
    return _named(subject, info)


def _named(name: str, info: StudyInfo) -> str:
    """A reference's label; the base network's (``unet (base)``) also when it is not a reference of the study."""
    if name == "base" and "base" not in info.references:
        parent = ((info.experiment or {}).get("search") or {}).get("parent")
        return base_label(info.model, trained_file=bool(parent))
    return reference_label(name, info.references)
