"""theory.py against explicit GD runs and closed forms, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ntklab.theory import (
    pl_mu,
    rate_bound,
    rate_slide,
    smoothness,
    stability_lr,
    theory_lr,
)

from reference import gd_losses


def test_step_sizes_and_pl_constant_with_output_scale() -> None:
    assert smoothness(4.0, 8) == 1.0
    assert theory_lr(4.0, 8) == 1.0 and stability_lr(4.0, 8) == 2.0
    assert pl_mu(2.0, 8) == 1.0
    assert theory_lr(4.0, 8, alpha=3.0) == 9.0
    assert pl_mu(2.0, 8, alpha=2.0) == 0.25


def test_rate_bound_closed_forms() -> None:
    lo, hi, n = 1.0, 10.0, 20
    beta, mu = smoothness(hi, n), pl_mu(lo, n)
    assert rate_bound(lo, hi, n, 1 / beta) == pytest.approx(1 - lo / hi)
    assert rate_bound(lo, hi, n, 1 / beta) == pytest.approx(1 - mu / (2 * beta))
    assert rate_slide(lo, hi) == pytest.approx(1 - mu / beta)
    eta = 0.3 / beta
    assert rate_bound(lo, hi, n, eta) == pytest.approx(1 - mu * eta * (1 - beta * eta / 2))
    assert rate_bound(lo, hi, n, 3 / beta) == pytest.approx((1 - 3) ** 2)
    assert rate_bound(lo, hi, n, 2 / beta) == pytest.approx(1.0)


def _least_squares(n: int = 8, d: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    lam = torch.linalg.eigvalsh(X @ X.T)
    return X, y, float(lam[0]), float(lam[-1])


@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0, 1.5, 1.95])
def test_gd_on_least_squares_respects_the_corrected_bound(fraction: float) -> None:
    X, y, lo, hi = _least_squares()
    n = X.shape[0]
    lr = fraction * theory_lr(hi, n)  # fraction of 1/β; 2/β is the stability limit
    L = gd_losses(X @ X.T, y, lr, 300)  # the linear net, in function space
    bound = rate_bound(lo, hi, n, lr)
    for a, b in zip(L, L[1:], strict=False):
        if a < 1e-25:
            break
        assert b / a <= bound * (1 + 1e-9)


def test_the_slides_constant_fails_on_least_squares() -> None:
    X, y, lo, hi = _least_squares()
    n, kappa = X.shape[0], hi / lo
    L = gd_losses(X @ X.T, y, theory_lr(hi, n), 4000)
    # the slowest mode's rate (1 − 1/κ)², read once it dominates and before round-off
    tail = [b / a for a, b in zip(L, L[1:], strict=False) if 1e-24 < b < 1e-12]
    assert tail, "no clean tail"
    assert tail[-1] == pytest.approx((1 - 1 / kappa) ** 2, rel=1e-6)
    assert tail[-1] > rate_slide(lo, hi)
    assert tail[-1] <= rate_bound(lo, hi, n, theory_lr(hi, n))
