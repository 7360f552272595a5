"""Theory's numbers from a kernel's extreme eigenvalues: smoothness, PL constant, step sizes
and the one-step rate bound (docs/theory.md derives each).

Every function takes the loss scale α of `L = ‖α h − y‖² / (n α²)` (α = 1 is the plain MSE);
the kernel K is that of the output f = α h, so β and μ carry a 1/α².
"""

from __future__ import annotations


def smoothness(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """β = 2 λ_max(K) / (n α²): the MSE's smoothness near W (exact for the linear net)."""
    return 2.0 * lambda_max / (n * alpha**2)


def theory_lr(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """The theory step η = 1/β = n α² / (2 λ_max(K))."""
    return n * alpha**2 / (2.0 * lambda_max)


def cross_entropy_lr(lambda_max_full: float, n: int) -> float:
    """The theory step for the mean cross-entropy, 1/β = 2n / λ_max(K): β = λ_max(K)/(2n)
    bounds the Gauss–Newton curvature, K the full (n·k, n·k) kernel of the k logits, since the
    softmax's Hessian diag(p) − p pᵀ has eigenvalues ≤ 1/2 (Gershgorin: 2 p_a (1 − p_a))."""
    return 2.0 * n / lambda_max_full


def stability_lr(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """GD's stability limit 2/β = n α² / λ_max(K): on a quadratic GD diverges iff lr exceeds it."""
    return 2.0 * theory_lr(lambda_max, n, alpha)


def pl_mu(lambda_min: float, n: int, alpha: float = 1.0) -> float:
    """μ = 4 λ_min(K) / (n α²): ‖∇L‖² ≥ μ L holds exactly at every iterate."""
    return 4.0 * lambda_min / (n * alpha**2)


def rate_bound(
    lambda_min: float, lambda_max: float, n: int, lr: float, alpha: float = 1.0
) -> float:
    """The corrected per-step bound on L_{t+1}/L_t for one full-batch GD step of size lr from W_t.

    The descent lemma gives L_{t+1} ≤ L_t − g ‖∇L‖² with g = lr (1 − β lr / 2). Below the
    stability limit (g ≥ 0) the PL inequality ‖∇L‖² ≥ μ L gives 1 − μ g; above it (g < 0)
    ‖∇L‖² ≤ 2β L gives 1 − 2β g = (1 − β lr)², a bound above 1: no descent is promised.
    At lr = 1/β this is 1 − μ/(2β) = 1 − λ_min/λ_max. β, μ from K_t.
    """
    beta = smoothness(lambda_max, n, alpha)
    mu = pl_mu(max(lambda_min, 0.0), n, alpha)
    g = lr * (1.0 - beta * lr / 2.0)
    return 1.0 - mu * g if g >= 0 else 1.0 - 2.0 * beta * g


def rate_slide(lambda_min: float, lambda_max: float) -> float:
    """The lecture notes' constant 1 − μ/β = 1 − 2 λ_min/λ_max, claimed for lr = 1/β; the notes
    drop a factor 2 of the descent lemma (docs/theory.md), so it is not a bound."""
    return 1.0 - 2.0 * lambda_min / lambda_max
