"""Progress in a terminal (tqdm): a bar per run (epochs, rate, time left, loss, λ_min) and a
jobs-done bar for a sweep. Both stay silent when their stream is not a terminal (logs, pipes,
CI), and messages logged while a bar is shown are written above it (launch.ConsoleHandler)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from ntklab.rundir import RunFolder
from ntklab.train import Callback, TrainState

RUN_FORMAT = "epoch {n_fmt}/{total_fmt} {bar} {percentage:3.0f}% [{elapsed}<{remaining}, {rate_fmt}{postfix}]"  # noqa: E501
SWEEP_FORMAT = "sweep {n_fmt}/{total_fmt} jobs done {bar} [{elapsed}<{remaining}]"


def is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def width(stream: TextIO) -> dict[str, object]:
    """tqdm's width arguments: follow the terminal's width, or 100 columns where the terminal
    reports none (a bare pseudo-terminal reports 0 × 0, on which tqdm would draw nothing)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 100, "nrows": 24}


class ProgressBar(Callback):
    """A run's bar on stderr: epochs done of all, the bar, rate and time left, then the loss and
    the last λ_min. `leave=False` (a job of a sweep run in the launching process) removes the
    bar when the run ends, under the sweep's own bar."""

    def __init__(
        self, stream: TextIO | None = None, leave: bool = True, every_s: float = 0.1
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self.stream)
        self.leave, self.every_s = leave, every_s
        self.bar: tqdm | None = None
        self.lambda_min: float | None = None

    def postfix(self, state: TrainState) -> str:
        lam = "" if self.lambda_min is None else f", λ_min {self.lambda_min:.4g}"
        return f"loss {state.loss:.4e}{lam}"

    def on_train_start(self, state: TrainState) -> None:
        if self.enabled:
            self.bar = tqdm(
                total=state.epochs, initial=state.epoch, unit=" epochs",
                file=self.stream, leave=self.leave, mininterval=self.every_s,
                bar_format=RUN_FORMAT, **width(self.stream),
            )  # fmt: skip

    def on_epoch_end(self, state: TrainState) -> None:
        if self.bar is None:
            return
        self.lambda_min = state.metrics.get("ntk/lambda_min", self.lambda_min)
        self.bar.set_postfix_str(self.postfix(state), refresh=False)
        if state.epoch < state.epochs:
            self.bar.update(state.epoch - self.bar.n)  # tqdm redraws at most every `every_s`
        else:  # the last epoch is drawn once, by close()
            self.bar.n = state.epoch

    def on_train_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(state), refresh=False)
            self.bar.close()  # draws the final state once
            self.bar = None


class SweepProgress:
    """A sweep's jobs-done bar, drawn by the launching process whatever runs the jobs (this
    process, joblib workers, SLURM): a thread counts the job folders that hold a summary."""

    def __init__(
        self, sweep_dir: Path, jobs: list[str], stream: TextIO | None = None, every_s: float = 0.5
    ) -> None:
        self.folders = [RunFolder(Path(sweep_dir) / job) for job in jobs]
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.bar: tqdm | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def done(self) -> int:
        return sum(folder.summary.exists() for folder in self.folders)

    def start(self) -> SweepProgress:
        if not self.folders or not is_terminal(self.stream):
            return self
        self.bar = tqdm(
            total=len(self.folders), initial=self.done(), file=self.stream,
            bar_format=SWEEP_FORMAT, position=0, **width(self.stream),
        )  # fmt: skip
        self._thread = threading.Thread(target=self._follow, name="sweep-progress", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.every_s):
            self._update()

    def _update(self) -> None:
        n = self.done()
        if self.bar is not None and n != self.bar.n:
            self.bar.update(n - self.bar.n)

    def stop(self) -> None:
        if self.bar is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._update()
        self.bar.close()
        self.bar = None
