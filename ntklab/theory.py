"""Theory's numbers for a kernel K: the PL constant, the theory step size and its bounds."""

from __future__ import annotations


def smoothness(lambda_max: float, n: int) -> float:
    """β = 2 λ_max(K) / n: the MSE's smoothness near W (exact for the linear net)."""
    return 2.0 * lambda_max / n


def theory_lr(lambda_max: float, n: int) -> float:
    """The theory step η = 1/β = n / (2 λ_max(K))."""
    return n / (2.0 * lambda_max)


def pl_mu(lambda_min: float, n: int) -> float:
    """μ = 4 λ_min(K) / n: ‖∇L‖² ≥ μ L holds exactly at every iterate (THEORY.md, identity 3)."""
    return 4.0 * lambda_min / n
