"""Progress bars: a run's bar (epochs, rate, time left, loss, λ_min) and a sweep's jobs-done bar
on a terminal, nothing anywhere else."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
import torch

from ntklab.progress import ProgressBar, SweepProgress
from ntklab.rundir import RunFolder
from ntklab.train import TrainState

from conftest import run_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def state(epoch: int, loss: float, metrics: dict, epochs: int = 10) -> TrainState:
    model = torch.nn.Linear(1, 1)
    s = TrainState.create(model, torch.zeros(2, 1), torch.zeros(2), epochs=epochs, lr=0.1)
    s.epoch, s.loss, s.metrics = epoch, loss, metrics
    return s


def frames(out: Terminal) -> list[str]:
    return [f.rstrip() for f in out.getvalue().split("\r") if f.strip()]


def test_bar_shows_epochs_rate_time_left_loss_and_the_last_lambda_min():
    out = Terminal()
    bar = ProgressBar(out, every_s=0.0)
    bar.on_train_start(state(0, 1.0, {}))
    bar.on_epoch_end(state(0, 1.0, {"ntk/lambda_min": 0.25}))
    bar.on_epoch_end(state(5, 0.5, {}))  # an epoch without a kernel keeps the last λ_min
    bar.on_epoch_end(state(10, 0.125, {}))
    bar.on_train_end(state(10, 0.125, {}))
    shown = frames(out)
    middle = next(f for f in shown if f.startswith("epoch 5/10"))
    assert "50%" in middle and "epochs/s" in middle and "<" in middle  # rate and time left
    assert "loss 5.0000e-01, λ_min 0.25" in middle
    last = [f for f in shown if f.startswith("epoch 10/10")]
    assert len(last) == 1, shown  # the final state is drawn once
    assert "100%" in last[0] and "loss 1.2500e-01, λ_min 0.25" in last[0]
    assert out.getvalue().endswith("\n")


def test_a_resumed_run_starts_its_bar_at_its_epoch():
    out = Terminal()
    bar = ProgressBar(out, every_s=0.0)
    bar.on_train_start(state(6, 1.0, {}))
    assert frames(out)[0].startswith("epoch 6/10")


def test_fast_epochs_are_not_all_drawn():
    out = Terminal()
    bar = ProgressBar(out, every_s=3600.0)
    bar.on_train_start(state(0, 1.0, {}, epochs=1000))
    for epoch in range(1001):
        bar.on_epoch_end(state(epoch, 1.0, {}, epochs=1000))
    bar.on_train_end(state(1000, 1.0, {}, epochs=1000))
    assert len(frames(out)) <= 4


def test_quiet_when_not_a_terminal(tmp_path):
    out = io.StringIO()
    bar = ProgressBar(out, every_s=0.0)
    bar.on_train_start(state(0, 1.0, {}))
    bar.on_epoch_end(state(1, 1.0, {}))
    bar.on_train_end(state(10, 1.0, {}))
    SweepProgress(tmp_path, ["a", "b"], stream=out).start().stop()
    assert out.getvalue() == ""


def test_the_sweep_bar_counts_jobs_with_a_summary(tmp_path):
    out = Terminal()
    progress = SweepProgress(tmp_path, ["a", "b", "c"], stream=out, every_s=0.01).start()
    for job in ("a", "c"):
        RunFolder(tmp_path / job).write_failed("done, in a way")
    progress.stop()
    assert frames(out)[0].startswith("sweep 0/3 jobs done")
    assert frames(out)[-1].startswith("sweep 2/3 jobs done")


def run_on_a_terminal(*args: str) -> str:
    """The real CLI with its stderr on a 100 × 24 pseudo-terminal; what the terminal showed."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    cmd = [sys.executable, "-m", "ntklab", *args, "data.n=8", "data.d=4", "model.width=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_cli_draws_a_run_bar_and_a_sweep_bar_on_a_terminal(tmp_path):
    shown = run_on_a_terminal("epochs=4", f"hydra.run.dir={tmp_path / 'one'}")
    assert "epoch 4/4" in shown and "λ_min" in shown and "epochs/s" in shown
    shown = run_on_a_terminal("-m", "epochs=4,5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert "sweep 2/2 jobs done" in shown and "sweep report" in shown
    assert "epoch 4/4" not in shown  # a sweep's jobs draw no bar of their own
    # And nothing when stderr is a pipe.
    proc = run_cli("epochs=4", "data.n=8", "model.width=8", f"hydra.run.dir={tmp_path / 'piped'}")
    assert proc.returncode == 0
    assert "epoch 4/4" not in proc.stderr and "jobs done" not in proc.stderr
