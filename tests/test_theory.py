"""theory.py against Monte-Carlo averages, explicit GD runs and closed forms, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ntklab.data import sphere_points
from ntklab.models import OneHiddenLayer
from ntklab.ntk import jacobian_ntk
from ntklab.theory import (
    infinite_width_ntk,
    infinite_width_output_ntk,
    loglog_slope,
    pl_mu,
    rate_bound,
    rate_slide,
    smoothness,
    stability_lr,
    theory_lr,
)


def _X(n: int = 6, d: int = 5, seed: int = 0) -> torch.Tensor:
    return sphere_points(n, d, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_infinite_width_kernel_is_the_mean_of_wide_empirical_kernels(eps: float) -> None:
    X = _X() * torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])[:, None]  # not only unit norms
    width, seeds = 20000, 8
    K = torch.zeros(6, 6, dtype=torch.float64)
    for s in range(seeds):
        model = OneHiddenLayer(5, width, "leaky_relu", eps, seed=s, dtype=torch.float64)
        # the slow reference: an explicit Jacobian contraction, not the closed form
        K += jacobian_ntk(model, X) / seeds
    K_inf = infinite_width_ntk(X, eps)
    # E[K_0] = K∞ at any width; the mean over 1.6e5 neurons lands ~2e-3 from it, while
    # dropping the ε² term would be 1e-2 off at ε = 0.1
    assert float((K - K_inf).norm() / K_inf.norm()) < 5e-3


def test_infinite_width_kernel_of_the_linear_net_is_the_gram_matrix() -> None:
    X = _X()
    assert torch.allclose(infinite_width_ntk(X, 1.0), X @ X.T, atol=1e-14)
    assert torch.allclose(infinite_width_output_ntk(X, 1.0), X @ X.T, atol=1e-14)


def test_infinite_width_relu_kernel_matches_du_et_al() -> None:
    # ε = 0: H∞_ij = x_i·x_j (π − θ_ij)/(2π)
    X = _X()
    G = X @ X.T
    theta = torch.arccos((G).clamp(-1, 1))
    assert torch.allclose(infinite_width_ntk(X, 0.0), G * (math.pi - theta) / (2 * math.pi))


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_output_layer_limit_is_the_mean_of_phi_phi_t(eps: float) -> None:
    X = _X()
    g = torch.Generator().manual_seed(3)
    m = 400000
    W = torch.randn(m, 5, generator=g, dtype=torch.float64)
    Z = X @ W.T
    Phi = torch.where(Z >= 0, Z, eps * Z)
    K = Phi @ Phi.T / m
    K_inf = infinite_width_output_ntk(X, eps)
    assert float((K - K_inf).norm() / K_inf.norm()) < 1e-2


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


def _gd_losses(X, y, lr: float, steps: int) -> list[float]:
    # the linear net's function space: f ← f − (2 lr / n) X Xᵀ (f − y), L = ‖f − y‖²/n
    n = X.shape[0]
    K = X @ X.T
    r = -y.clone()
    losses = [float(r @ r) / n]
    for _ in range(steps):
        r = r - 2 * lr / n * (K @ r)
        losses.append(float(r @ r) / n)
    return losses


@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0, 1.5, 1.95])
def test_gd_on_least_squares_respects_the_corrected_bound(fraction: float) -> None:
    X, y, lo, hi = _least_squares()
    n = X.shape[0]
    lr = fraction * theory_lr(hi, n)  # fraction of 1/β; 2/β is the stability limit
    L = _gd_losses(X, y, lr, 300)
    bound = rate_bound(lo, hi, n, lr)
    for a, b in zip(L, L[1:], strict=False):
        if a < 1e-25:
            break
        assert b / a <= bound * (1 + 1e-9)


def test_the_slides_constant_fails_on_least_squares() -> None:
    X, y, lo, hi = _least_squares()
    n, kappa = X.shape[0], hi / lo
    L = _gd_losses(X, y, theory_lr(hi, n), 4000)
    # the slowest mode's rate (1 − 1/κ)², read once it dominates and before round-off
    tail = [b / a for a, b in zip(L, L[1:], strict=False) if 1e-24 < b < 1e-12]
    assert tail, "no clean tail"
    assert tail[-1] == pytest.approx((1 - 1 / kappa) ** 2, rel=1e-6)
    assert tail[-1] > rate_slide(lo, hi)
    assert tail[-1] <= rate_bound(lo, hi, n, theory_lr(hi, n))


def test_loglog_slope_recovers_a_power_law() -> None:
    x = [16, 64, 256, 1024]
    assert loglog_slope(x, [3.0 * m**-0.5 for m in x]) == pytest.approx(-0.5)
    assert loglog_slope(x, [m**0.75 for m in x]) == pytest.approx(0.75)
