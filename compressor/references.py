"""The project's reference networks, named once: the models a search compares its candidates with
when the network it compresses is the project's own (U-Net, the paper's parent, and Micro-Net).

Example:
    >>> REFERENCE_MODELS, REFERENCE_LABELS["micronet"]
    (('unet', 'micronet'), 'Micro-Net')
"""

from __future__ import annotations

__all__ = ["REFERENCE_LABELS", "REFERENCE_MODELS"]

#: each reference model (a registered model name) -> how tables and figures name it
REFERENCE_LABELS = {"unet": "U-Net", "micronet": "Micro-Net"}
#: the reference models, U-Net first (the one ratios are against when it is a reference)
REFERENCE_MODELS = tuple(REFERENCE_LABELS)
