"""The training loop: hand-written GD/SGD epochs that fire callback events; returns a result."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ntklab.losses import Loss, mse
from ntklab.models import OneHiddenLayer
from ntklab.optim import ConstantLR, HeavyBall, Schedule, full_batch
from ntklab.rundir import Status

Batches = Callable[[int, torch.Generator], Sequence[torch.Tensor | None]]


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def loss_and_grads(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: Loss = mse
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss (`loss_fn`, the MSE by default) on (X, y) and its gradient with respect to every
    trainable parameter."""
    params = trainable(model)
    with torch.enable_grad():
        loss = loss_fn(model, X, y)
        grads = torch.autograd.grad(loss, params)
    return loss.detach(), list(grads)


@dataclass
class TrainState:
    """What callbacks see at each event. `epoch` t means W_t: t epochs done, 0 is the init."""

    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    epochs: int
    optimizer: HeavyBall
    schedule: Schedule
    generator: torch.Generator  # the minibatch order's own stream
    batches: Batches = full_batch  # the epoch's minibatches: full_batch is GD
    epoch: int = 0
    lr: float = 0.0  # step size of epoch `epoch` (at epoch 0: the one epoch 1 will use)
    next_lr: float = 0.0
    # The steps epoch `epoch`'s updates used, in order (one for GD); `lr` is the last of them.
    epoch_lrs: list[float] = field(default_factory=list)
    loss: float = float("nan")
    # The cost so far: optimiser steps taken, and the per-example gradients they evaluated
    # (GD: n per step; SGD: the minibatch's size). The full-batch loss and gradient every
    # record measures are not counted (GD's step reuses that gradient, and counts its n).
    steps: int = 0
    grad_evals: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    stop: Status | None = None  # set by a callback to end the run after this epoch (DIVERGED)
    message: str = ""
    # ∇L(W_t) on all n samples, set with `loss` by evaluate() and shared: the PL ratio (every
    # epoch) and the next full-batch step both need it. None once the parameters have moved.
    grads: list[torch.Tensor] | None = None
    # Set by the NTK tracker on the epochs it computes a dense kernel, for other callbacks to
    # reuse (never recompute K in a second callback): K_t (n, n), K_0, and K_t's spectrum.
    K: torch.Tensor | None = None
    K0: torch.Tensor | None = None
    K_before: torch.Tensor | None = None  # K one epoch before K_t (measurements.KernelStep)
    spectrum: object | None = None
    K_full: torch.Tensor | None = None  # (n, n, k, k) for k outputs, where the run tracks it
    loss_fn: Loss = mse  # the training loss (losses.LOSSES)
    wall_time_s: float = 0.0  # training time spent before this process (restored on resume)
    # Seconds of that time spent measuring the NTK (K_t, its spectrum, what reads them), added
    # by the callbacks that do it through `measuring`: what ntk.budget holds to a fraction.
    tracking_s: float = 0.0
    _started: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(
        cls,
        model: nn.Module,
        X: torch.Tensor,
        y: torch.Tensor,
        *,
        epochs: int,
        lr: float,
        momentum: float = 0.0,
        schedule: Schedule | None = None,
        batches: Batches = full_batch,
        seed: int = 0,
        loss_fn: Loss = mse,
    ) -> TrainState:
        """A state at W_0: heavy-ball steps on the trained parameters, `schedule` (a constant
        step by default), the minibatch generator seeded with `seed`, and the loss `loss_fn`."""
        return cls(
            model=model,
            X=X,
            y=y,
            epochs=epochs,
            optimizer=HeavyBall(trainable(model), momentum=momentum),
            schedule=schedule if schedule is not None else ConstantLR(lr),
            generator=torch.Generator().manual_seed(seed),
            batches=batches,
            lr=lr,
            loss_fn=loss_fn,
        )

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def evaluate(self) -> None:
        """Record L(W_t) and ∇L(W_t) after the parameters changed: one forward and backward
        pass for both."""
        loss, self.grads = loss_and_grads(self.model, self.X, self.y, self.loss_fn)
        self.loss = float(loss)

    def record(self) -> dict[str, float]:
        """The tags the loop itself logs at the current epoch: the loss, the step size, the
        optimiser's steps and its per-example gradient evaluations so far."""
        return {
            "loss/train": self.loss,
            "optim/lr": self.lr,
            "optim/grad_evals": self.grad_evals,
            "optim/steps": self.steps,
        }

    def elapsed(self) -> float:
        """Training wall time so far, across every process that worked on this run."""
        return self.wall_time_s + time.perf_counter() - self._started

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Counts the wall time of the block as NTK tracking (`tracking_s`)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.tracking_s += time.perf_counter() - t0

    def state_dict(self) -> dict[str, object]:
        """The loop's state at the end of epoch `epoch`: with the callbacks' state, all a run
        needs to continue bitwise. Tensors (on the CPU) and plain values only: a OneHiddenLayer's
        W and v at the top level, any other model's under "state_dict". `lr` is the step size
        epoch `epoch + 1` will use."""
        return {
            **self._weights(),
            "epoch": self.epoch,
            "lr": self.next_lr,
            "loss": self.loss,
            "steps": self.steps,
            "grad_evals": self.grad_evals,
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "schedule": _to_cpu(self.schedule.state_dict()),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # Only when this process already uses CUDA: asking would initialise it.
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "wall_time_s": self.elapsed(),
            "tracking_s": self.tracking_s,
        }

    def _weights(self) -> dict[str, object]:
        weights = _to_cpu(self.model.state_dict())
        if not isinstance(self.model, OneHiddenLayer):
            return {"state_dict": weights}
        # the output weights v (m,) even where the trained parameter is a = √m v
        return {**weights, "v": self.model.v.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s output (tensors may sit on any device)."""
        weights = state if isinstance(self.model, OneHiddenLayer) else state["state_dict"]
        self.model.load_state_dict({k: weights[k] for k in self.model.state_dict()})
        opt = dict(state["optimizer"])
        opt["buffers"] = [None if b is None else b.to(self.X.device) for b in opt["buffers"]]
        self.optimizer.load_state_dict(opt)
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.epoch = int(state["epoch"])
        self.steps, self.grad_evals = int(state["steps"]), int(state["grad_evals"])
        self.lr = self.next_lr = float(state["lr"])
        self.wall_time_s = float(state["wall_time_s"])
        self.tracking_s = float(state.get("tracking_s", 0.0))


def _to_cpu(obj: object) -> object:
    """A copy of nested dicts/lists/tuples with every tensor detached and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class Callback:
    """Hooks fired by `fit`. Each may read the state, add to `state.metrics` or set `state.stop`."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, object]:
        """Reference state a resumed run needs (e.g. W_0, K_0); tensors and plain values only."""
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None: ...


@dataclass
class TrainResult:
    status: Status  # COMPLETED, or why the run stopped (DIVERGED, INTERRUPTED)
    epochs_run: int
    final_loss: float
    wall_time_s: float
    message: str = ""
    signal: str | None = None  # "SIGINT"/"SIGTERM" for an interrupted run


def _fire(callbacks: Sequence[Callback], event: str, state: TrainState) -> None:
    for cb in callbacks:
        getattr(cb, event)(state)


def run_epoch(state: TrainState) -> None:
    """One epoch: each minibatch's gradient, then the hand-written update at state.lr (or, for
    a schedule that moves with every update, at each update's own step). Afterwards
    state.epoch_lrs holds the steps used and state.lr the last of them, so the epoch's
    callbacks and record see the step that was taken, not the one to come."""
    model, X, y = state.model, state.X, state.y
    per_step = getattr(state.schedule, "after_step", None)
    lr, used = state.lr, []
    for idx in state.batches(state.n, state.generator):
        if idx is None:  # all n samples: the gradient evaluate() left on the state
            grads = state.grads
            if grads is None:
                grads = loss_and_grads(model, X, y, state.loss_fn)[1]
            state.grad_evals += state.n
        else:
            idx = idx.to(X.device)
            _, grads = loss_and_grads(model, X[idx], y[idx], state.loss_fn)
            state.grad_evals += len(idx)
        state.optimizer.step(grads, lr)
        used.append(lr)
        state.steps += 1
        state.grads = None
        if per_step is not None:  # a schedule whose step moves with every update
            lr = per_step()
    state.epoch_lrs = used
    if used:
        state.lr = used[-1]


class StopSignals:
    """SIGINT/SIGTERM during training ask the loop to stop once the current epoch is done and
    recorded (a second signal acts as it would without this). The loop turns the request into
    `state.stop = Status.INTERRUPTED` at the epoch boundary, so no callback sees a half-stopped
    epoch and the records match an uninterrupted run's. Installed in the main thread only."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:  # asked twice: stop waiting for the epoch
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.received = signal.Signals(signum)


def _epoch(state: TrainState, callbacks: Sequence[Callback]) -> None:
    """Epoch t = state.epoch + 1: the update, L(W_t), the callbacks, then the next step size."""
    run_epoch(state)
    state.epoch += 1
    state.K = state.spectrum = state.K_full = state.K_before = None
    state.evaluate()
    state.metrics = state.record()
    state.next_lr = state.schedule.step(state.loss)
    _fire(callbacks, "on_epoch_end", state)
    state.lr = state.next_lr


def fit(state: TrainState, callbacks: Sequence[Callback] = (), resume: bool = False) -> TrainResult:
    """Train from W_{state.epoch} to W_{epochs}. A fresh run fires epoch 0's callbacks; a resumed
    one (`resume=True`, state loaded from a checkpoint) continues after its epoch.

    SIGINT/SIGTERM stop the run at the end of the current epoch with status INTERRUPTED."""
    state._started = time.perf_counter()
    with StopSignals() as signals:
        state.evaluate()
        _fire(callbacks, "on_train_start", state)
        if not resume:
            state.epoch, state.next_lr = 0, state.lr
            state.steps = state.grad_evals = 0
            state.metrics = state.record()
            _fire(callbacks, "on_epoch_end", state)
        while state.epoch < state.epochs and not state.stop:
            if signals.received is not None:
                state.stop = Status.INTERRUPTED
                state.message = f"interrupted by {signals.received.name} after epoch {state.epoch}"
                break
            _epoch(state, callbacks)
        _fire(callbacks, "on_train_end", state)
    interrupted = state.stop is Status.INTERRUPTED
    return TrainResult(
        status=state.stop or Status.COMPLETED,
        epochs_run=state.epoch,
        final_loss=state.loss,
        wall_time_s=state.elapsed(),
        message=state.message,
        signal=signals.received.name if interrupted else None,
    )
