"""Callbacks of the training loop: weight and PL metrics, NTK tracking, checkpoints, guards."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TextIO

import torch

from ntklab.logger import RunLogger, atomic_torch_save
from ntklab.ntk import empirical_ntk
from ntklab.spectrum import dense_spectrum
from ntklab.theory import pl_mu
from ntklab.train import Callback, TrainState


class WeightMetrics(Callback):
    """weights/* (distance of W_t from W_0) and pl/ratio = ‖∇L(W_t)‖² / L(W_t), every epoch."""

    def on_train_start(self, state: TrainState) -> None:
        if not hasattr(self, "W0"):
            self.W0 = state.model.W.detach().clone()
            self.W0_norm = float(self.W0.norm())

    def on_epoch_end(self, state: TrainState) -> None:
        diff = state.model.W.detach() - self.W0
        dist = float(diff.norm())
        grad_sq = sum(float(g.pow(2).sum()) for g in state.full_grads())
        state.metrics.update(
            {
                "weights/dist_from_init": dist,
                "weights/rel_dist_from_init": dist / self.W0_norm,
                "weights/max_neuron_dist": float(diff.norm(dim=1).max()),
                "pl/ratio": grad_sq / state.loss if state.loss > 0 else math.nan,
            }
        )


class NTKTracker(Callback):
    """K_t = JᵀJ every `every` epochs (and always at epoch 0 and the last epoch): its extreme
    eigenvalues in float64, its relative change from K_0 and the PL constant μ_t."""

    def __init__(self, method: str = "structured", every: int = 1) -> None:
        self.method, self.every = method, int(every)
        self.K0: torch.Tensor | None = None
        self.last: dict[str, float] = {}

    def due(self, state: TrainState) -> bool:
        if self.every <= 0:
            return False
        return (
            state.epoch % self.every == 0 or state.epoch == state.epochs or state.stop is not None
        )

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.due(state):
            return
        K = empirical_ntk(state.model, state.X, method=self.method)
        if self.K0 is None:
            self.K0 = K
        spec = dense_spectrum(K)
        state.K, state.K0, state.spectrum = K, self.K0, spec
        metrics = {
            "ntk/lambda_min": spec.lambda_min,
            "ntk/lambda_max": spec.lambda_max,
            "ntk/rel_change": float((K - self.K0).norm() / self.K0.norm()),
            "ntk/roundoff_floor": spec.roundoff,
            "ntk/lambda_min_resolved": float(spec.resolved),
            "pl/mu": pl_mu(spec.lambda_min, state.n),
        }
        # κ is only meaningful when λ_min rises above round-off; otherwise it is not logged.
        if spec.resolved:
            metrics["ntk/condition_number"] = spec.lambda_max / spec.lambda_min
        state.metrics.update(metrics)
        self.last = metrics


class DivergenceGuard(Callback):
    """Stops the run when the loss is NaN/inf or exceeds `factor` × L_0."""

    def __init__(self, factor: float = 1e6) -> None:
        self.factor = float(factor)
        self.L0: float | None = None
        self.last_finite: float | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        if self.L0 is None:
            self.L0 = state.loss
        bad = not math.isfinite(state.loss) or state.loss > self.factor * max(self.L0, 1e-300)
        if bad:
            state.stop = "diverged"
            state.message = (
                f"diverged at epoch {state.epoch}: loss {state.loss:.4g} "
                f"(initial {self.L0:.4g}, last finite {self.last_finite}); "
                f"lower optim.lr (it was {state.lr:.4g})"
            )
        else:
            self.last_finite = state.loss


class Checkpointer(Callback):
    """checkpoints/init.pt at the start and checkpoints/last.pt at the end: tensors only,
    loadable with torch.load(..., weights_only=True)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir) / "checkpoints"

    def payload(self, state: TrainState) -> dict[str, object]:
        model = state.model
        return {
            "W": model.W.detach().cpu().clone(),
            "v": model.v.detach().cpu().clone(),
            "epoch": state.epoch,
            "loss": state.loss,
            "lr": state.lr,
        }

    def on_train_start(self, state: TrainState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if state.epoch == 0:
            atomic_torch_save(self.payload(state), self.dir / "init.pt")

    def on_train_end(self, state: TrainState) -> None:
        atomic_torch_save(self.payload(state), self.dir / "last.pt")


class LogWriter(Callback):
    """Hands each epoch's metrics to the run's logger (runs last, after every other callback)."""

    def __init__(self, logger: RunLogger) -> None:
        self.logger = logger

    def on_epoch_end(self, state: TrainState) -> None:
        self.logger.log(state.epoch, state.metrics)

    def on_train_end(self, state: TrainState) -> None:
        self.logger.writer.flush()


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
