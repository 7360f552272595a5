"""Interrupt a real run (SIGTERM, SIGKILL) at a random epoch, resume it, and compare every record
with an uninterrupted run of the same seed: metrics.jsonl and summary.json bitwise, TensorBoard
scalars with each step exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator

from conftest import run_cli

# Minibatch SGD with momentum (generator and buffers matter), the NTK every 3 epochs and a
# checkpoint every 7 (cadences that do not line up with the interruption).
RUN = [
    "epochs=300",
    "data.n=64",
    "model.width=128",
    "optim=sgd",
    "optim.batch_size=16",
    "optim.momentum=0.9",
    "optim.lr=0.3",
    "ntk.every=3",
    "checkpoint_every=7",
    "seed=3",
]
WALL_TIME_KEYS = ("wall_time_s", "total_time_s")


# One thread per run: several runs share the machine, and torch's threads spin while they wait.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


cli = run_cli


def records(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def stop_at_random_epoch(run_dir: Path, sig: signal.Signals, rng: random.Random) -> tuple:
    """Start the run, send `sig` once it has logged a random number of epochs."""
    target = rng.randint(4, 150)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ntklab", *RUN, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    while records(run_dir) < target and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=600)
    return target, proc.returncode, err


def summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in WALL_TIME_KEYS}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(
        str(run_dir / "tb"), size_guidance={event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = cli(*RUN, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert (run_dir / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    assert summary(run_dir) == summary(reference)
    got, want = scalars(run_dir), scalars(reference)
    assert sorted(got) == sorted(want)
    for tag, events in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in events], tag  # no step twice or lost
        assert got[tag] == events, tag
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    ref = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(last["W"], ref["W"]) and last["epoch"] == ref["epoch"] == 300


@pytest.mark.slow
def test_sigterm_then_resume_equals_uninterrupted(tmp_path, reference):
    seed = random.randrange(2**32)
    run_dir = tmp_path / "run"
    target, rc, err = stop_at_random_epoch(run_dir, signal.SIGTERM, random.Random(seed))
    note = f"(random seed {seed}, signal after {target} records)\n{err}"
    assert rc == 128 + signal.SIGTERM, note
    assert "Traceback" not in err, note
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM", note
    epoch = stopped["epochs_run"]
    assert f"interrupted by SIGTERM after epoch {epoch}" in err, note
    assert f"resume=true hydra.run.dir={run_dir}" in err, note
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == epoch and records(run_dir) == epoch + 1, note
    for key in ("W", "v", "optimizer", "schedule", "generator", "torch_rng", "callbacks"):
        assert key in ckpt, key
    assert ckpt["optimizer"]["buffers"][0] is not None  # momentum survives
    assert {"W0"} <= set(ckpt["callbacks"]["WeightMetrics"])
    assert ckpt["callbacks"]["NTKTracker"]["K0"].shape == (64, 64)
    assert ckpt["callbacks"]["DivergenceGuard"]["L0"] is not None

    resumed = cli(*RUN, f"hydra.run.dir={run_dir}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} from epoch {epoch}" in resumed.stdout + resumed.stderr
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_sigkill_resumes_from_periodic_checkpoint(tmp_path, reference):
    """No handler runs on SIGKILL: records written after the last periodic checkpoint must be
    dropped and recomputed, in metrics.jsonl and in TensorBoard."""
    seed = random.randrange(2**32)
    run_dir = tmp_path / "run"
    target, rc, err = stop_at_random_epoch(run_dir, signal.SIGKILL, random.Random(seed))
    note = f"(random seed {seed}, killed after {target} records)\n{err}"
    assert rc == -signal.SIGKILL, note
    assert not (run_dir / "summary.json").exists()
    logged = records(run_dir) - 1
    last = run_dir / "checkpoints" / "last.pt"  # none yet when killed before epoch 7
    saved = torch.load(last, weights_only=True)["epoch"] if last.exists() else 0
    # A multiple of checkpoint_every, at most one period behind (the kill may fall between
    # an epoch's records and its checkpoint).
    assert saved % 7 == 0 and 0 <= logged - saved <= 7, note
    refused = cli(*RUN, f"hydra.run.dir={run_dir}")
    assert refused.returncode == 2 and "status unfinished" in refused.stderr
    resumed = cli(*RUN, f"hydra.run.dir={run_dir}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_resume_refuses_changed_settings(tmp_path):
    run_dir = tmp_path / "run"
    short = ["epochs=3", "data.n=16", "model.width=16", f"hydra.run.dir={run_dir}"]
    assert cli(*short).returncode == 0
    (run_dir / "summary.json").unlink()  # as if it had been killed
    changed = cli(*short, "optim.lr=0.2", "resume=true")
    assert changed.returncode == 2
    assert "optim.lr=0.2: the run in" in changed.stderr and "'auto'" in changed.stderr
    assert "Traceback" not in changed.stderr


@pytest.mark.slow
def test_finished_folder_is_refused_unless_overwrite_or_resume(tmp_path):
    run_dir = tmp_path / "run"
    short = ["epochs=3", "data.n=16", "model.width=16", f"hydra.run.dir={run_dir}"]
    assert cli(*short).returncode == 0
    files = [run_dir / "metrics.jsonl", run_dir / "summary.json"]
    before = [f.read_bytes() for f in files]

    again = cli(*short)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already holds a run (status completed)" in again.stderr
    assert "resume=true" in again.stderr and "overwrite=true" in again.stderr

    resumed = cli(*short, "resume=true")  # a finished run is left as it is
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stdout + resumed.stderr
    assert before == [f.read_bytes() for f in files]

    replaced = cli(*short, "overwrite=true", "seed=1")
    assert replaced.returncode == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3]
    assert json.loads((run_dir / "summary.json").read_text())["hparams"]["seed"] == 1
