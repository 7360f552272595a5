"""The NTK of any model in the user's own training loop: `NTKMonitor.step(epoch)` measures what a
run of the `ntklab` CLI logs (the same callbacks, tags and TensorBoard layout) without owning
the loop, the optimiser or the loss."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ntklab.autodiff import output_count
from ntklab.control import log10_spectrum
from ntklab.diagnostics import InfiniteWidth, KernelGeometry, RateDiagnostics
from ntklab.logger import LAYOUT
from ntklab.losses import LOSSES, PL_LOSSES
from ntklab.measurements import (
    Accuracy,
    FullKernel,
    KernelStep,
    NTKTracker,
    PatternChange,
    WeightMetrics,
)
from ntklab.ntk import STRUCTURED_MODELS, Method, dense_method, parse_method
from ntklab.train import Callback, TrainState


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (BatchNorm's running statistics, no dropout), then each module's
    own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.train(training)


class NTKMonitor:
    """Tracks the empirical NTK of `model` on X (n, d) in a loop you write:

        monitor = NTKMonitor(model, X, y, every=5, writer=SummaryWriter("runs/mine"))
        for epoch in range(epochs):
            ...  # your own steps
            monitor.step(epoch)

    Each `step(epoch)` logs the weights' distance from the first step's (weights/*), and every
    `every` epochs (and at the first step) the kernel: its extreme eigenvalues, distance,
    velocity and alignment with y, and, for the nets with a closed form, λ_min(K∞)
    (ntk/*); with y and `loss="mse"` the loss and the PL quantities (loss/*, pl/ratio,
    pl/mu), with `loss="cross_entropy"` (integer labels, k outputs) the loss, accuracy/train
    and the full k-output kernel's extreme eigenvalues; `loss=None` logs no loss. The tags
    and the CUSTOM SCALARS layout are the CLI's (README, "What is logged"). Measurements run
    with the model in eval mode, its own mode restored after. `method` is an `ntk.Method`
    name ("auto": the closed form where one exists). Returns each step's metrics; all of
    them are kept in `history`.
    """

    def __init__(
        self,
        model: nn.Module,
        X: torch.Tensor,
        y: torch.Tensor | None = None,
        every: int = 1,
        writer: Any = None,
        *,
        loss: str | None = "mse",
        method: Method | str = "auto",
    ) -> None:
        if int(every) != every or every < 1:
            raise ValueError(f"every={every} must be a positive integer (epochs between kernels)")
        if loss is not None and loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is unknown; choose one of {sorted(LOSSES)} or None")
        self.every, self.writer, self.loss = int(every), writer, loss
        y = _targets(y, loss, X.shape[0])
        with evaluating(model):
            k = output_count(model, X)
        method = parse_method(method)
        method = dense_method(model) if method is Method.AUTO else method
        if method is Method.STRUCTURED and not isinstance(model, STRUCTURED_MODELS):
            raise TypeError(
                "method='structured' is the closed form of OneHiddenLayer, MLP and PlainLinear, "
                f"not of {type(model).__name__}; use method='auto' or 'jacobian'"
            )
        if k > 1 and method.matrix_free:
            raise ValueError(f"method={method.value!r} does not form the kernel of k={k} outputs")
        pl = loss in PL_LOSSES and y is not None
        self.tracker = NTKTracker(method, 1, output="full" if k > 1 else None, pl=pl)
        classes = [Accuracy()] if loss == "cross_entropy" else []
        self.callbacks: list[Callback] = [
            WeightMetrics(pl),
            self.tracker,
            KernelStep(method, self.every, "full" if k > 1 else None),
            *([FullKernel()] if k > 1 else []),
            *classes,
            *([RateDiagnostics(False, mse=pl)] if y is not None and loss else []),
            KernelGeometry(),
            PatternChange(),
            InfiniteWidth(),
        ]
        loss_fn = LOSSES[loss] if loss else LOSSES["mse"]
        self.state = TrainState.create(model, X, y, epochs=0, lr=math.nan, loss_fn=loss_fn)
        self.history: list[dict[str, float]] = []
        self._started = False
        self._last_kernel: int | None = None

    def _start(self) -> None:
        with evaluating(self.state.model):
            for cb in self.callbacks:
                cb.on_train_start(self.state)
        if self.writer is not None:
            self.writer.add_custom_scalars(LAYOUT)
        self._started = True

    def due(self, epoch: int) -> bool:
        """Whether `step(epoch)` computes the kernel."""
        return self._last_kernel is None or epoch % self.every == 0

    def step(self, epoch: int, force: bool = False) -> dict[str, float]:
        """Measure the model now, as the state after `epoch` epochs; `force` computes the
        kernel even off the `every` grid (e.g. at the last epoch). Returns the metrics."""
        if not self._started:
            self._start()
        state, kernel = self.state, force or self.due(epoch)
        state.epoch, state.metrics = int(epoch), {}
        state.K = state.K0 = state.spectrum = state.K_full = None
        with evaluating(state.model):
            if self.loss is not None and state.y is not None:
                state.evaluate()
                state.metrics["loss/train"] = state.loss
            for cb in self.callbacks:
                if cb is not self.tracker or kernel:
                    cb.on_epoch_end(state)
        self._last_kernel = epoch if kernel else self._last_kernel
        self._write(epoch)
        self.history.append({"step": int(epoch), **state.metrics})
        return dict(state.metrics)

    def _write(self, epoch: int) -> None:
        if self.writer is None:
            return
        for tag, value in self.state.metrics.items():
            self.writer.add_scalar(tag, float(value), global_step=epoch)
        if self.state.spectrum is not None:
            # the same histogram as a run's (control.LogWriter): log10 λ_i above the floor
            spectrum = log10_spectrum(self.state.spectrum.eigenvalues).cpu().numpy()
            self.writer.add_histogram("ntk/log10_spectrum", spectrum, global_step=epoch)
        self.writer.flush()


def _targets(y: torch.Tensor | None, loss: str | None, n: int) -> torch.Tensor | None:
    """y as the loss takes it: (n,) real targets for the MSE, (n,) integer labels for
    cross-entropy; ValueError naming the argument otherwise."""
    if y is None:
        if loss is not None:
            raise ValueError(f"loss={loss!r} needs the targets y; pass y, or loss=None")
        return None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(
            f"y has shape {tuple(y.shape)}; it must be (n,) = ({n},), one per row of X"
        )
    labels = not y.is_floating_point()
    if loss == "cross_entropy" and not labels:
        raise ValueError("loss='cross_entropy' needs integer class labels y (torch.long)")
    if loss == "mse" and labels:
        raise ValueError("y holds integer labels: pass loss='cross_entropy', or float targets")
    return y
