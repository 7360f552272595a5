"""Callbacks that set theory beside the measurement: measured rates against their bounds, the
kernel's geometry (distance from K_0, velocity, alignment) and the infinite-width kernel K∞.

They reuse what the tracker put on the state (K_t and K_0 where they are formed, and the
extreme eigenvalues in state.metrics, dense or matrix-free) and never compute K themselves; on
epochs without a tracked kernel they log nothing kernel-based.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from ntklab.kernels import model_ntk_inf
from ntklab.mlp_kernels import mlp_ntk_inf
from ntklab.models import MLP, OneHiddenLayer, PlainLinear, output_magnitude, output_scale
from ntklab.spectrum import Spectrum, dense_spectrum
from ntklab.theory import (
    mean_example_grad_sq,
    rate_bound,
    rate_slide,
    sgd_descent_bound,
    sgd_grad_bound,
    smoothness,
)
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


def class_alignment(K: torch.Tensor, labels: torch.Tensor) -> float:
    """⟨K, Y Yᵀ⟩_F / (‖K‖_F ‖Y Yᵀ‖_F) for K (n, n) and integer labels (n,), Y their one-hot
    (n, k): the alignment with the same-class indicator, which for one target y is `alignment`."""
    Y = functional.one_hot(labels).to(torch.float64)
    K, YYt = K.to(torch.float64), Y @ Y.T
    return float((K * YYt).sum() / (K.norm() * YYt.norm()))


def target_alignment(K: torch.Tensor, y: torch.Tensor) -> float:
    """`alignment` with real targets, `class_alignment` with integer labels."""
    return alignment(K, y) if y.is_floating_point() else class_alignment(K, y)


def loss_floor(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The MSE's round-off floor: (1/n) Σ_i δr_i² / α², δr_i = eps (Σ_k |term_k(x_i)| + |y_i|), the
    rounding error of the residual r_i = f(x_i) − y_i at X's precision (the output's terms
    from models.output_magnitude; |f| where they are not known, a lower bound). A loss within a
    few orders of magnitude of it carries few correct digits."""
    with torch.no_grad():
        mag = output_magnitude(model, X)
        if mag is None:
            mag = model(X).abs()
        delta = torch.finfo(X.dtype).eps * (mag.to(torch.float64) + y.to(torch.float64).abs())
        return float(delta.pow(2).mean()) / output_scale(model) ** 2


def excess_error(loss: float, floor: float, X: torch.Tensor) -> float:
    """A bound on the rounding error of L_t − L*: L_t's from its residuals' errors (δL ≤
    2√(L F) + F with F the floor, `loss_floor`) plus its sum's, n · eps · L at X's precision
    (L* is a float64 least-squares value, far more accurate)."""
    n, eps = X.shape[0], torch.finfo(X.dtype).eps
    return 2 * math.sqrt(loss * floor) + floor + n * eps * loss


# The contraction is resolved when its round-off error is below this fraction of it.
CONTRACTION_TOLERANCE = 1e-2


class RateDiagnostics(Callback):
    """At step t: loss/contraction = L_t / L_{t−1}, with its round-off: loss/roundoff_floor (the
    MSE's floor F_t, `loss_floor`, every epoch), loss/contraction_err (2 (√(F_t/L_t) +
    √(F_{t−1}/L_{t−1})) times the contraction: a bound on its rounding error) and
    loss/contraction_resolved (1 when
    that error is below 1% of it). For full-batch GD without momentum, where the contraction is
    resolved, also pl/rate_bound (theory.rate_bound from K_{t−1}'s λ's and the step of epoch t)
    and pl/loss_bound = L_{t−1} · pl/rate_bound; at the theory step (`theory_step`: optim.lr=auto,
    constant) also pl/rate_slide, the lecture notes' 1 − μ/β, which they claim for that step
    only. The bounds need K_{t−1}'s extreme eigenvalues (dense or matrix-free), so they appear
    on epochs following a tracked one (every epoch at ntk.every=1)."""

    def __init__(self, full_batch_gd: bool, theory_step: bool = False, mse: bool = True) -> None:
        self.gd, self.theory_step, self.mse = bool(full_batch_gd), bool(theory_step), bool(mse)
        self.prev: dict[str, float] = {}  # epoch, loss, floor, and λ_min/λ_max of K then

    def on_epoch_end(self, state: TrainState) -> None:
        prev, L = self.prev, state.loss
        floor = loss_floor(state.model, state.X, state.y) if self.mse else 0.0
        if self.mse:
            state.metrics["loss/roundoff_floor"] = floor
        if prev.get("epoch") == state.epoch - 1:
            self._contraction(state, prev, L, floor)
        self.prev = {"epoch": state.epoch, "loss": L, "floor": floor}
        if "ntk/lambda_max" in state.metrics:
            self.prev.update(
                lambda_min=state.metrics["ntk/lambda_min"],
                lambda_max=state.metrics["ntk/lambda_max"],
            )

    def _contraction(self, state: TrainState, prev: dict, L: float, floor: float) -> None:
        L_prev = prev["loss"]
        contraction = L / L_prev if L_prev > 0 else math.nan
        state.metrics["loss/contraction"] = contraction
        resolved = True
        if self.mse:
            relative = 2 * (math.sqrt(floor / L) if L > 0 else math.inf)
            relative += 2 * (math.sqrt(prev.get("floor", 0.0) / L_prev) if L_prev > 0 else math.inf)
            state.metrics["loss/contraction_err"] = relative * contraction
            resolved = relative <= CONTRACTION_TOLERANCE
            state.metrics["loss/contraction_resolved"] = float(resolved)
        if self.gd and resolved and "lambda_max" in prev:
            alpha = output_scale(state.model)
            lo, hi = prev["lambda_min"], prev["lambda_max"]
            bound = rate_bound(lo, hi, state.n, state.lr, alpha)
            state.metrics["pl/rate_bound"] = bound
            state.metrics["pl/loss_bound"] = bound * L_prev
            if self.theory_step:
                state.metrics["pl/rate_slide"] = rate_slide(lo, hi)

    def state_dict(self) -> dict[str, object]:
        return {"prev": dict(self.prev)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.prev = dict(state["prev"])


class KernelGeometry(Callback):
    """ntk/kernel_distance (K_t against K_0), ntk/velocity (the kernel's change over the last
    epoch, ‖K_t − K_{t−1}‖_F / ‖K_0‖_F, from the K_{t−1} that measurements.KernelStep puts on the
    state: one epoch whatever ntk.every is, so it does not depend on how often the kernel is
    tracked) and ntk/alignment (with the targets, or with the classes of integer labels; not
    logged without targets).

    K_0 is normalised once per process and its norm kept (the same numbers, bit for bit, as
    computing them again at every tracked epoch)."""

    def __init__(self) -> None:
        self._K0: torch.Tensor | None = None  # the K_0 that `_unit0`, `_norm0` belong to
        self._unit0: torch.Tensor | None = None
        self._norm0: torch.Tensor | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        if state.K is None:
            return
        with state.measuring():
            self._measure(state)

    def _measure(self, state: TrainState) -> None:
        K = state.K
        if self._K0 is not state.K0:
            K0 = state.K0.to(torch.float64)
            self._K0, self._norm0 = state.K0, K0.norm()
            self._unit0 = K0 / self._norm0
        U = unit(K)
        state.metrics["ntk/kernel_distance"] = unit_distance(U, self._unit0)
        if state.y is not None:
            state.metrics["ntk/alignment"] = target_alignment(K, state.y)
        if state.K_before is not None:
            step = (K.to(torch.float64) - state.K_before.to(torch.float64)).norm()
            state.metrics["ntk/velocity"] = float(step / self._norm0)


class LinearOptimum(Callback):
    """loss/optimum = L*, the lowest loss the linear net can reach: its outputs are every linear
    function x ↦ β·x, so L* = min_β ‖Xβ − y‖² / (n α²), solved once by least squares in float64;
    loss/optimum_resolved, 0 when L* is below the round-off floor of its own residual (the data
    can be fitted exactly, L* = 0 in exact arithmetic, and the value logged is round-off); and
    loss/excess = L_t − L*, every epoch, with loss/excess_resolved = 0 once it is below its own
    rounding error (`excess_error`): L_t ≥ L* holds exactly, so an excess within round-off is
    logged as max(L_t − L*, 0), never negative. The linear one-hidden-layer net with the MSE
    only (for a nonlinear net L* is not known in closed form)."""

    def __init__(self) -> None:
        self.optimum: float | None = None
        self.resolved = True

    def on_train_start(self, state: TrainState) -> None:
        model = state.model
        linear = isinstance(model, OneHiddenLayer) and model.negative_slope == 1.0
        if self.optimum is None and linear and state.y is not None and state.y.is_floating_point():
            X, y = state.X.to(torch.float64), state.y.to(torch.float64)
            beta = torch.linalg.lstsq(X.cpu(), y.cpu()[:, None]).solution[:, 0].to(X.device)
            r = X @ beta - y
            scale = state.n * output_scale(model) ** 2
            self.optimum = float(r @ r) / scale
            # the residual's rounding error, as loss_floor takes it for the net's output
            delta = torch.finfo(torch.float64).eps * (X.abs() @ beta.abs() + y.abs())
            self.resolved = self.optimum > float(delta @ delta) / scale

    def on_epoch_end(self, state: TrainState) -> None:
        if self.optimum is not None:
            state.metrics["loss/optimum"] = self.optimum
            state.metrics["loss/optimum_resolved"] = float(self.resolved)
            excess = state.loss - self.optimum
            floor = state.metrics.get("loss/roundoff_floor")  # RateDiagnostics' F_t, when it ran
            if floor is None:
                floor = loss_floor(state.model, state.X, state.y)
            error = excess_error(state.loss, floor, state.X)
            resolved = excess > error
            state.metrics["loss/excess"] = excess if resolved else max(excess, 0.0)
            state.metrics["loss/excess_resolved"] = float(resolved)

    def state_dict(self) -> dict[str, object]:
        return {"optimum": self.optimum, "resolved": self.resolved}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.optimum = state["optimum"]
        self.resolved = bool(state.get("resolved", True))


class SGDBound(Callback):
    """The lecture notes' nonconvex SGD bound beside the measurement (docs/theory.md), for the
    MSE: pl/sgd_grad_bound = 2 √(R β L² / T) after T = optim/steps steps, with R = L(W_0) − L*
    taken with L* = 0 (the MSE is ≥ 0: R is overestimated, the bound made looser, never
    tighter), β = pl/sgd_beta, the largest 2 λ_max(K_t)/(n α²) seen on tracked epochs (the
    Gauss–Newton part of the Hessian: an estimate of the smoothness, not a bound on it),
    L² = pl/sgd_grad_sq, the largest (1/n) Σ_i ‖∇ℓ_i‖² = (1/n) Σ 4 r_i² K_ii / α⁴ seen on epochs
    where K_t is formed (a one-example gradient's second moment; it bounds a minibatch's);
    pl/sgd_descent_bound = (R + (β L²/2) Σ γ_k²) / Σ γ_k, what the descent lemma gives for the
    steps actually taken; and pl/sgd_min_grad_sq = min ‖∇L(W_k)‖² over the recorded iterates
    (the end of each epoch: every iterate when an epoch is one step)."""

    def __init__(self) -> None:
        self.R: float | None = None
        self.beta = self.grad_sq = 0.0
        self.min_grad_sq = math.inf
        self.sum_lr = self.sum_lr_sq = 0.0
        self.steps = 0

    def on_epoch_end(self, state: TrainState) -> None:
        if self.R is None:
            self.R = state.loss
        if state.steps > self.steps:  # the steps this epoch's updates used
            self.sum_lr += sum(state.epoch_lrs)
            self.sum_lr_sq += sum(lr * lr for lr in state.epoch_lrs)
        self.steps = state.steps
        alpha = output_scale(state.model)
        if "ntk/lambda_max" in state.metrics:
            beta = smoothness(state.metrics["ntk/lambda_max"], state.n, alpha)
            self.beta = max(self.beta, beta)
        if state.K is not None:
            with torch.no_grad():
                f = state.model(state.X)
                r = (f[:, 0] if f.ndim == 2 else f) - state.y
            grad_sq = mean_example_grad_sq(r, torch.diagonal(state.K), alpha)
            self.grad_sq = max(self.grad_sq, grad_sq)
        if state.grads is not None:
            norm_sq = sum(float(g.double().pow(2).sum()) for g in state.grads)
            self.min_grad_sq = min(self.min_grad_sq, norm_sq)
        m = state.metrics
        m["pl/sgd_min_grad_sq"] = self.min_grad_sq
        if self.beta > 0 and self.grad_sq > 0:
            m["pl/sgd_beta"], m["pl/sgd_grad_sq"] = self.beta, self.grad_sq
            if self.steps > 0:
                m["pl/sgd_grad_bound"] = sgd_grad_bound(self.R, self.beta, self.grad_sq, self.steps)
                m["pl/sgd_descent_bound"] = sgd_descent_bound(
                    self.R, self.beta, self.grad_sq, self.sum_lr, self.sum_lr_sq
                )

    def state_dict(self) -> dict[str, object]:
        keys = ("R", "beta", "grad_sq", "min_grad_sq", "sum_lr", "sum_lr_sq", "steps")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def logistic_optimum(
    X: torch.Tensor, y: torch.Tensor, weight_decay: float, tol: float = 1e-13, max_iter: int = 100
) -> tuple[torch.Tensor, float, float]:
    """w*, L* and ‖∇L(w*)‖ of the regularised logistic loss L(w) = (1/n) Σ log(1 + e^{−y_i⟨w,
    x_i⟩}) + (λ/2)‖w‖², λ = weight_decay > 0 (strongly convex: one minimiser), by Newton's method
    with backtracking in float64 from w = 0, until ‖∇L‖ ≤ tol. X (n, d), y (n,) of ±1."""
    if not weight_decay > 0:
        raise ValueError(f"weight_decay={weight_decay}: L* needs λ > 0 (strong convexity)")
    X, y, lam = X.double().cpu(), y.double().cpu(), float(weight_decay)
    n, d = X.shape

    def value(w: torch.Tensor) -> torch.Tensor:
        z = -y * (X @ w)
        return torch.logaddexp(torch.zeros_like(z), z).mean() + 0.5 * lam * (w @ w)

    w = torch.zeros(d, dtype=torch.float64)
    for _ in range(max_iter):
        s = torch.sigmoid(-y * (X @ w))  # σ(−y_i⟨w, x_i⟩)
        g = -(X.T @ (y * s)) / n + lam * w
        if float(g.norm()) <= tol:
            break
        H = (X.T * (s * (1 - s))) @ X / n + lam * torch.eye(d, dtype=torch.float64)
        step, L0, t = torch.linalg.solve(H, g), value(w), 1.0
        while value(w - t * step) > L0 and t > 1e-12:  # Newton's step, halved where it rises
            t /= 2
        w = w - t * step
    s = torch.sigmoid(-y * (X @ w))
    g = -(X.T @ (y * s)) / n + lam * w
    return w, float(value(w)), float(g.norm())


class LogisticOptimum(Callback):
    """loss/optimum = L* of the regularised logistic loss of the plain linear model (optim.
    weight_decay = λ > 0 makes it strongly convex), solved once by Newton's method in float64
    (`logistic_optimum`, to ‖∇L(w*)‖ ≤ 1e-13, so L* is exact to about λ⁻¹·1e-26), logged as a
    constant with loss/optimum_resolved = 1, and loss/excess = L_t − L* every epoch, under the
    rule LinearOptimum states (loss/excess_resolved; L_t's error is its sum's, n · eps · L_t)."""

    def __init__(self, weight_decay: float) -> None:
        self.weight_decay = float(weight_decay)
        self.optimum: float | None = None

    def on_train_start(self, state: TrainState) -> None:
        if self.optimum is None and isinstance(state.model, PlainLinear):
            self.optimum = logistic_optimum(state.X, state.y, self.weight_decay)[1]

    def on_epoch_end(self, state: TrainState) -> None:
        if self.optimum is not None:
            state.metrics["loss/optimum"] = self.optimum
            state.metrics["loss/optimum_resolved"] = 1.0
            excess = state.loss - self.optimum
            resolved = excess > excess_error(state.loss, 0.0, state.X)
            state.metrics["loss/excess"] = excess if resolved else max(excess, 0.0)
            state.metrics["loss/excess_resolved"] = float(resolved)

    def state_dict(self) -> dict[str, object]:
        return {"optimum": self.optimum}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.optimum = state["optimum"]


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
    """ntk/lambda_min_inf = λ_min(K∞) on tracked epochs (dense or matrix-free) and, where K_t is
    formed, ntk/dist_to_inf = ‖K_t − K∞‖_F / ‖K∞‖_F. K∞ (`infinite_width_kernel`, with the net's
    options) is computed once, for the nets where it has a closed form and where it and its
    eigvalsh fit `budget_bytes`; its norm is kept. Its λ_min is resolved
    (ntk/lambda_min_inf_resolved = 1) when it exceeds n · eps · λ_max(K∞); below that it is
    zero to working precision and logged as max(λ_min, 0), the rule ntk/lambda_min follows."""

    def __init__(self, budget_bytes: float = float("inf")) -> None:
        self.budget = budget_bytes
        self.K_inf: torch.Tensor | None = None
        self.K_inf_norm: torch.Tensor | None = None
        self.spectrum: Spectrum | None = None

    def on_train_start(self, state: TrainState) -> None:
        if 4 * 8 * state.n**2 <= self.budget:  # K∞ and eigvalsh's workspace, float64
            self.K_inf = infinite_width_kernel(state.model, state.X)
        if self.K_inf is not None:
            self.spectrum = dense_spectrum(self.K_inf)
            self.K_inf_norm = self.K_inf.norm()

    def on_epoch_end(self, state: TrainState) -> None:
        if self.spectrum is None or "ntk/lambda_min" not in state.metrics:
            return
        resolved = self.spectrum.resolved
        state.metrics["ntk/lambda_min_inf_resolved"] = float(resolved)
        lam = self.spectrum.lambda_min
        state.metrics["ntk/lambda_min_inf"] = lam if resolved else max(lam, 0.0)
        if state.K is not None:
            with state.measuring():
                diff = state.K.to(torch.float64) - self.K_inf
                state.metrics["ntk/dist_to_inf"] = float(diff.norm() / self.K_inf_norm)
