"""Which epochs the NTK is measured at: `ntk.every` as before, and a time budget that spaces the
measured epochs so tracking stays within its fraction of the wall time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ntklab.budget import TrackingSchedule
from ntklab.experiment import run_experiment

from conftest import compose_config, read_metrics


@dataclass
class Clock:
    """The parts of a TrainState the schedule reads, on a simulated clock: each epoch trains
    for `train` seconds, and each measured epoch adds `track` seconds of tracking."""

    epochs: int
    train: float
    track: float
    epoch: int = 0
    stop: object = None
    tracking_s: float = 0.0
    time: float = 0.0

    def elapsed(self) -> float:
        return self.time

    def run(self, schedule: TrackingSchedule) -> list[int]:
        measured = []
        for epoch in range(self.epochs + 1):
            self.epoch = epoch
            self.time += self.train if epoch else 0.0
            if schedule.due(self):
                measured.append(epoch)
                self.tracking_s += self.track
                self.time += self.track
        return measured


@pytest.mark.parametrize("every", [1, 3, 7])
def test_without_a_budget_every_n_epochs_and_the_last(every: int) -> None:
    measured = Clock(epochs=20, train=1.0, track=5.0).run(TrackingSchedule(every))
    assert measured == sorted({*range(0, 21, every), 20})
    assert Clock(epochs=5, train=1.0, track=1.0).run(TrackingSchedule(0)) == []


@pytest.mark.parametrize("track", [0.1, 1.0, 4.0])
def test_a_budget_holds_tracking_to_its_fraction(track: float) -> None:
    """Tracking that costs 0.1, 1 or 4 training epochs' time, with a budget of 0.2: cheap
    tracking is done every epoch; dear tracking as often as the budget allows."""
    clock = Clock(epochs=400, train=1.0, track=track)
    measured = clock.run(TrackingSchedule(1, budget=0.2))
    assert measured[0] == 0 and measured[-1] == 400
    fraction = clock.tracking_s / clock.time
    assert fraction <= 0.2 + track / clock.time  # the fixed last epoch may add one measurement
    if track * 1.0 / (track + 1.0) <= 0.2:  # every epoch fits the budget
        assert len(measured) == 401
    else:  # spaced to use most of the budget
        assert fraction >= 0.15 and len(measured) < 401


def test_a_budget_follows_a_cost_that_grows() -> None:
    """When tracking becomes dearer mid-run, the measured epochs thin out."""
    clock, schedule = Clock(epochs=200, train=1.0, track=0.1), TrackingSchedule(1, budget=0.2)
    measured = []
    for epoch in range(201):
        clock.epoch = epoch
        clock.time += 1.0 if epoch else 0.0
        clock.track = 0.1 if epoch < 100 else 3.0
        if schedule.due(clock):
            measured.append(epoch)
            clock.tracking_s += clock.track
            clock.time += clock.track
    early = sum(1 for e in measured if e < 100)
    late = sum(1 for e in measured if e >= 100)
    assert early == 100 and late < 30


@pytest.mark.slow
def test_a_run_with_a_budget_logs_the_realised_fraction(tmp_path) -> None:
    cfg = compose_config("data.n=24", "data.d=5", "model.width=32", "epochs=30", "ntk.budget=0.2")
    summary = run_experiment(cfg, tmp_path, progress=False)
    assert summary["status"] == "completed"
    records = read_metrics(tmp_path)
    measured = [r for r in records if "ntk/lambda_min" in r]
    assert measured[0]["step"] == 0 and measured[-1]["step"] == 30
    fractions = [r["ntk/tracking_fraction"] for r in measured]
    assert all(0 < f < 1 for f in fractions[1:])
    assert all("ntk/tracking_fraction" not in r for r in records if "ntk/lambda_min" not in r)
