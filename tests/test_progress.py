"""The progress bar: one line rewritten in place on a terminal, nothing anywhere else."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import pytest
import torch

from ntklab.progress import ProgressBar
from ntklab.train import TrainState

from conftest import run_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def state(epoch: int, loss: float, metrics: dict) -> TrainState:
    model = torch.nn.Linear(1, 1)
    s = TrainState.create(model, torch.zeros(2, 1), torch.zeros(2), epochs=10, lr=0.1)
    s.epoch, s.loss, s.metrics = epoch, loss, metrics
    return s


def test_bar_shows_epoch_loss_and_the_last_lambda_min():
    out = Terminal()
    bar = ProgressBar(out, bar_width=10, every_s=0.0)
    bar.on_epoch_end(state(0, 1.0, {"ntk/lambda_min": 0.25}))
    bar.on_epoch_end(state(5, 0.5, {}))  # an epoch without a kernel keeps the last λ_min
    bar.on_train_end(state(10, 0.125, {}))
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].startswith("epoch 0/10 [..........] loss 1.0000e+00  λ_min 0.25")
    assert frames[1].startswith("epoch 5/10 [#####.....] loss 5.0000e-01  λ_min 0.25")
    assert frames[-1] == "epoch 10/10 [##########] loss 1.2500e-01  λ_min 0.25\n"


def test_fast_epochs_are_not_all_drawn_but_the_last_one_is():
    out = Terminal()
    bar = ProgressBar(out, every_s=3600.0)
    for epoch in range(11):
        bar.on_epoch_end(state(epoch, 1.0, {}))
    frames = out.getvalue().split("\r")[1:]
    assert [f.split()[1] for f in frames] == ["0/10", "10/10"]


def test_quiet_when_not_a_terminal():
    out = io.StringIO()
    bar = ProgressBar(out, every_s=0.0)
    bar.on_epoch_end(state(1, 1.0, {}))
    bar.on_train_end(state(10, 1.0, {}))
    assert out.getvalue() == ""


def run_on_a_terminal(*args: str) -> str:
    """The real CLI with its stderr on a pseudo-terminal; returns what the terminal showed."""
    main, child = pty.openpty()
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
def test_cli_draws_a_bar_on_a_terminal_but_not_in_sweep_jobs(tmp_path):
    shown = run_on_a_terminal("epochs=4", f"hydra.run.dir={tmp_path / 'one'}")
    assert "epoch 4/4 [" in shown and "λ_min" in shown
    shown = run_on_a_terminal("-m", "epochs=4,5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert "sweep report" in shown and "epoch 4/4 [" not in shown
    # And nothing when stderr is a pipe.
    proc = run_cli("epochs=4", "data.n=8", "model.width=8", f"hydra.run.dir={tmp_path / 'piped'}")
    assert proc.returncode == 0 and "epoch 4/4 [" not in proc.stderr
