"""The kernel regime beside the network: the loss of the linearised model f_lin(θ) = f(θ_0) +
J_0 (θ − θ_0) trained by the run's own full-batch GD steps, in closed form through the
eigenbasis of K_0 (and of K∞), on the training and the held-out set; the network's own
held-out loss; and how far the network is from its linearisation (docs/theory.md, "The
kernel regime")."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from ntklab.autodiff import linear_part, split_parameters
from ntklab.diagnostics import InfiniteWidth, infinite_width_kernel, loss_floor
from ntklab.models import OneHiddenLayer, output_magnitude, output_scale
from ntklab.ntk import STRUCTURED_MODELS, Method, dense_method, empirical_ntk
from ntklab.train import Callback, TrainState

F64 = torch.float64


class KernelFlow:
    """Full-batch heavy-ball GD on a model linear in its parameters with kernel K (n, n) and the
    loss ‖r‖²/(n α²), in K's eigenbasis K = Q diag(λ) Qᵀ (float64): the residual's coordinates
    c = Qᵀ r, the momentum buffer's image β (the buffer is J_0ᵀ Q β) and the displacement's a
    (θ − θ_0 = −J_0ᵀ Q a). One step of size η, with s = 2/(n α²) and momentum μ:

        β ← μ β + s c,   c ← c − η λ β,   a ← a + η β   (μ = 0: c ← (1 − s η λ) c),

    O(n) per step. Eigenvalues at or below K's round-off floor n · eps · λ_max (eps of K's
    dtype) are taken as 0: the model does not move along those directions."""

    def __init__(self, K: torch.Tensor, r0: torch.Tensor, alpha: float = 1.0) -> None:
        floor = K.shape[0] * torch.finfo(K.dtype).eps
        lam, Q = torch.linalg.eigh(K.to(F64))
        self.resolved = lam > floor * lam[-1].clamp_min(0)  # (n,) bool
        self.lam = torch.where(self.resolved, lam, torch.zeros_like(lam))
        self.Q = Q  # (n, n): needed only to set up; not part of the state
        self.c = Q.T @ r0.to(F64)
        self.beta = torch.zeros_like(self.c)
        self.a = torch.zeros_like(self.c)
        self.scale = 2.0 / (K.shape[0] * alpha**2)
        self.alpha = float(alpha)

    def step(self, lr: float, momentum: float = 0.0) -> None:
        self.beta = momentum * self.beta + self.scale * self.c
        self.c = self.c - lr * self.lam * self.beta
        self.a = self.a + lr * self.beta

    def loss(self) -> float:
        """‖r‖² / (n α²) of the linearised model now."""
        return float(self.c @ self.c) / (self.c.shape[0] * self.alpha**2)

    def projection(self, K_cross: torch.Tensor) -> torch.Tensor:
        """K(X', X) Q with the unresolved directions' columns set to 0: (n', n), float64. The
        linearised model's output on X' is f(X'; θ_0) − (K(X', X) Q) a."""
        P = K_cross.to(F64) @ self.Q
        return P * self.resolved.to(F64)

    def state_dict(self) -> dict[str, object]:
        return {"lam": self.lam, "c": self.c, "beta": self.beta, "a": self.a,
                "scale": self.scale, "alpha": self.alpha}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict) -> KernelFlow:
        flow = cls.__new__(cls)
        flow.lam, flow.c, flow.beta, flow.a = (state[k] for k in ("lam", "c", "beta", "a"))
        flow.scale, flow.alpha = float(state["scale"]), float(state["alpha"])
        flow.resolved, flow.Q = flow.lam > 0, None
        return flow


def predicted_losses(
    K: torch.Tensor, r0: torch.Tensor, lrs: list[float], momentum: float = 0.0, alpha: float = 1.0
) -> list[float]:
    """L_0 … L_T of the linearised model with kernel K (n, n) from the residual r0 (n,), one
    full-batch (heavy-ball) GD step per entry of `lrs`: KernelFlow in a loop."""
    flow = KernelFlow(K, r0, alpha)
    losses = [flow.loss()]
    for lr in lrs:
        flow.step(lr, momentum)
        losses.append(flow.loss())
    return losses


def _outputs(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f = model(X)
    return f[:, 0] if f.ndim == 2 and f.shape[1] == 1 else f


def initial_kernel_dense(model: nn.Module, X: torch.Tensor, X2: torch.Tensor | None = None):
    """K_0(X, X2) (X2 = X when None) formed once, for a run whose tracker is matrix-free: the
    closed form for the nets that have one, else assembled from NTK-vector products (n products,
    O(n²) memory, where the Jacobian route's O(n·p) may not fit)."""
    method = dense_method(model) if isinstance(model, STRUCTURED_MODELS) else Method.NTVP
    if X2 is None:
        return empirical_ntk(model, X, method=method)
    return empirical_ntk(model, X2, X, method=method)


class HeldOutLoss(Callback):
    """loss/test: the run's data loss (MSE, cross-entropy or logistic: `loss_fn`, without the
    L2 term of optim.weight_decay, which is not a loss on data) on the held-out set X_test
    (n_test, d), y_test, every epoch."""

    def __init__(
        self, X_test: torch.Tensor, y_test: torch.Tensor, loss_fn: Callable[..., torch.Tensor]
    ) -> None:
        self.X_test, self.y_test, self.loss_fn = X_test, y_test, loss_fn

    def on_epoch_end(self, state: TrainState) -> None:
        with torch.no_grad():
            loss = self.loss_fn(state.model, self.X_test, self.y_test)
        state.metrics["loss/test"] = float(loss)


class KernelPrediction(Callback):
    """loss/kernel_prediction: L_t of the linearised model trained by the run's full-batch GD
    from the same init (the step the run used at each epoch, its momentum): KernelFlow with
    K_0 from r_0 = f(X; θ_0) − y; loss/kernel_inf_prediction the same with K∞ (where it has a
    closed form); with a held-out set, loss/test_kernel_prediction, the linearised model's
    held-out loss through the cross kernel K_0(X_test, X). Every epoch, O(n + n_test·n) each.

    Each prediction is logged where it exceeds its round-off floor, max(F_0, F_t) with F_t the
    loss's floor at epoch t (diagnostics.loss_floor, on the set it is computed on), and its
    `_resolved` flag says so (0: below it, not logged). `K0` is the dense K_0 of the tracker,
    or None on a matrix-free run, where it is formed once when K_0, its eigenvectors and the
    cross kernel fit `budget_bytes` (otherwise nothing is predicted). K∞ has the same budget,
    and is the one `infinite` (the InfiniteWidth callback, which fires first) computed when
    there is one. A run of 0 epochs predicts nothing. The MSE with full-batch GD only: the
    caller does not add it otherwise."""

    def __init__(
        self,
        K0: torch.Tensor | None,
        X_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None,
        budget_bytes: float = float("inf"),
        infinite: InfiniteWidth | None = None,
    ) -> None:
        self.K0, self.X_test, self.y_test = K0, X_test, y_test
        self.infinite = infinite  # fires first; its K∞, where it has one, is reused
        self.budget = budget_bytes
        self.flows: dict[str, KernelFlow] = {}  # "K0", "inf"
        self.P: torch.Tensor | None = None  # (n_test, n) K_0(X_test, X) Q
        self.r0_test: torch.Tensor | None = None  # (n_test,) f(X_test; θ_0) − y_test
        self.floors: dict[str, float] = {}  # F_0 of the train and the test set
        self.started = False
        self.epoch = 0  # the epoch the flows stand at

    def _fits(self, n: int) -> bool:
        n_test = 0 if self.X_test is None else self.X_test.shape[0]
        return 8 * (4 * n * n + 2 * n * n_test) <= self.budget

    def on_train_start(self, state: TrainState) -> None:
        if self.started:  # resumed: the flows come from the checkpoint
            return
        if state.epochs == 0:  # no step to predict, and eigenvectors cost O(n³); a resumed
            return  # run with more epochs starts here from the same (initial) weights
        self.started = True
        model, X, n = state.model, state.X, state.n
        r0 = (_outputs(model, X) - state.y).to(F64)
        alpha = output_scale(model)
        K0 = self.K0
        if K0 is None and self._fits(n):
            K0 = initial_kernel_dense(model, X)
        elif K0 is None:
            warnings.warn(
                f"n={n}: K_0's eigenvectors do not fit ntk.memory_budget_mb, so "
                "the kernel predictions (loss/kernel_prediction, loss/kernel_inf_prediction, "
                "loss/test_kernel_prediction) are not logged",
                stacklevel=2,
            )
        if K0 is not None:
            self.flows["K0"] = KernelFlow(K0, r0, alpha)
        K_inf = None
        if self._fits(n):
            K_inf = None if self.infinite is None else self.infinite.K_inf
            K_inf = infinite_width_kernel(model, X) if K_inf is None else K_inf
        if K_inf is not None:
            self.flows["inf"] = KernelFlow(K_inf, r0, alpha)
        if "K0" in self.flows and self.X_test is not None:
            cross = initial_kernel_dense(model, X, self.X_test)
            self.P = self.flows["K0"].projection(cross)
            self.r0_test = (_outputs(model, self.X_test) - self.y_test).to(F64)
            self.floors["test"] = loss_floor(model, self.X_test, self.y_test)
        self.floors["train"] = loss_floor(model, X, state.y)
        for flow in self.flows.values():
            flow.Q = None  # set up: only the O(n) state and P are kept

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.flows:
            return
        if state.epoch == self.epoch + 1:
            momentum = state.optimizer.momentum
            for flow in self.flows.values():
                flow.step(state.lr, momentum)
            self.epoch = state.epoch
        train_floor = max(self.floors["train"], state.metrics.get("loss/roundoff_floor", 0.0))
        tags = {"K0": "loss/kernel_prediction", "inf": "loss/kernel_inf_prediction"}
        for key, flow in self.flows.items():
            self._log(state, tags[key], flow.loss(), train_floor)
        if self.P is not None:
            r = self.r0_test - self.P @ self.flows["K0"].a
            alpha = self.flows["K0"].alpha
            floor = loss_floor(state.model, self.X_test, self.y_test)
            floor = max(self.floors["test"], floor)
            self._log(state, "loss/test_kernel_prediction", self._mse(r, alpha), floor)

    @staticmethod
    def _mse(r: torch.Tensor, alpha: float) -> float:
        return float(r @ r) / (r.shape[0] * alpha**2)

    @staticmethod
    def _log(state: TrainState, tag: str, value: float, floor: float) -> None:
        resolved = not value <= floor  # NaN and inf (a diverging step) are logged as they are
        if resolved:
            state.metrics[tag] = value
        state.metrics[f"{tag}_resolved"] = float(resolved)

    def state_dict(self) -> dict[str, object]:
        return {
            "started": self.started,
            "epoch": self.epoch,
            "flows": {k: f.state_dict() for k, f in self.flows.items()},
            "P": self.P,
            "r0_test": self.r0_test,
            "floors": dict(self.floors),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.started, self.epoch = bool(state["started"]), int(state["epoch"])
        self.flows = {k: KernelFlow.from_state(f) for k, f in state["flows"].items()}
        self.P, self.r0_test = state["P"], state["r0_test"]
        self.floors = dict(state["floors"])


# The gap is resolved when its numerator's rounding error is below this fraction of it.
GAP_TOLERANCE = 1e-2


def linearization_gap(
    model: nn.Module,
    X: torch.Tensor,
    params0: dict[str, torch.Tensor],
    linearization: tuple[torch.Tensor, Callable[[], torch.Tensor]] | None = None,
) -> tuple[float, float, float]:
    """(‖f(θ_t) − f_lin(θ_t)‖, ‖f(θ_t) − f(θ_0)‖, a bound on the first's rounding error) on X
    (n, d), norms over every sample and output; f_lin(θ) = f(θ_0) + J_0 (θ − θ_0) in closed
    form for the one-hidden-layer net (OneHiddenLayer.linearization, or the `linearization`
    it returned for these X and params0), else by one `torch.func.jvp` (autodiff.linear_part).
    The rounding bound is 3 eps ‖m‖ (three outputs subtracted), m the larger of the output's
    term magnitudes at θ_t (models.output_magnitude; |f| where unknown) and |f(θ_0)|."""
    if linearization is None and isinstance(model, OneHiddenLayer):
        linearization = model.linearization(X, params0)
    if linearization is not None:  # closed form
        f0, change = linearization[0], linearization[1]()
    else:
        f0, change = linear_part(model, X, params0)
    with torch.no_grad():
        f = model(X).reshape(f0.shape)
    mag = output_magnitude(model, X)
    mag = f.abs() if mag is None else mag.reshape(f0.shape)
    delta = 3 * torch.finfo(f.dtype).eps * torch.maximum(mag, f0.abs()).to(F64)
    gap = (f - f0 - change).to(F64).norm()
    return float(gap), float((f - f0).to(F64).norm()), float(delta.norm())


class LinearizationGap(Callback):
    """ntk/linearization_gap = ‖f(θ_t) − f_lin(θ_t)‖ / ‖f(θ_t) − f(θ_0)‖ on the training set, at
    the tracked epochs t ≥ 1 (`every`, always the last), with ntk/linearization_gap_resolved: 1
    when its numerator's rounding error (`linearization_gap`) is below 1% of it, else 0 and the
    gap is not logged. Any model, any loss (the gap is the net's, not the loss's)."""

    def __init__(self, every: int) -> None:
        self.every = int(every)
        self.params0: dict[str, torch.Tensor] | None = None
        # the net's closed-form linearisation at params0 on the training set (not saved)
        self.linearization: tuple[torch.Tensor, Callable[[], torch.Tensor]] | None = None

    def on_train_start(self, state: TrainState) -> None:
        if self.params0 is None:
            params, _ = split_parameters(state.model)
            self.params0 = {k: p.clone() for k, p in params.items()}

    def due(self, state: TrainState) -> bool:
        if self.every <= 0 or state.epoch == 0:
            return False
        last = state.epoch == state.epochs or state.stop is not None
        return state.epoch % self.every == 0 or last

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.due(state):
            return
        if self.linearization is None and isinstance(state.model, OneHiddenLayer):
            self.linearization = state.model.linearization(state.X, self.params0)
        lin = self.linearization
        gap, moved, err = linearization_gap(state.model, state.X, self.params0, lin)
        resolved = moved > 0 and err <= GAP_TOLERANCE * gap
        if resolved:
            state.metrics["ntk/linearization_gap"] = gap / moved
        state.metrics["ntk/linearization_gap_resolved"] = float(resolved)

    def state_dict(self) -> dict[str, object]:
        return {"params0": self.params0}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.params0, self.linearization = state["params0"], None
