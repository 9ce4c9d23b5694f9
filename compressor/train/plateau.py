"""Training to convergence (``train.steps: auto``): early stopping on the validation score, the best weights kept.

:class:`Plateau` watches the validation score at each evaluation. A rise of more than
``min_delta`` over the best so far is a gain: the weights are copied (to the CPU) as the
best. Without a gain for ``lr_patience`` evaluations (half of ``patience`` unless set), the
``plateau`` schedule lowers the learning rate to 0.3x (again after each further ``lr_patience``);
after ``patience`` evaluations without a gain, training stops and the best weights are put back.
With the default and an even patience, a run stops one drop after its last gain, so the rate it
ends at may be the rate a fine-tuning of it starts at; ``lr_patience`` at a third of ``patience``
or less drops the rate twice before the run stops, so it ends at 0.09x or below.

A run that has scored nothing yet (every evaluation at or below ``min_delta``) is not on a
plateau: for up to ``2 * patience`` such evaluations (:data:`GRACE`) they neither count towards the
patience nor lower the rate, and the latest weights are the ones kept, so a network slow to start
(a building IoU of 0 for its first few hundred steps) trains on instead of being declared
converged at nothing; one that never scores still stops, after three times the patience. This
reads a score of 0 as nothing: right for a foreground IoU, not for a metric a constant prediction
scores above 0 on (mIoU), where the grace does not apply.

A noisy validation curve (a small validation region: the road tile's U-Net scored 0.22, 0.00, 0.20,
0.24, 0.23, 0.34, 0.26, 0.24, 0.24, 0.31 at successive evaluations while still learning) makes
"no gain" come by chance: two unlucky evaluations lowered its rate and five stopped it at 1300
steps, 14 points short of what 900 more steps gave a network compressed from it. With
``smoothing`` k > 1 the rule reads the mean of the last k evaluations instead of each one (gains,
the rate's drops and the stop), and the weights kept are those at the best mean, not at the best
single evaluation: on the same road tile the best single evaluation was the third (0.32, at step
300, a lucky draw the next eight did not reach while the mean rose from 0.11 to 0.29), and keeping
it would have handed on a network of 300 steps as the converged one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Plateau", "LR_DROP"]

#: what the ``plateau`` schedule multiplies the learning rate by at each drop
LR_DROP = 0.3
#: evaluations, in patiences, that a run which has scored nothing yet is given before they count
GRACE = 2


@dataclass
class Plateau:
    """The early-stopping state of one run.

    Example:
        >>> plateau = Plateau(patience=4, min_delta=0.01, lower_rate=True)
        >>> [plateau.update(step, score) for step, score in [(1, 0.5), (2, 0.505), (3, 0.52), (4, 0.51), (5, 0.5)]]
        [True, False, True, False, False]
        >>> plateau.best_step, plateau.bad, plateau.lr_scale, plateau.converged
        (3, 2, 0.3, False)
        >>> plateau.update(6, 0.5), plateau.update(7, 0.5), plateau.converged
        (False, False, True)

        A noisy curve that still rises: each evaluation on its own has two without a gain, the
        mean of the last two has none, and the weights kept are the latest (at the best mean):

        >>> noisy = [(1, 0.2), (2, 0.4), (3, 0.3), (4, 0.45), (5, 0.4)]
        >>> raw = Plateau(patience=2, min_delta=0.01, lower_rate=False)
        >>> [raw.update(step, score) for step, score in noisy]
        [True, True, False, True, False]
        >>> smooth = Plateau(patience=2, min_delta=0.01, lower_rate=False, smoothing=2)
        >>> [smooth.update(step, score) for step, score in noisy]
        [True, True, True, True, True]
        >>> round(smooth.best_score, 3), smooth.best_step
        (0.425, 5)
    """

    patience: int
    min_delta: float
    lower_rate: bool
    best_score: float = -math.inf
    best_step: int | None = None
    bad: int = 0
    lr_scale: float = 1.0
    idle: int = 0
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    smoothing: int = 1
    recent: deque[float] = field(default_factory=deque, repr=False)
    lr_patience: int | None = None

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=max(1, self.smoothing))

    @property
    def drop_every(self) -> int:
        """Evaluations without a gain between drops of the rate."""
        return self.lr_patience or max(1, self.patience // 2)

    @property
    def converged(self) -> bool:
        """``patience`` evaluations in a row without a gain."""
        return self.bad >= self.patience

    def update(self, step: int, score: float, model: nn.Module | None = None) -> bool:
        """Records the score of the evaluation at ``step``; returns whether it is a gain (then ``model``'s weights are kept)."""
        self.recent.append(0.0 if math.isnan(score) else score)
        score = sum(self.recent) / len(self.recent)  # what the rule reads: the mean of the last `smoothing`
        if score > self.best_score + self.min_delta or self.best_step is None:
            self.best_score, self.best_step, self.bad = score, step, 0
            self._keep(model)
            return True
        if max(self.best_score, score) <= self.min_delta and self.idle < GRACE * self.patience:
            self.idle += 1  # nothing learned yet: no plateau, the rate stays, the latest weights are kept
            self.best_step = step
            self._keep(model)
            return False
        self.bad += 1
        if self.lower_rate and self.bad % self.drop_every == 0:
            self.lr_scale *= LR_DROP
        return False

    def _keep(self, model: nn.Module | None) -> None:
        if model is not None:
            self.best_state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}

    def state(self) -> dict:
        """Everything the rule holds, as tensors and plain data (for :mod:`compressor.train.resume`)."""
        return {"best_score": self.best_score, "best_step": self.best_step, "bad": self.bad, "lr_scale": self.lr_scale,
                "idle": self.idle, "recent": list(self.recent), "best_state": self.best_state}

    def load(self, state: dict) -> None:
        """Takes back what :meth:`state` gave."""
        self.best_score, self.best_step, self.bad = state["best_score"], state["best_step"], state["bad"]
        self.lr_scale, self.idle, self.best_state = state["lr_scale"], state["idle"], state["best_state"]
        self.recent = deque(state["recent"], maxlen=max(1, self.smoothing))

    def restore(self, model: nn.Module) -> None:
        """Puts the best weights back into ``model`` (nothing if none were kept)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
