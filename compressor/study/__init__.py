"""What a study is, defined once: its records, objectives, storage, front and hypervolume.

The search writes studies through this package and the report and confirmation read them
through it; it depends on Optuna and NumPy, never on search, report or training.

- :mod:`~compressor.study.records`: the settings and trial attributes a search stores;
- :mod:`~compressor.study.objectives`: the objectives, their directions and labels;
- :mod:`~compressor.study.storage`: storage URLs (the default, redaction), opening and loading;
- :mod:`~compressor.study.pareto`: dominance and non-dominated ranks;
- :mod:`~compressor.study.front`: the front by this project's rules (floor, duplicates);
- :mod:`~compressor.study.hypervolume`: the hypervolume and a study's reference point;
- :mod:`~compressor.study.snapshot`: a study read once;
- :mod:`~compressor.study.liveness`: a running trial whose process on this host is gone, failed at once.
"""

from __future__ import annotations

from compressor.study.front import folded_duplicates, front, front_ranks, point
from compressor.study.hypervolume import (
    HYPERVOLUME_DECADES,
    HYPERVOLUME_MARGIN,
    hypervolume,
    hypervolume_reference,
    hypervolume_shares,
    log_share,
    study_hypervolume,
)
from compressor.study.objectives import (
    COSTS,
    OBJECTIVES,
    Objective,
    directions,
    objective_label,
    objective_values,
)
from compressor.study.pareto import as_minimization, dominates, nondominated_ranks, pareto_mask
from compressor.study.records import (
    FORMAT,
    STATUSES,
    TIMING_PHASES,
    StudyInfo,
    TrialRecord,
    study_info,
    trial_records,
)
from compressor.study.snapshot import REFERENCE_LABELS, StudySnapshot, base_label, read_study, reference_label
from compressor.study.storage import default_storage_url, load_study, open_storage, redact, sqlite_path

__all__ = [
    "FORMAT", "STATUSES", "TIMING_PHASES", "StudyInfo", "TrialRecord", "study_info", "trial_records",
    "Objective", "OBJECTIVES", "COSTS", "directions", "objective_label", "objective_values",
    "default_storage_url", "load_study", "open_storage", "redact", "sqlite_path",
    "as_minimization", "dominates", "pareto_mask", "nondominated_ranks",
    "front", "front_ranks", "folded_duplicates", "point",
    "hypervolume", "hypervolume_reference", "hypervolume_shares", "study_hypervolume", "log_share", "HYPERVOLUME_MARGIN",
    "HYPERVOLUME_DECADES",
    "StudySnapshot", "read_study", "REFERENCE_LABELS", "reference_label", "base_label",
]
