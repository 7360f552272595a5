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
    residual: float  # ‖K x − θ x‖: some eigenvalue of K lies within it of θ
    iterations: int  # products u ↦ K u spent
    converged: bool  # residual ≤ tol · |θ|


def _ritz(alpha: list[float], beta: list[float], largest: bool) -> tuple[float, torch.Tensor]:
    """Extreme eigenpair of the Lanczos tridiagonal T (k, k)."""
    a = torch.tensor(alpha, dtype=torch.float64)
    T = torch.diag(a)
    if len(alpha) > 1:
        b = torch.tensor(beta[: len(alpha) - 1], dtype=torch.float64)
        T += torch.diag(b, 1) + torch.diag(b, -1)
    theta, Y = torch.linalg.eigh(T)
    i = -1 if largest else 0
    return float(theta[i]), Y[:, i]


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
    theta, y, res = math.nan, None, math.inf
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
            theta, y = _ritz(alpha, beta, largest)
            res = abs(b * float(y[-1]))
            if res <= tol * abs(theta) or last:
                break
        q = w / b
    x = Q[: len(alpha)].T @ y.to(Q.device)
    return ExtremeEig(theta, x / x.norm(), res, len(alpha), res <= tol * abs(theta))
