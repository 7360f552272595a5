"""Divergence: a loss that turns NaN/inf or grows past factor × L_0 stops the run cleanly, with
its epoch and last finite loss in summary.json, exit 0 by default, and a sweep goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator

from ntklab.control import DivergenceGuard
from ntklab.rundir import Status

from conftest import run_cli

SMALL = ["epochs=30", "data.n=16", "model.width=32"]


cli = run_cli


@pytest.fixture
def guard_on(make_state):
    """The guard fed `losses` one epoch at a time, until it stops the run."""

    def feed(losses: list[float], factor: float = 10.0):
        state = make_state(epochs=len(losses) - 1, lr=0.1)
        guard = DivergenceGuard(factor)
        for epoch, loss in enumerate(losses):
            state.epoch, state.loss = epoch, loss
            guard.on_epoch_end(state)
            if state.stop:
                break
        return guard, state

    return feed


@pytest.mark.parametrize(
    "losses, epoch, last",
    [([1.0, 5.0, 10.0, 10.5], 3, (10.0, 2)),  # past factor × L_0
     ([1.0, 0.5, math.nan], 2, (0.5, 1)),
     ([2.0, math.inf], 1, (2.0, 0)),
     ([math.nan], 0, (None, None))],
)  # fmt: skip
def test_guard_stops_at_the_first_bad_loss(guard_on, losses, epoch, last):
    guard, state = guard_on(losses)
    assert state.stop is Status.DIVERGED and state.epoch == epoch
    report = guard.report()
    assert report["epoch"] == epoch
    assert (report["last_finite_loss"], report["last_finite_epoch"]) == last
    assert f"diverged at epoch {epoch}" in state.message and "optim.lr" in state.message


def test_guard_lets_a_good_run_finish_and_round_trips_its_state(guard_on):
    guard, state = guard_on([1.0, 9.0, 3.0, 0.1])
    assert state.stop is None and guard.report() is None
    again = DivergenceGuard(10.0)
    again.load_state_dict(guard.state_dict())
    assert (again.L0, again.last_finite, again.last_finite_epoch) == (1.0, 0.1, 3)


def steps(run_dir: Path, tag: str = "loss/train") -> list[int]:
    acc = event_accumulator.EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, why",
    [(["optim.lr=1000"], "× L_0"),  # grows past the default factor 1e6
     (["optim.lr=1e30", "divergence_factor=inf"], "loss inf")],  # only NaN/inf can stop it
)  # fmt: skip
def test_diverging_run_stops_cleanly(tmp_path, overrides, why):
    done = cli(*SMALL, *overrides, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    div = summary["divergence"]
    assert summary["status"] == "diverged" and summary["epochs_run"] == div["epoch"] < 30
    assert math.isfinite(div["last_finite_loss"]) and div["last_finite_epoch"] == div["epoch"] - 1
    assert why in summary["message"] and "lower optim.lr" in summary["message"]
    assert f"diverged at epoch {div['epoch']}" in done.stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(div["epoch"] + 1))
    assert steps(tmp_path) == list(range(div["epoch"] + 1))  # events flushed, up to the end
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == div["epoch"]


@pytest.mark.slow
def test_divergence_exit_code_is_configurable(tmp_path):
    done = cli(*SMALL, "optim.lr=1000", "divergence_exit_code=3", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 3
    assert "diverged at epoch" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_one_diverged_job_in_a_sweep_lets_the_others_finish(tmp_path):
    done = cli("-m", *SMALL, "optim.lr=0.5,1000,0.1", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    statuses = {}
    for path in sorted(tmp_path.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        statuses[summary["hparams"]["lr"]] = (summary["status"], summary["epochs_run"])
    assert statuses[0.5] == ("completed", 30) and statuses[0.1] == ("completed", 30)
    assert statuses[1000.0][0] == "diverged" and statuses[1000.0][1] < 30


@pytest.mark.slow
def test_divergence_exit_code_in_a_sweep_comes_after_every_job_and_the_report(tmp_path):
    done = cli(
        "-m", *SMALL, "optim.lr=1000,0.5", "divergence_exit_code=3", f"hydra.sweep.dir={tmp_path}"
    )
    assert done.returncode == 3, done.stderr
    assert "1 jobs diverged" in done.stderr and "Traceback" not in done.stderr
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/summary.json"))
    assert statuses == ["completed", "diverged"]
    assert "diverged" in (tmp_path / "report.md").read_text()
