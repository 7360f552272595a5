"""Callbacks that measure the state of the net: how far the weights moved, which activations
flipped, and the empirical NTK K_t with its extreme eigenvalues and the PL constant."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ntklab.budget import TrackingSchedule
from ntklab.davidson import davidson
from ntklab.models import OneHiddenLayer, output_scale
from ntklab.ntk import Method, empirical_ntk, ntk_operator
from ntklab.precondition import FeatureDeflation
from ntklab.spectrum import ExtremeEig, Spectrum, dense_spectrum
from ntklab.theory import pl_mu
from ntklab.train import Callback, TrainState


class WeightMetrics(Callback):
    """weights/* (distance of W_t from W_0) and pl/ratio = ‖∇L(W_t)‖² / L(W_t), every epoch."""

    def __init__(self) -> None:
        self.W0: torch.Tensor | None = None  # (m, d), kept from the start (or the checkpoint)
        self.W0_norm = math.nan

    def on_train_start(self, state: TrainState) -> None:
        if self.W0 is None:
            self.W0 = state.model.W.detach().clone()
            self.W0_norm = float(self.W0.norm())

    def on_epoch_end(self, state: TrainState) -> None:
        diff = state.model.W.detach() - self.W0
        dist = float(diff.norm())
        grad_sq = sum(float(g.pow(2).sum()) for g in state.grads)
        state.metrics.update(
            {
                "weights/dist_from_init": dist,
                "weights/rel_dist_from_init": dist / self.W0_norm,
                "weights/max_neuron_dist": float(diff.norm(dim=1).max()),
                "pl/ratio": grad_sq / state.loss if state.loss > 0 else math.nan,
            }
        )

    def state_dict(self) -> dict[str, object]:
        return {} if self.W0 is None else {"W0": self.W0, "W0_norm": self.W0_norm}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "W0" in state:
            self.W0, self.W0_norm = state["W0"], float(state["W0_norm"])


def activation_pattern(model: OneHiddenLayer, X: torch.Tensor) -> torch.Tensor:
    """1[w_k·x_i ≥ 0], the side of the kink each (sample, neuron) is on: (n, m) bool."""
    with torch.no_grad():
        return X @ model.W.detach().T >= 0


class PatternChange(Callback):
    """activations/pattern_change: the fraction of (neuron, sample) pairs whose pre-activation
    sign differs from init, every epoch (leaky ReLU only: the linear net has no kink)."""

    def __init__(self) -> None:
        self.P0: torch.Tensor | None = None

    def on_train_start(self, state: TrainState) -> None:
        model = state.model
        has_kink = isinstance(model, OneHiddenLayer) and model.negative_slope != 1.0
        if self.P0 is None and has_kink:
            self.P0 = activation_pattern(model, state.X)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.P0 is not None:
            flipped = activation_pattern(state.model, state.X) != self.P0
            state.metrics["activations/pattern_change"] = float(flipped.double().mean())

    def state_dict(self) -> dict[str, object]:
        return {"P0": self.P0}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.P0 = state["P0"]


@dataclass
class InitialKernel:
    """K_0 measured once at start-up: its λ_max sets the theory step, and the tracker's epoch-0
    record reuses it. Dense methods keep K_0 and its spectrum; the matrix-free one keeps the
    Ritz vectors of λ_max, the next solve's warm start."""

    lambda_max: float
    K: torch.Tensor | None = None  # (n, n)
    spectrum: Spectrum | None = None
    vector: torch.Tensor | None = None  # (n, k)


def extreme_eig(
    op, X: torch.Tensor, largest: bool, tol: float, max_iter: int, v0=None, precond=None
) -> ExtremeEig:
    """λ_max or λ_min of the kernel behind `op` (u ↦ K u on X's n points) by the Davidson
    solver: the operator's fast products while iterating where it has them, exact ones to
    certify; `precond` steers the search for λ_min."""
    return davidson(
        op,
        X.shape[0],
        largest=largest,
        tol=tol,
        max_iter=max_iter,
        v0=v0,
        precond=precond,
        fast=getattr(op, "fast", None),
        device=X.device,
    )


def initial_kernel(
    model: nn.Module, X: torch.Tensor, method: Method, *, tol: float = 1e-4, max_iter: int = 500
) -> InitialKernel:
    """K_0 of `model` on X by `method` (resolved: not "auto"); `tol`, `max_iter` for the
    matrix-free solver."""
    if method.matrix_free:
        top = extreme_eig(ntk_operator(model, X), X, True, tol, max_iter)
        return InitialKernel(top.value, vector=top.block)
    K = empirical_ntk(model, X, method=method)
    spectrum = dense_spectrum(K)
    return InitialKernel(spectrum.lambda_max, K=K, spectrum=spectrum)


class NTKTracker(Callback):
    """K_t = JᵀJ every `every` epochs, or as often as a time `budget` allows (always at epoch 0
    and the last epoch; budget.TrackingSchedule): its extreme eigenvalues in float64, its
    relative change from K_0 and the PL constant μ_t; with a budget, the realised fraction.

    `method` is resolved (not "auto"). Dense methods form K and share it on the train state
    (state.K, state.K0, state.spectrum); "ntvp" never forms it: λ_max and λ_min come from the
    Davidson solver on u ↦ K u (tolerance `tol` on the relative residual, at most `max_iter`
    products, warm-started from the previous tracked epoch's Ritz vectors, λ_min's search
    steered by the inputs' polynomial features), each with its error bound, and
    ntk/rel_change is not logged (it needs K_t − K_0). `initial` is K_0 as measured at
    start-up, reused at epoch 0.
    """

    def __init__(
        self,
        method: Method,
        every: int = 1,
        *,
        tol: float = 1e-4,
        max_iter: int = 500,
        initial: InitialKernel | None = None,
        budget: float | None = None,
    ) -> None:
        self.method = Method(method)
        self.schedule = TrackingSchedule(every, budget)
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.K0: torch.Tensor | None = None
        self.vectors: dict[str, torch.Tensor] = {}  # warm starts: "max", "min"
        if initial is not None and initial.vector is not None:
            self.vectors["max"] = initial.vector
        self.initial = initial
        self.last: dict[str, float] = {}
        self.precond: FeatureDeflation | None = None  # λ_min's, built at its first solve
        self.alpha: float | None = None  # its calibration, when restored from a checkpoint

    def on_train_start(self, state: TrainState) -> None:
        if self.method.matrix_free and self.schedule.active:
            warnings.warn(
                f"ntk.method={self.method}: K is never formed, so ntk/rel_change "
                "(‖K_t − K_0‖_F / ‖K_0‖_F) is not logged",
                stacklevel=2,
            )

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.schedule.due(state):
            return
        with state.measuring():
            metrics = self._matrix_free(state) if self.method.matrix_free else self._dense(state)
        metrics["pl/mu"] = pl_mu(metrics["ntk/lambda_min"], state.n, output_scale(state.model))
        # κ is only meaningful when λ_min rises above round-off; otherwise it is not logged.
        if metrics["ntk/lambda_min_resolved"]:
            metrics["ntk/condition_number"] = metrics["ntk/lambda_max"] / metrics["ntk/lambda_min"]
        if self.schedule.budget is not None:
            metrics["ntk/tracking_fraction"] = self.schedule.fraction(state)
        state.metrics.update(metrics)
        self.last = metrics

    def _dense(self, state: TrainState) -> dict[str, float]:
        initial, self.initial = self.initial, None
        if initial is not None and initial.K is not None and state.epoch == 0 and self.K0 is None:
            K, spec = initial.K, initial.spectrum  # the parameters have not moved since
        else:
            K = empirical_ntk(state.model, state.X, method=self.method)
            spec = dense_spectrum(K)
        if self.K0 is None:
            self.K0 = K
        state.K, state.K0, state.spectrum = K, self.K0, spec
        return {
            "ntk/lambda_min": spec.lambda_min,
            "ntk/lambda_max": spec.lambda_max,
            "ntk/rel_change": float((K - self.K0).norm() / self.K0.norm()),
            "ntk/roundoff_floor": spec.roundoff,
            "ntk/lambda_min_resolved": float(spec.resolved),
        }

    def _preconditioner(self, X: torch.Tensor) -> FeatureDeflation:
        """λ_min's preconditioner: X is fixed, so one Gram matrix per run; its calibration
        comes back from the checkpoint when a run resumes."""
        if self.precond is None:
            self.precond = FeatureDeflation(X)
            if self.alpha is not None:
                self.precond.calibrate_to(self.alpha)
        return self.precond

    def _solve(self, op, X: torch.Tensor, largest: bool) -> ExtremeEig:
        key = "max" if largest else "min"
        precond = None if largest else self._preconditioner(X)
        eig = extreme_eig(op, X, largest, self.tol, self.max_iter, self.vectors.get(key), precond)
        self.vectors[key] = eig.block
        return eig

    def _matrix_free(self, state: TrainState) -> dict[str, float]:
        op = ntk_operator(state.model, state.X)
        top = self._solve(op, state.X, largest=True)
        bottom = self._solve(op, state.X, largest=False)
        converged = top.converged and bottom.converged
        if not converged:
            warnings.warn(
                f"epoch {state.epoch}: the eigensolver did not reach ntk.tol={self.tol:g} in "
                f"ntk.max_iter={self.max_iter} products (relative residuals "
                f"{top.residual / abs(top.value):.2g} for λ_max, "
                f"{bottom.residual / abs(bottom.value):.2g} for λ_min); "
                "raise ntk.max_iter or ntk.tol",
                stacklevel=2,
            )
        floor = state.n * torch.finfo(torch.float64).eps * abs(top.value)
        return {
            "ntk/lambda_min": bottom.value,
            "ntk/lambda_max": top.value,
            "ntk/lambda_min_err": max(bottom.error, floor),
            "ntk/lambda_max_err": max(top.error, floor),
            "ntk/roundoff_floor": floor,
            "ntk/lambda_min_resolved": float(bottom.value > floor),
            "ntk/eig_converged": float(converged),
            "ntk/eig_iterations": float(top.iterations + bottom.iterations),
        }

    def state_dict(self) -> dict[str, object]:
        return {
            "method": self.method.value,
            "K0": self.K0,
            "last": dict(self.last),
            "precond_alpha": None if self.precond is None else self.precond.alpha,
            **{f"v_{k}": v for k, v in self.vectors.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.K0 = state.get("K0")
        self.last = dict(state.get("last", {}))
        self.vectors = {k[2:]: v for k, v in state.items() if k.startswith("v_") and v is not None}
        self.alpha = state.get("precond_alpha")
