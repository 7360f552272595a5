"""A one-line progress bar for a single run in a terminal (epoch, loss, λ_min)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from ntklab.train import Callback, TrainState


class ProgressBar(Callback):
    """One line on stderr rewritten in place: epoch, a bar, loss and the last λ_min. Quiet when
    the stream is not a terminal (logs, pipes, CI); the CLI also turns it off in sweep jobs."""

    def __init__(self, stream: TextIO | None = None, bar_width: int = 24, every_s: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar_width, self.every_s = bar_width, every_s
        self.lambda_min: float | None = None
        self.shown_at = -math.inf
        self.width = 0  # length of the line on screen, to blank a longer previous one

    def line(self, state: TrainState) -> str:
        done = state.epoch / state.epochs if state.epochs else 1.0
        filled = round(done * self.bar_width)
        bar = "#" * filled + "." * (self.bar_width - filled)
        lam = "" if self.lambda_min is None else f"  λ_min {self.lambda_min:.4g}"
        return f"epoch {state.epoch}/{state.epochs} [{bar}] loss {state.loss:.4e}{lam}"

    def draw(self, state: TrainState) -> None:
        text = self.line(state)
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width, self.shown_at = len(text), time.monotonic()

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.enabled:
            return
        self.lambda_min = state.metrics.get("ntk/lambda_min", self.lambda_min)
        # Redraw at most every `every_s` seconds: fast epochs must not flood the terminal.
        if time.monotonic() - self.shown_at >= self.every_s or state.epoch == state.epochs:
            self.draw(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.enabled:
            self.draw(state)
            self.stream.write("\n")
            self.stream.flush()
