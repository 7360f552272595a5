"""Step-size schedules (their step sequences, resumption) and SGD's sampling orders."""

from __future__ import annotations

import json

import pytest
import torch

from ntklab.optim import (
    SCHEDULES,
    ConstantLR,
    InverseStepLR,
    InverseTimeLR,
    PlateauLR,
    make_schedule,
    reshuffled,
    with_replacement,
)
from ntklab.train import fit

from conftest import run_cli


def test_constant_keeps_the_step() -> None:
    s = ConstantLR(0.3)
    assert [s.step(loss) for loss in (5.0, 4.0, 4.0, 9.0)] == [0.3] * 4


def test_plateau_divides_by_ten_after_patience_epochs_without_progress() -> None:
    s = PlateauLR(1.0, patience=2)
    losses = [5.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, float("nan")]
    steps = [s.step(loss) for loss in losses]
    # 4.0 stalls at epochs 3 and 4 → divide; 3.0 is new progress; then stalls twice more, and
    # twice more again (the counter restarts after each division); NaN never counts as progress
    expected = [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert steps == pytest.approx(expected)


def test_plateau_threshold_is_relative() -> None:
    s = PlateauLR(1.0, patience=1, threshold=0.01)
    assert s.step(1.0) == 1.0
    assert s.step(0.995) == pytest.approx(0.1)  # 0.5 % better is not progress at 1 %
    assert s.step(0.9) == pytest.approx(0.1)


def test_inverse_time_decay() -> None:
    s = InverseTimeLR(2.0, decay_epochs=4)
    steps = [s.step(1.0) for _ in range(8)]
    # epoch t + 1 uses lr / (1 + t / decay_epochs)
    assert steps == pytest.approx([2.0 / (1 + t / 4) for t in range(1, 9)])
    assert steps[3] == pytest.approx(1.0)


def test_inverse_step_decays_with_every_update(make_state) -> None:
    s = InverseStepLR(2.0, decay_steps=4)
    assert s.step(1.0) == 2.0
    assert [s.after_step() for _ in range(8)] == pytest.approx(
        [2.0 / (1 + k / 4) for k in range(1, 9)]
    )
    # in the loop: an epoch of 12 one-example steps uses the 12 steps of the sequence
    one = lambda n, g: list(torch.randperm(n, generator=g).split(1))  # noqa: E731
    state = make_state(epochs=2, batches=one, schedule=InverseStepLR(0.3, decay_steps=4))
    lrs = []
    step = state.optimizer.step
    state.optimizer.step = lambda grads, lr: (lrs.append(lr), step(grads, lr))
    fit(state)
    assert len(lrs) == 2 * state.n
    assert lrs == pytest.approx([state.schedule.lr0 / (1 + k / 4) for k in range(2 * state.n)])


OPTIONS = {"patience": 2, "factor": 0.1, "decay_epochs": 3}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_resumed_schedule_continues_the_same_sequence(name: str) -> None:
    losses = [3.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    whole = make_schedule(name, 1.0, OPTIONS)
    expected = [whole.step(loss) for loss in losses]
    first = make_schedule(name, 1.0, OPTIONS)
    got = [first.step(loss) for loss in losses[:4]]
    second = make_schedule(name, 7.0, OPTIONS)  # lr from state
    second.load_state_dict(first.state_dict())
    got += [second.step(loss) for loss in losses[4:]]
    assert got == expected


def test_each_schedule_takes_only_its_own_options() -> None:
    """A config carries every schedule's options and each schedule receives only its own; a
    misspelt keyword in a direct call is an error, not silently ignored."""
    assert make_schedule("plateau", 1.0, OPTIONS).patience == 2
    assert make_schedule("inverse_time", 1.0, OPTIONS).decay_epochs == 3
    with pytest.raises(TypeError, match="patiense"):
        PlateauLR(1.0, patiense=3)
    with pytest.raises(TypeError, match="decay_epochs"):
        ConstantLR(1.0, decay_epochs=3)


def test_reshuffled_epochs_visit_every_sample_once() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        batches = reshuffled(10, 4, g)
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_with_replacement_draws_uniform_batches() -> None:
    g = torch.Generator().manual_seed(0)
    batches = with_replacement(10, 4, g)
    assert [len(b) for b in batches] == [4, 4, 4]  # ⌈n/b⌉ minibatches of b each
    counts = torch.zeros(10)
    repeats = 0
    for _ in range(500):
        idx = torch.cat(with_replacement(10, 4, g))
        counts += torch.bincount(idx, minlength=10)
        repeats += int(len(idx.unique()) < len(idx))
    assert repeats > 400  # 12 draws from 10 always repeat; reshuffling never does
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()


@pytest.mark.slow
def test_cli_logs_the_scheduled_steps(tmp_path) -> None:
    proc = run_cli(
        f"hydra.run.dir={tmp_path}",
        "optim=sgd",
        "optim.lr=0.2",
        "optim.schedule=inverse_time",
        "optim.decay_epochs=2",
        "optim.sampling=replacement",
        "epochs=4",
        "ntk.every=0",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # optim/lr at step t is the step epoch t used (t = 0: the one epoch 1 uses)
    assert [r["optim/lr"] for r in rows] == pytest.approx([0.2, 0.2, 0.2 / 1.5, 0.1, 0.2 / 2.5])
