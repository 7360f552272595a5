"""Callbacks that control a run rather than measure it: the divergence guard, checkpoints, and
the writer that hands each epoch's records to the logger."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ntklab.logger import RunLogger
from ntklab.rundir import RunFolder, Status, atomic_torch_save
from ntklab.train import Callback, TrainState


class DivergenceGuard(Callback):
    """Stops the run when the loss is NaN/inf or exceeds `factor` × L_0, and remembers the last
    finite loss (and its epoch) for the run's summary."""

    def __init__(self, factor: float = 1e6) -> None:
        self.factor = float(factor)
        self.L0: float | None = None
        self.last_finite: float | None = None
        self.last_finite_epoch: int | None = None
        self.diverged_epoch: int | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        if self.L0 is None:
            self.L0 = state.loss
        loss = state.loss
        if math.isfinite(loss) and loss <= self.factor * max(self.L0, 1e-300):
            self.last_finite, self.last_finite_epoch = loss, state.epoch
            return
        self.diverged_epoch = state.epoch
        state.stop = Status.DIVERGED
        why = (
            f"loss {loss:.4g}"
            if not math.isfinite(loss)
            else f"loss {loss:.4g} > {self.factor:g} × L_0"
        )
        before = (
            "no finite loss before it"
            if self.last_finite is None
            else f"last finite loss {self.last_finite:.6g} at epoch {self.last_finite_epoch}"
        )
        state.message = (
            f"diverged at epoch {state.epoch}: {why} (L_0 {self.L0:.4g}, {before}); "
            f"lower optim.lr (it was {state.lr:.4g})"
        )

    def report(self) -> dict[str, object] | None:
        """The summary's account of a divergence (None when the run did not diverge)."""
        if self.diverged_epoch is None:
            return None
        return {
            "epoch": self.diverged_epoch,
            "last_finite_loss": self.last_finite,
            "last_finite_epoch": self.last_finite_epoch,
            "initial_loss": self.L0,
            "factor": self.factor,
        }

    def state_dict(self) -> dict[str, object]:
        keys = ("L0", "last_finite", "last_finite_epoch", "diverged_epoch")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def log10_spectrum(eigenvalues: torch.Tensor) -> torch.Tensor:
    """log10 of K's eigenvalues (n,), each raised to the round-off floor n · eps · λ_max first
    (eps of float64, in which they are computed): on a log scale λ_max no longer squashes the
    bottom of the spectrum, and eigenvalues at round-off (zero, or slightly negative) sit at the
    floor instead of having no logarithm."""
    lam = eigenvalues.detach().to(torch.float64)
    floor = lam.numel() * torch.finfo(torch.float64).eps * lam.abs().max().clamp_min(1e-300)
    return lam.clamp_min(floor).log10()


class LogWriter(Callback):
    """Hands each epoch's records to the run's logger: the scalars every epoch, the spectrum of
    a dense K_t as the histogram ntk/log10_spectrum on tracked epochs, the dashboard layout at
    the start. It runs after every callback that adds metrics (only the Checkpointer comes
    later)."""

    def __init__(self, logger: RunLogger | None = None) -> None:
        self.logger = logger  # set once the run owns its folder (nothing is written before)

    def on_train_start(self, state: TrainState) -> None:
        self.logger.set_layout()

    def on_epoch_end(self, state: TrainState) -> None:
        histograms = {}
        if state.spectrum is not None:
            with state.measuring():
                histograms["ntk/log10_spectrum"] = log10_spectrum(state.spectrum.eigenvalues)
        self.logger.log(state.epoch, state.metrics, histograms)

    def on_train_end(self, state: TrainState) -> None:
        self.logger.writer.flush()


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why and what to do."""


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint with its tensors on `device` (weights_only: no code runs while loading)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        detail = str(err).split(". ")[0].splitlines()[0] if str(err) else "no detail"
        raise CheckpointError(
            f"{path} cannot be loaded ({type(err).__name__}: {detail}); "
            "start the run afresh with overwrite=true"
        ) from None


def _named(callbacks: Sequence[Callback]) -> dict[str, Callback]:
    """Callbacks keyed by class name (a repeated class gets #2, #3, …) for the checkpoint."""
    named: dict[str, Callback] = {}
    for cb in callbacks:
        name = base = type(cb).__name__
        k = 1
        while name in named:
            k += 1
            name = f"{base}#{k}"
        named[name] = cb
    return named


class Checkpointer(Callback):
    """checkpoints/init.pt at the start, checkpoints/last.pt every `every` epochs (0: never) and
    when the run ends for any reason (completed, diverged, interrupted); each write atomic.

    last.pt holds the loop's state (TrainState.state_dict: W, v, momentum buffers, step-size
    schedule, epoch, RNG states), the `state_dict()` of each of `others` (the run's other
    callbacks) and `extra` (the run's config and data fingerprint), all loadable with
    torch.load(..., weights_only=True). Put it last, after the LogWriter: a checkpoint of epoch
    t then always has epoch t's records on disk before it.

    A longer run continues a completed one exactly only from a state its own run would have
    had: the last epoch is always tracked, which a longer run does not do unless the epoch is a
    multiple of ntk.every (`track_every`). last.pt says whether it is such a state
    (`extendable`); when it is not, the last periodic checkpoint is kept as extend.pt."""

    def __init__(
        self,
        folder: RunFolder,
        every: int = 10,
        others: Sequence[Callback] = (),
        extra: dict[str, object] | None = None,
        track_every: int = 0,
    ) -> None:
        self.folder = folder
        self.every = int(every)
        self.others = _named(others)
        self.extra = extra or {}
        self.track_every = int(track_every)
        self.last_is_clean = False  # last.pt on disk is a state a longer run also passes

    def payload(self, state: TrainState, extendable: bool = True) -> dict[str, object]:
        return {
            **state.state_dict(),
            "callbacks": {k: cb.state_dict() for k, cb in self.others.items()},
            **self.extra,
            "extendable": extendable,
        }

    def save(self, state: TrainState, path: Path, extendable: bool = True) -> None:
        atomic_torch_save(self.payload(state, extendable), path)

    def on_train_start(self, state: TrainState) -> None:
        self.folder.checkpoints.mkdir(parents=True, exist_ok=True)
        if state.epoch == 0:
            self.save(state, self.folder.init_checkpoint)

    def on_epoch_end(self, state: TrainState) -> None:
        # The last epoch and a stopped run are saved by on_train_end.
        due = self.every > 0 and state.epoch > 0 and state.epoch % self.every == 0
        if due and state.epoch < state.epochs and not state.stop:
            self.save(state, self.folder.last_checkpoint)
            self.last_is_clean = True

    def on_train_end(self, state: TrainState) -> None:
        folder = self.folder
        if state.stop is not None:  # interrupted (a clean state) or diverged (never extended)
            self.save(state, folder.last_checkpoint, extendable=state.stop is Status.INTERRUPTED)
            return
        regular = self.track_every <= 0 or state.epoch % self.track_every == 0
        if regular:
            folder.extend_checkpoint.unlink(missing_ok=True)
        elif self.last_is_clean:
            os.replace(folder.last_checkpoint, folder.extend_checkpoint)
        self.save(state, folder.last_checkpoint, extendable=regular)

    def restore(self, payload: dict, state: TrainState, source: Path) -> None:
        """Put the loop and every other callback back where the checkpoint `source` left them;
        CheckpointError when it is not a checkpoint of such a run."""
        saved = payload.get("callbacks")
        missing = sorted(set(self.others) - set(saved if isinstance(saved, dict) else {}))
        if missing:
            raise CheckpointError(
                f"{source} holds no state for {', '.join(missing)}, so the run cannot continue "
                "exactly; start it afresh with overwrite=true"
            )
        try:
            state.load_state_dict(payload)
            for key, cb in self.others.items():
                cb.load_state_dict(saved[key])
        except (KeyError, AttributeError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise CheckpointError(
                f"{source} is not a checkpoint this run can continue from ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'no detail'}); start it afresh with "
                "overwrite=true"
            ) from None
        self.last_is_clean = source == self.folder.last_checkpoint
