"""Which epochs the NTK is measured at: every N epochs, or spaced so that tracking stays within
a fraction of the training wall time; always the first and the last epoch."""

from __future__ import annotations

import math

from ntklab.train import TrainState


class TrackingSchedule:
    """`every` N epochs (0: never), always epoch 0, the last epoch and a stopped run's last.

    With a `budget` b ∈ (0, 1) an epoch that `every` allows is measured only if, counting what
    the last measured epoch cost, the time spent measuring stays within b of the training
    time so far: tracking_s + c ≤ b · (elapsed + c). Cheap kernels are then measured every
    epoch, dear ones as often as the budget allows, and the spacing follows the cost as it
    changes. The fixed first and last epochs can take the realised fraction over b in runs too
    short to amortise them. The epochs chosen depend on timing, so two runs may measure
    different epochs (their values at a shared epoch agree)."""

    def __init__(self, every: int, budget: float | None = None) -> None:
        self.every = int(every)
        self.budget = None if budget is None else float(budget)
        self.cost = 0.0  # seconds the last measured epoch's tracking took
        self._mark = math.nan  # state.tracking_s when that epoch began

    @property
    def active(self) -> bool:
        return self.every > 0

    def due(self, state: TrainState) -> bool:
        """Whether epoch `state.epoch` is measured; call it once per epoch, before measuring."""
        if not self.active:
            return False
        if not math.isnan(self._mark):  # the last measured epoch has been counted in full
            self.cost, self._mark = state.tracking_s - self._mark, math.nan
        fixed = state.epoch == 0 or state.epoch == state.epochs or state.stop is not None
        due = fixed or (state.epoch % self.every == 0 and self._affordable(state))
        if due:
            self._mark = state.tracking_s
        return due

    def _affordable(self, state: TrainState) -> bool:
        if self.budget is None:
            return True
        return state.tracking_s + self.cost <= self.budget * (state.elapsed() + self.cost)

    @staticmethod
    def fraction(state: TrainState) -> float:
        """The realised fraction: time spent measuring over the training time so far."""
        elapsed = state.elapsed()
        return state.tracking_s / elapsed if elapsed > 0 else 0.0
