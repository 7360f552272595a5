"""The training loop: hand-written GD/SGD epochs that fire callback events; returns a result."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ntklab.optim import HeavyBall

Batches = Callable[[int, torch.Generator], Sequence[torch.Tensor | None]]


def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/n) Σ (f(x_i) − y_i)² / α² (THEORY.md; α = 1 unless the model scales its output
    f = α h, in which case dividing by α² keeps the loss O(1), as in Chizat et al.)."""
    loss = (model(X) - y).pow(2).mean()
    alpha = getattr(model, "alpha", 1.0)
    return loss if alpha == 1.0 else loss / alpha**2


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def loss_and_grads(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss on (X, y) and its gradient with respect to every trainable parameter."""
    params = trainable(model)
    with torch.enable_grad():
        loss = mse(model, X, y)
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
    schedule: object
    generator: torch.Generator
    epoch: int = 0
    lr: float = 0.0  # step size of epoch `epoch` (at epoch 0: the one epoch 1 will use)
    next_lr: float = 0.0
    loss: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)
    stop: str | None = None  # set by a callback to end the run: "diverged", "interrupted", …
    message: str = ""
    # Set by the NTK tracker on the epochs it computes a dense kernel, for other callbacks to
    # reuse (never recompute K in a second callback): K_t (n, n), K_0, and K_t's spectrum.
    K: torch.Tensor | None = None
    K0: torch.Tensor | None = None
    spectrum: object | None = None
    _grads: list[torch.Tensor] | None = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def full_grads(self) -> list[torch.Tensor]:
        """∇L(W_t) on all n samples, computed once per epoch and shared (GD steps reuse it)."""
        if self._grads is None:
            _, self._grads = loss_and_grads(self.model, self.X, self.y)
        return self._grads

    def evaluate(self) -> None:
        """Record L(W_t) after the parameters changed."""
        self._grads = None
        with torch.no_grad():
            self.loss = float(mse(self.model, self.X, self.y))


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
    status: str  # "completed", or the reason a callback stopped the run
    epochs_run: int
    final_loss: float
    wall_time_s: float
    message: str = ""


def _fire(callbacks: Sequence[Callback], event: str, state: TrainState) -> None:
    for cb in callbacks:
        getattr(cb, event)(state)


def run_epoch(state: TrainState, batches: Batches) -> None:
    """One epoch: each minibatch's gradient, then the hand-written update at state.lr."""
    model, X, y = state.model, state.X, state.y
    for idx in batches(state.n, state.generator):
        if idx is None:
            grads = state.full_grads()
        else:
            idx = idx.to(X.device)
            _, grads = loss_and_grads(model, X[idx], y[idx])
        state.optimizer.step(grads, state.lr)
        state._grads = None


def fit(
    state: TrainState, batches: Batches, callbacks: Sequence[Callback] = (), start_epoch: int = 0
) -> TrainResult:
    """Train from W_{start_epoch} to W_{epochs}; epoch 0's callbacks fire only on a fresh start."""
    t0 = time.perf_counter()
    state.epoch = start_epoch
    state.evaluate()
    _fire(callbacks, "on_train_start", state)
    if start_epoch == 0:
        state.metrics = {"loss/train": state.loss, "optim/lr": state.lr}
        _fire(callbacks, "on_epoch_end", state)
    for epoch in range(start_epoch + 1, state.epochs + 1):
        if state.stop:
            break
        run_epoch(state, batches)
        state.epoch = epoch
        state.K = state.spectrum = None
        state.evaluate()
        state.metrics = {"loss/train": state.loss, "optim/lr": state.lr}
        state.next_lr = state.schedule.step(state.loss)
        _fire(callbacks, "on_epoch_end", state)
        state.lr = state.next_lr
    _fire(callbacks, "on_train_end", state)
    return TrainResult(
        status=state.stop or "completed",
        epochs_run=state.epoch,
        final_loss=state.loss,
        wall_time_s=time.perf_counter() - t0,
        message=state.message,
    )
