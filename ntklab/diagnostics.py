"""Callbacks that set theory beside the measurement: measured rates against their bounds, the
kernel's geometry (distance from K_0, velocity, alignment) and the infinite-width kernel K∞.

They reuse the kernel the tracker put on the state (state.K, state.K0, state.spectrum) and
never compute K themselves; on epochs without a tracked kernel they log nothing kernel-based.
"""

from __future__ import annotations

import math

import torch

from ntklab.kernels import model_ntk_inf
from ntklab.models import OneHiddenLayer, output_scale
from ntklab.theory import rate_bound, rate_slide
from ntklab.train import Callback, TrainState


def unit(K: torch.Tensor) -> torch.Tensor:
    """K / ‖K‖_F in float64: (n, n)."""
    K = K.to(torch.float64)
    return K / K.norm()


def kernel_distance(A: torch.Tensor, B: torch.Tensor) -> float:
    """1 − ⟨A, B⟩_F / (‖A‖_F ‖B‖_F) for A, B (n, n), evaluated as ½‖A/‖A‖ − B/‖B‖‖²_F (the same
    number, without the cancellation of 1 − cos when the kernels are close)."""
    return unit_distance(unit(A), unit(B))


def unit_distance(U: torch.Tensor, V: torch.Tensor) -> float:
    """kernel_distance of two kernels given as `unit(A)`, `unit(B)`."""
    return 0.5 * float((U - V).pow(2).sum())


def alignment(K: torch.Tensor, y: torch.Tensor) -> float:
    """Kernel-target alignment yᵀ K y / (‖K‖_F ‖y‖²) for K (n, n), y (n,)."""
    K, y = K.to(torch.float64), y.to(torch.float64)
    return float(y @ (K @ y) / (K.norm() * (y @ y)))


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
    previous tracked kernel, divided by the epochs between them) and ntk/alignment.

    Each kernel is normalised once: K_0's and the previous one's are kept (the same numbers,
    bit for bit, as normalising them again)."""

    def __init__(self) -> None:
        self.K_prev: torch.Tensor | None = None
        self.epoch_prev = 0
        self._units: dict[str, torch.Tensor] = {}  # unit(K_0), unit(K_prev) in this process

    def on_epoch_end(self, state: TrainState) -> None:
        if state.K is None:
            return
        with state.measuring():
            self._measure(state)

    def _measure(self, state: TrainState) -> None:
        K = state.K
        U = unit(K)
        if "K0" not in self._units:
            self._units["K0"] = U if state.K0 is K else unit(state.K0)
        state.metrics["ntk/kernel_distance"] = unit_distance(U, self._units["K0"])
        state.metrics["ntk/alignment"] = alignment(K, state.y)
        if self.K_prev is not None and state.epoch > self.epoch_prev:
            prev = self._units.get("prev")
            distance = unit_distance(U, unit(self.K_prev) if prev is None else prev)
            state.metrics["ntk/velocity"] = distance / (state.epoch - self.epoch_prev)
        self.K_prev, self.epoch_prev = K.detach().clone(), state.epoch
        self._units["prev"] = U

    def state_dict(self) -> dict[str, object]:
        return {"K_prev": self.K_prev, "epoch_prev": self.epoch_prev}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.K_prev, self.epoch_prev = state["K_prev"], int(state["epoch_prev"])
        self._units.clear()


class InfiniteWidth(Callback):
    """ntk/lambda_min_inf = λ_min(K∞) and ntk/dist_to_inf = ‖K_t − K∞‖_F / ‖K∞‖_F on tracked
    epochs; K∞ (kernels.model_ntk_inf, with the net's options) is computed once, at the first
    epoch with a dense K_t (a matrix-free run never forms it: at its sizes it would not fit).
    Only for a OneHiddenLayer, where K∞ has a closed form."""

    def __init__(self) -> None:
        self.K_inf: torch.Tensor | None = None
        self.lambda_min_inf = math.nan
        self.K_inf_norm: torch.Tensor | None = None
        self.computed = False

    def _limit(self, state: TrainState) -> torch.Tensor | None:
        if not self.computed and isinstance(state.model, OneHiddenLayer):
            self.K_inf = model_ntk_inf(state.model, state.X)
            if self.K_inf is not None:
                self.lambda_min_inf = float(torch.linalg.eigvalsh(self.K_inf)[0])
                self.K_inf_norm = self.K_inf.norm()
        self.computed = True
        return self.K_inf

    def on_epoch_end(self, state: TrainState) -> None:
        if state.K is None:
            return
        with state.measuring():
            if self._limit(state) is None:
                return
            diff = state.K.to(torch.float64) - self.K_inf
            state.metrics["ntk/lambda_min_inf"] = self.lambda_min_inf
            state.metrics["ntk/dist_to_inf"] = float(diff.norm() / self.K_inf_norm)
