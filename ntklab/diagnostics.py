"""Callbacks that set theory beside the measurement: measured rates against their bounds, the
kernel's geometry (distance from K_0, velocity, alignment) and the infinite-width kernel K∞.

They reuse the kernel the tracker put on the state (state.K, state.K0, state.spectrum) and
never compute K themselves; on epochs without a tracked kernel they log nothing kernel-based.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from ntklab.kernels import model_ntk_inf
from ntklab.mlp_kernels import mlp_ntk_inf
from ntklab.models import MLP, OneHiddenLayer, output_scale
from ntklab.theory import rate_bound, rate_slide
from ntklab.train import Callback, TrainState


def kernel_distance(A: torch.Tensor, B: torch.Tensor) -> float:
    """1 − ⟨A, B⟩_F / (‖A‖_F ‖B‖_F) for A, B (n, n), evaluated as ½‖A/‖A‖ − B/‖B‖‖²_F (the same
    number, without the cancellation of 1 − cos when the kernels are close)."""
    A, B = A.to(torch.float64), B.to(torch.float64)
    return 0.5 * float((A / A.norm() - B / B.norm()).pow(2).sum())


def alignment(K: torch.Tensor, y: torch.Tensor) -> float:
    """Kernel-target alignment yᵀ K y / (‖K‖_F ‖y‖²) for K (n, n), y (n,)."""
    K, y = K.to(torch.float64), y.to(torch.float64)
    return float(y @ (K @ y) / (K.norm() * (y @ y)))


def class_alignment(K: torch.Tensor, labels: torch.Tensor) -> float:
    """⟨K, Y Yᵀ⟩_F / (‖K‖_F ‖Y Yᵀ‖_F) for K (n, n) and integer labels (n,), Y their one-hot
    (n, k): the alignment with the same-class indicator, which for one target y is `alignment`."""
    Y = functional.one_hot(labels).to(torch.float64)
    K, YYt = K.to(torch.float64), Y @ Y.T
    return float((K * YYt).sum() / (K.norm() * YYt.norm()))


def target_alignment(K: torch.Tensor, y: torch.Tensor) -> float:
    """`alignment` with real targets, `class_alignment` with integer labels."""
    return alignment(K, y) if y.is_floating_point() else class_alignment(K, y)


class RateDiagnostics(Callback):
    """At step t: loss/contraction = L_t / L_{t−1}; for full-batch GD without momentum also
    pl/rate_bound (theory.rate_bound from K_{t−1} and the step of epoch t), pl/loss_bound =
    L_{t−1} · pl/rate_bound, and pl/rate_slide (the lecture notes' 1 − μ/β from K_{t−1}). The bounds
    need K_{t−1}, so they appear on epochs following a tracked one (every epoch at ntk.every=1)."""

    def __init__(self, full_batch_gd: bool) -> None:
        self.gd = bool(full_batch_gd)
        self.prev: dict[str, float] = {}  # epoch, loss, and λ_min/λ_max of K at that epoch

    def on_epoch_end(self, state: TrainState) -> None:
        prev, L = self.prev, state.loss
        if prev.get("epoch") == state.epoch - 1:
            L_prev = prev["loss"]
            state.metrics["loss/contraction"] = L / L_prev if L_prev > 0 else math.nan
            if self.gd and "lambda_max" in prev:
                alpha = output_scale(state.model)
                lo, hi = prev["lambda_min"], prev["lambda_max"]
                bound = rate_bound(lo, hi, state.n, state.lr, alpha)
                state.metrics["pl/rate_bound"] = bound
                state.metrics["pl/loss_bound"] = bound * L_prev
                state.metrics["pl/rate_slide"] = rate_slide(lo, hi)
        self.prev = {"epoch": state.epoch, "loss": L}
        if state.spectrum is not None:
            spec = state.spectrum
            self.prev.update(lambda_min=spec.lambda_min, lambda_max=spec.lambda_max)

    def state_dict(self) -> dict[str, object]:
        return {"prev": dict(self.prev)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.prev = dict(state["prev"])


class KernelGeometry(Callback):
    """ntk/kernel_distance (K_t against K_0), ntk/velocity (that distance between K_t and the
    previous tracked kernel, divided by the epochs between them) and ntk/alignment (with the
    targets, or with the classes of integer labels; not logged without targets)."""

    def __init__(self) -> None:
        self.K_prev: torch.Tensor | None = None
        self.epoch_prev = 0

    def on_epoch_end(self, state: TrainState) -> None:
        if state.K is None:
            return
        K = state.K
        state.metrics["ntk/kernel_distance"] = kernel_distance(K, state.K0)
        if state.y is not None:
            state.metrics["ntk/alignment"] = target_alignment(K, state.y)
        if self.K_prev is not None and state.epoch > self.epoch_prev:
            distance = kernel_distance(K, self.K_prev)
            state.metrics["ntk/velocity"] = distance / (state.epoch - self.epoch_prev)
        self.K_prev, self.epoch_prev = K.detach().clone(), state.epoch

    def state_dict(self) -> dict[str, object]:
        return {"K_prev": self.K_prev, "epoch_prev": self.epoch_prev}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.K_prev, self.epoch_prev = state["K_prev"], int(state["epoch_prev"])


def infinite_width_kernel(model: nn.Module, X: torch.Tensor) -> torch.Tensor | None:
    """The limit of the tracked kernel (n, n), float64, where a closed form exists: the
    one-hidden-layer net with its options (kernels), the (leaky) ReLU or linear MLP
    (mlp_kernels: the trace over k outputs); None otherwise."""
    if isinstance(model, OneHiddenLayer):
        return model_ntk_inf(model, X)
    if isinstance(model, MLP):
        return mlp_ntk_inf(model, X)
    return None


class InfiniteWidth(Callback):
    """ntk/lambda_min_inf = λ_min(K∞) and ntk/dist_to_inf = ‖K_t − K∞‖_F / ‖K∞‖_F on tracked
    epochs; K∞ (`infinite_width_kernel`, with the net's options) is computed once. Only for the
    nets where K∞ has a closed form."""

    def __init__(self) -> None:
        self.K_inf: torch.Tensor | None = None
        self.lambda_min_inf = math.nan

    def on_train_start(self, state: TrainState) -> None:
        self.K_inf = infinite_width_kernel(state.model, state.X)
        if self.K_inf is not None:
            self.lambda_min_inf = float(torch.linalg.eigvalsh(self.K_inf)[0])

    def on_epoch_end(self, state: TrainState) -> None:
        if state.K is None or self.K_inf is None:
            return
        diff = state.K.to(torch.float64) - self.K_inf
        state.metrics["ntk/lambda_min_inf"] = self.lambda_min_inf
        state.metrics["ntk/dist_to_inf"] = float(diff.norm() / self.K_inf.norm())
