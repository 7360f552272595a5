"""Theory's numbers for a kernel K: the infinite-width kernel, PL constant, step sizes, rates.

Every function takes the loss scale α of `L = ‖α h − y‖² / (n α²)` (α = 1 is THEORY.md's
MSE); the kernel K is that of the output f = α h, so β and μ carry a 1/α².
"""

from __future__ import annotations

import math

import torch


def smoothness(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """β = 2 λ_max(K) / (n α²): the MSE's smoothness near W (exact for the linear net)."""
    return 2.0 * lambda_max / (n * alpha**2)


def theory_lr(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """The theory step η = 1/β = n α² / (2 λ_max(K))."""
    return n * alpha**2 / (2.0 * lambda_max)


def stability_lr(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """GD's stability limit 2/β = n α² / λ_max(K): on a quadratic GD diverges iff lr exceeds it."""
    return 2.0 * theory_lr(lambda_max, n, alpha)


def pl_mu(lambda_min: float, n: int, alpha: float = 1.0) -> float:
    """μ = 4 λ_min(K) / (n α²): ‖∇L‖² ≥ μ L holds exactly at every iterate (THEORY.md, 3)."""
    return 4.0 * lambda_min / (n * alpha**2)


def rate_bound(
    lambda_min: float, lambda_max: float, n: int, lr: float, alpha: float = 1.0
) -> float:
    """The corrected per-step bound on L_{t+1}/L_t for one full-batch GD step of size lr from W_t.

    The descent lemma gives L_{t+1} ≤ L_t − g ‖∇L‖² with g = lr (1 − β lr / 2). Below the
    stability limit (g ≥ 0) the PL inequality ‖∇L‖² ≥ μ L gives 1 − μ g; above it (g < 0)
    ‖∇L‖² ≤ 2β L gives 1 − 2β g = (1 − β lr)², a bound above 1: no descent is promised.
    At lr = 1/β this is 1 − μ/(2β) = 1 − λ_min/λ_max. β, μ from K_t (THEORY.md).
    """
    beta = smoothness(lambda_max, n, alpha)
    mu = pl_mu(max(lambda_min, 0.0), n, alpha)
    g = lr * (1.0 - beta * lr / 2.0)
    return 1.0 - mu * g if g >= 0 else 1.0 - 2.0 * beta * g


def rate_slide(lambda_min: float, lambda_max: float) -> float:
    """The slide's constant 1 − μ/β = 1 − 2 λ_min/λ_max (claimed for lr = 1/β; a factor 2 off)."""
    return 1.0 - 2.0 * lambda_min / lambda_max


def _angles(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gram G = X Xᵀ, norms product N_ij = ‖x_i‖‖x_j‖ and angles θ_ij ∈ [0, π], all (n, n)."""
    G = X @ X.T
    norms = X.norm(dim=1)
    N = norms[:, None] * norms[None, :]
    cos = torch.where(N > 0, G / N.clamp_min(torch.finfo(X.dtype).tiny), torch.ones_like(G))
    return G, N, torch.arccos(cos.clamp(-1.0, 1.0))


def infinite_width_ntk(X: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """K∞_ij = (x_i·x_j)[(π − θ_ij)(1 + ε²)/(2π) + ε θ_ij/π] (THEORY.md, 5): (n, n), float64.

    The m → ∞ limit (and, for Rademacher v with ‖v‖² = 1, the exact mean over inits) of the
    W-part of the kernel for w ~ N(0, I). ε = 1 (the linear net) gives X Xᵀ.
    """
    X = X.to(torch.float64)
    eps = float(negative_slope)
    G, _, theta = _angles(X)
    return G * ((math.pi - theta) * (1 + eps**2) / (2 * math.pi) + eps * theta / math.pi)


def infinite_width_output_ntk(X: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """The output layer's part E_w[σ(w·x_i) σ(w·x_j)], w ~ N(0, I): (n, n), float64.

    The NTK-parameterized limit of (1/m) Σ_k σ(w_k·x_i) σ(w_k·x_j). With σ(z) = εz + (1−ε)relu(z)
    it is ε(x_i·x_j) + (1−ε)² ‖x_i‖‖x_j‖ (sin θ + (π − θ) cos θ)/(2π) (arc-cosine kernel).
    """
    X = X.to(torch.float64)
    eps = float(negative_slope)
    G, N, theta = _angles(X)
    arccos1 = N * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    return eps * G + (1 - eps) ** 2 * arccos1


def loglog_slope(x: list[float] | torch.Tensor, y: list[float] | torch.Tensor) -> float:
    """Least-squares slope of log y against log x: the exponent p of a power law y ∝ x^p."""
    lx = torch.log(torch.as_tensor(x, dtype=torch.float64))
    ly = torch.log(torch.as_tensor(y, dtype=torch.float64))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())
