"""Extreme eigenvalues of a symmetric kernel in float64: dense, and matrix-free by Lanczos."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of K (ascending, float64) and what of them rises above round-off."""

    eigenvalues: torch.Tensor  # (n,)
    roundoff: float  # |λ| at or below this is indistinguishable from 0 at K's precision

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def resolved(self) -> bool:
        """False when λ_min is round-off (a rank-deficient or numerically singular K)."""
        return self.lambda_min > self.roundoff


def roundoff_floor(K: torch.Tensor, lambda_max: float) -> float:
    """n · eps(K.dtype) · λ_max: the size of eigenvalue errors K's own rounding can make."""
    return K.shape[0] * torch.finfo(K.dtype).eps * abs(lambda_max)


def dense_spectrum(K: torch.Tensor) -> Spectrum:
    """All eigenvalues of symmetric K (n, n) by float64 `eigvalsh`, on K's device."""
    eig = torch.linalg.eigvalsh(K.to(torch.float64))
    return Spectrum(eig, roundoff_floor(K, float(eig[-1])))


@dataclass(frozen=True)
class ExtremeEig:
    """One extreme eigenpair from a matrix-free solve, and whether it met its tolerance."""

    value: float  # the Ritz value θ (for the smallest end an upper bound on λ_min)
    vector: torch.Tensor  # (n,) unit Ritz vector, float64: the next solve's warm start
    residual: float  # ‖K x − θ x‖ with exact products: some eigenvalue of K lies within it of θ
    iterations: int  # products u ↦ K u spent
    converged: bool  # residual ≤ tol · |θ|
    gap: float = math.nan  # estimated distance from θ to the rest of K's spectrum, if known
    block: torch.Tensor | None = None  # (n, k) Ritz vectors nearest θ, the next warm start

    @property
    def error(self) -> float:
        """A bound on θ's error: the residual norm r (some eigenvalue of K lies within r of θ),
        or the sharper r²/gap (Kato–Temple) where the next Ritz pair has converged as well and
        gives a gap estimate (`ritz_gap`). It bounds the error in the extreme eigenvalue once
        the solve has resolved that end of the spectrum; at an end holding a cluster of
        eigenvalues wider than r that the subspace has not resolved, θ can sit inside it with
        the extreme one further than r away (tests/test_davidson.py shows both cases). At the
        bottom θ ≥ λ_min always: θ is a Rayleigh quotient."""
        if self.gap > self.residual:  # False for nan
            return self.residual**2 / self.gap
        return self.residual


def _ritz(
    alpha: list[float], beta: list[float], largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values and vectors of the Lanczos tridiagonal T (k, k), the wanted end first."""
    a = torch.tensor(alpha, dtype=torch.float64)
    T = torch.diag(a)
    if len(alpha) > 1:
        b = torch.tensor(beta[: len(alpha) - 1], dtype=torch.float64)
        T += torch.diag(b, 1) + torch.diag(b, -1)
    theta, Y = torch.linalg.eigh(T)
    return (theta.flip(0), Y.flip(1)) if largest else (theta, Y)


def ritz_gap(theta: torch.Tensor, res: torch.Tensor, largest: bool, tol: float) -> float:
    """Estimated distance from the first Ritz value to the rest of K's spectrum: to the next
    Ritz value, less that one's residual. Only where the next Ritz pair has converged to `tol`
    itself (an unconverged one sits above eigenvalues not yet resolved, e.g. the rest of a
    cluster), it overlaps no other, and it exceeds the residual; else nan (no sharpening)."""
    if theta.shape[0] < 2 or float(res[1]) > tol * abs(float(theta[1])):
        return math.nan
    gap = float(theta[0] - theta[1] - res[1]) if largest else float(theta[1] - res[1] - theta[0])
    return gap if gap > float(res[0]) else math.nan


def lanczos(
    apply: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    largest: bool,
    tol: float = 1e-6,
    max_iter: int = 300,
    v0: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> ExtremeEig:
    """The largest (or smallest) eigenpair of symmetric K, given only u ↦ K u, by Lanczos with
    full reorthogonalisation in float64. Stops when ‖K x − θ x‖ ≤ tol·|θ| or after `max_iter`
    products; `v0` (e.g. the previous epoch's eigenvector) warm-starts it. Memory n·max_iter."""
    if v0 is None:
        g = torch.Generator().manual_seed(seed)
        v0 = torch.randn(n, generator=g, dtype=torch.float64)
    q = v0.to(device=device, dtype=torch.float64).reshape(n)
    q = q / q.norm()
    k_max = max(1, min(max_iter, n))
    Q = torch.empty(k_max, n, dtype=torch.float64, device=q.device)
    alpha: list[float] = []
    beta: list[float] = []
    for j in range(k_max):
        Q[j] = q
        w = apply(q).to(torch.float64)
        alpha.append(float(q @ w))
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        beta.append(b)
        # T's eigh costs O(j³): test convergence at every step early, then every ~j/8 steps.
        last = b <= 1e-300 or j + 1 == k_max
        if last or j < 16 or j % max(1, j // 8) == 0:
            thetas, Y = _ritz(alpha, beta, largest)
            residuals = (b * Y[-1]).abs()  # ‖K x_i − θ_i x_i‖ = |β_j y_i[-1]|
            theta, res = float(thetas[0]), float(residuals[0])
            if res <= tol * abs(theta) or last:
                break
        q = w / b
    x = Q[: len(alpha)].T @ Y[:, 0].to(Q.device)
    gap = ritz_gap(thetas, residuals, largest, tol)
    return ExtremeEig(theta, x / x.norm(), res, len(alpha), res <= tol * abs(theta), gap)
