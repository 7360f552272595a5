"""Callbacks that measure the state of the net: how far the weights moved, which activations
flipped, the empirical NTK K_t with its extreme eigenvalues and the PL constant, and for k
outputs the full kernel's extreme eigenvalues and the accuracy."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ntklab.budget import TrackingSchedule
from ntklab.davidson import davidson
from ntklab.losses import accuracy
from ntklab.models import MLP, OneHiddenLayer, output_scale
from ntklab.ntk import Method, empirical_ntk, full_matrix, ntk_operator, output_trace
from ntklab.precondition import FeatureDeflation
from ntklab.spectrum import ExtremeEig, Spectrum, dense_spectrum
from ntklab.theory import pl_mu
from ntklab.train import Callback, TrainState


def _trained(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach() for p in model.parameters() if p.requires_grad]


def _neurons(model: nn.Module) -> list[bool]:
    """Which trained tensors hold neurons' incoming weights as rows: an MLP's hidden layers,
    every tensor with two or more dimensions of any other module."""
    hidden = {id(W) for W in model.hidden} if isinstance(model, MLP) else None
    params = [p for p in model.parameters() if p.requires_grad]
    return [p.ndim >= 2 if hidden is None else id(p) in hidden for p in params]


def _distances(model: nn.Module, then: list[torch.Tensor]) -> tuple[float, float]:
    """‖θ_t − θ_0‖ over every trained tensor, and the largest movement of one neuron's incoming
    weights (`_neurons`; NaN when there is none)."""
    diffs = [a - b for a, b in zip(_trained(model), then, strict=True)]
    dist = float(torch.cat([d.reshape(-1) for d in diffs]).norm())
    rows = [
        d.reshape(d.shape[0], -1).norm(dim=1).max()
        for d, neuron in zip(diffs, _neurons(model), strict=True)
        if neuron
    ]
    return dist, float(max(rows)) if rows else math.nan


class WeightMetrics(Callback):
    """weights/* (distance from init) and, with `pl`, pl/ratio = ‖∇L(W_t)‖² / L(W_t), every epoch.

    The weights are a OneHiddenLayer's W (docs/theory.md's W_t), and every trained parameter
    of any other model; weights/max_neuron_dist is the largest movement of one neuron's
    incoming weights (a row of W, of an MLP's hidden layers, or of any parameter with two or
    more dimensions of another module)."""

    def __init__(self, pl: bool = True) -> None:
        self.pl = bool(pl)
        # W_0 (m, d) of a OneHiddenLayer, else every trained tensor at init; kept from the start
        # (or the checkpoint)
        self.W0: torch.Tensor | list[torch.Tensor] | None = None
        self.W0_norm = math.nan

    def on_train_start(self, state: TrainState) -> None:
        if self.W0 is not None:
            return
        if isinstance(state.model, OneHiddenLayer):
            self.W0 = state.model.W.detach().clone()
            self.W0_norm = float(self.W0.norm())
        else:
            self.W0 = [p.clone() for p in _trained(state.model)]
            self.W0_norm = float(torch.cat([p.reshape(-1) for p in self.W0]).norm())

    def on_epoch_end(self, state: TrainState) -> None:
        if isinstance(self.W0, torch.Tensor):
            diff = state.model.W.detach() - self.W0
            dist, largest = float(diff.norm()), float(diff.norm(dim=1).max())
        else:
            dist, largest = _distances(state.model, self.W0)
        state.metrics.update(
            {
                "weights/dist_from_init": dist,
                "weights/rel_dist_from_init": dist / self.W0_norm,
                "weights/max_neuron_dist": largest,
            }
        )
        if self.pl:
            grad_sq = sum(float(g.pow(2).sum()) for g in state.grads)
            state.metrics["pl/ratio"] = grad_sq / state.loss if state.loss > 0 else math.nan

    def state_dict(self) -> dict[str, object]:
        return {} if self.W0 is None else {"W0": self.W0, "W0_norm": self.W0_norm}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "W0" in state:
            self.W0, self.W0_norm = state["W0"], float(state["W0_norm"])


def activation_pattern(model: OneHiddenLayer | MLP, X: torch.Tensor) -> torch.Tensor:
    """1[w_k·x_i ≥ 0], the side of the kink each (sample, neuron) is on: (n, m) bool; for an
    MLP every hidden layer's neurons side by side, (n, L·m)."""
    with torch.no_grad():
        if isinstance(model, MLP):
            return torch.cat([H >= 0 for H in model.preactivations(X)], dim=1)
        return X @ model.W.detach().T >= 0


def has_kink(model: nn.Module) -> bool:
    """A piecewise-linear net that is not linear: leaky ReLU or ReLU."""
    if isinstance(model, MLP):
        return model.act.piecewise_linear and model.negative_slope != 1.0
    return isinstance(model, OneHiddenLayer) and model.negative_slope != 1.0


class PatternChange(Callback):
    """activations/pattern_change: the fraction of (neuron, sample) pairs whose pre-activation
    sign differs from init, every epoch ((leaky) ReLU nets only: others have no kink)."""

    def __init__(self) -> None:
        self.P0: torch.Tensor | None = None

    def on_train_start(self, state: TrainState) -> None:
        model = state.model
        if self.P0 is None and has_kink(model):
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
    record reuses it. Dense methods keep K_0 and its spectrum (for k outputs tracked in full,
    K_0 is the trace, and the full kernel and its spectrum are kept beside it); the matrix-free
    one keeps the Ritz vectors of λ_max, the next solve's warm start."""

    lambda_max: float
    K: torch.Tensor | None = None  # (n, n)
    spectrum: Spectrum | None = None
    vector: torch.Tensor | None = None  # (n, b): b Ritz vectors
    K_full: torch.Tensor | None = None  # (n, n, k, k)
    full: Spectrum | None = None  # of the (n·k, n·k) matrix of K_full's blocks


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
    model: nn.Module,
    X: torch.Tensor,
    method: Method,
    *,
    tol: float = 1e-4,
    max_iter: int = 500,
    output: str | None = None,
) -> InitialKernel:
    """K_0 of `model` on X by `method` (resolved: not "auto"); `tol`, `max_iter` for the
    matrix-free solver; `output="full"` for a model with k outputs (dense methods only)."""
    if method.matrix_free:
        top = extreme_eig(ntk_operator(model, X), X, True, tol, max_iter)
        return InitialKernel(top.value, vector=top.block)
    K = empirical_ntk(model, X, method=method, output=output)
    K_full = full = None
    if K.ndim == 4:
        K_full, K = K, output_trace(K)
        full = dense_spectrum(full_matrix(K_full))
    spectrum = dense_spectrum(K)
    return InitialKernel(spectrum.lambda_max, K=K, spectrum=spectrum, K_full=K_full, full=full)


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
    start-up, reused at epoch 0. `output="full"` (a model with k outputs, dense methods)
    tracks the trace kernel and puts the full (n, n, k, k) one on the state (state.K_full);
    `pl=False` leaves out pl/mu (a loss other than the MSE)."""

    def __init__(
        self,
        method: Method,
        every: int = 1,
        *,
        tol: float = 1e-4,
        max_iter: int = 500,
        initial: InitialKernel | None = None,
        output: str | None = None,
        pl: bool = True,
        budget: float | None = None,
    ) -> None:
        self.method = Method(method)
        self.output, self.pl = output, bool(pl)
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
        # Below its round-off floor λ_min is zero to working precision: K is positive
        # semi-definite, so it is logged as max(λ_min, 0), never as a negative eigenvalue, and
        # ntk/lambda_min_resolved = 0 says so. μ and κ are then not logged at all.
        if metrics["ntk/lambda_min_resolved"]:
            if self.pl:
                alpha = output_scale(state.model)
                metrics["pl/mu"] = pl_mu(metrics["ntk/lambda_min"], state.n, alpha)
            metrics["ntk/condition_number"] = metrics["ntk/lambda_max"] / metrics["ntk/lambda_min"]
        else:
            metrics["ntk/lambda_min"] = max(metrics["ntk/lambda_min"], 0.0)
        if self.schedule.budget is not None:
            metrics["ntk/tracking_fraction"] = self.schedule.fraction(state)
        state.metrics.update(metrics)
        self.last = metrics

    def _dense(self, state: TrainState) -> dict[str, float]:
        initial, self.initial = self.initial, None
        if initial is not None and initial.K is not None and state.epoch == 0 and self.K0 is None:
            K, spec = initial.K, initial.spectrum  # the parameters have not moved since
            state.K_full = initial.K_full
        else:
            K = empirical_ntk(state.model, state.X, method=self.method, output=self.output)
            if K.ndim == 4:
                state.K_full, K = K, output_trace(K)
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


class FullKernel(Callback):
    """ntk/full_lambda_min, ntk/full_lambda_max: the extreme eigenvalues of the k-output kernel
    as the (n·k, n·k) matrix of its k × k blocks (float64 `eigvalsh`), on the epochs the tracker
    put K_full on the state; `initial` (K_0's, measured at start-up) is reused at epoch 0."""

    def __init__(self, initial: InitialKernel | None = None) -> None:
        self.initial = initial

    def on_epoch_end(self, state: TrainState) -> None:
        if state.K_full is None:
            return
        initial, self.initial = self.initial, None
        reuse = initial is not None and initial.full is not None and state.epoch == 0
        spec = initial.full if reuse else dense_spectrum(full_matrix(state.K_full))
        state.metrics["ntk/full_lambda_min"] = spec.lambda_min
        state.metrics["ntk/full_lambda_max"] = spec.lambda_max


class Accuracy(Callback):
    """accuracy/train: the fraction of samples whose largest logit is their label, every epoch."""

    def on_epoch_end(self, state: TrainState) -> None:
        state.metrics["accuracy/train"] = accuracy(state.model, state.X, state.y)


class KernelStep(Callback):
    """K_{t−1}, the kernel one epoch before each tracked epoch t, for the kernel's velocity
    (diagnostics.KernelGeometry): put on the state as state.K_before. With ntk.every = 1 it is
    the previous tracked kernel; otherwise the trained parameters of epoch t − 1 are kept (when
    t will be tracked) and the kernel is computed at them, one more kernel per tracked epoch. A
    velocity measured over one epoch does not depend on how often the kernel is tracked. With
    a time `budget` (ntk.budget) whether t will be tracked is known only at t, so the parameters
    are kept at every epoch that precedes one the tracker may measure and that was not itself
    tracked; the extra kernel counts as tracking time. Dense methods only; runs after the
    NTKTracker."""

    def __init__(
        self, method: Method, every: int, output: str | None = None, budget: float | None = None
    ) -> None:
        self.method, self.every, self.output = Method(method), int(every), output
        self.budget = budget
        self.previous: torch.Tensor | None = None  # the last tracked K (every = 1)
        self.previous_epoch = -1
        self.snapshot: list[torch.Tensor] | None = None  # parameters of epoch t − 1
        self.snapshot_epoch = -1

    def _tracked(self, epoch: int, epochs: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch == epochs)

    def on_epoch_end(self, state: TrainState) -> None:
        state.K_before = None
        if state.K is not None and not self.method.matrix_free:
            if self.previous is not None and self.previous_epoch == state.epoch - 1:
                state.K_before = self.previous
            elif self.snapshot is not None and self.snapshot_epoch == state.epoch - 1:
                with state.measuring():
                    state.K_before = self._kernel_at(state, self.snapshot)
            if self.every == 1:
                self.previous, self.previous_epoch = state.K, state.epoch
        untracked = self.budget is not None and self.previous_epoch != state.epoch
        keep = (self.every > 1 or untracked) and self._tracked(state.epoch + 1, state.epochs)
        self.snapshot = [p.detach().clone() for p in _trained(state.model)] if keep else None
        self.snapshot_epoch = state.epoch if keep else -1

    def _kernel_at(self, state: TrainState, params: list[torch.Tensor]) -> torch.Tensor:
        """The kernel with the trained parameters set to `params` (then put back, bitwise)."""
        trained = _trained(state.model)
        now = [p.detach().clone() for p in trained]
        with torch.no_grad():
            for p, q in zip(trained, params, strict=True):
                p.copy_(q)
        try:
            K = empirical_ntk(state.model, state.X, method=self.method, output=self.output)
        finally:
            with torch.no_grad():
                for p, q in zip(trained, now, strict=True):
                    p.copy_(q)
        return output_trace(K) if K.ndim == 4 else K

    def state_dict(self) -> dict[str, object]:
        return {
            "previous": self.previous,
            "previous_epoch": self.previous_epoch,
            "snapshot": self.snapshot,
            "snapshot_epoch": self.snapshot_epoch,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.previous, self.previous_epoch = state["previous"], int(state["previous_epoch"])
        self.snapshot, self.snapshot_epoch = state["snapshot"], int(state["snapshot_epoch"])
