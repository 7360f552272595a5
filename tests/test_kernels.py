"""The net's kernels in closed form (kernels.py): the infinite-width limits against Monte-Carlo
means of wide empirical kernels and against the known special cases, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ntklab.data import sphere_points
from ntklab.kernels import (
    infinite_width_ntk,
    infinite_width_output_ntk,
    model_ntk,
    model_ntk_inf,
)
from ntklab.models import OneHiddenLayer
from ntklab.ntk import jacobian_ntk

from reference import rel_err


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


def test_the_nets_limit_carries_its_options() -> None:
    """α² (K∞_W + K∞_out) with a trained NTK-parameterized output layer; no limit for the
    standard parameterization (its output-layer part grows like m); the mean of wide kernels."""
    X = _X()
    width, seeds = 20000, 4
    K = torch.zeros(6, 6, dtype=torch.float64)
    for s in range(seeds):
        model = OneHiddenLayer(
            5, width, "leaky_relu", 0.2, seed=s, dtype=torch.float64, train_output=True, alpha=2.0
        )
        K += model_ntk(model, X) / seeds
    K_inf = model_ntk_inf(model, X)
    assert torch.allclose(
        K_inf, 4.0 * (infinite_width_ntk(X, 0.2) + infinite_width_output_ntk(X, 0.2))
    )
    assert rel_err(K, K_inf) < 1.5e-2  # MC noise ~7e-3; leaving out K∞_out is 0.52 off
    std = OneHiddenLayer(5, 8, train_output=True, parameterization="standard")
    assert model_ntk_inf(std, X) is None


def test_angles_are_those_of_differences_for_every_pair() -> None:
    """θ_ij from one Gram product (and differences only for near-parallel pairs) equals θ from
    norms of differences for every pair, to 1e-15: random, crowded, repeated (θ = 0 exactly),
    opposite (θ = π) and zero points."""
    from ntklab.kernels import _angles

    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 3, generator=g, dtype=torch.float64)
    cases = [
        torch.randn(300, 16, generator=g, dtype=torch.float64),
        torch.randn(300, 3, generator=g, dtype=torch.float64) * 1e-3 + torch.tensor([1.0, 0, 0]),
        torch.cat([base, base * 2.5, -base, torch.zeros(2, 3, dtype=torch.float64)]),
    ]
    for X in cases:
        U = X / X.norm(dim=1, keepdim=True).clamp_min(1e-300)
        minus = torch.cdist(U, U, compute_mode="donot_use_mm_for_euclid_dist")
        plus = torch.cdist(U, -U, compute_mode="donot_use_mm_for_euclid_dist")
        ref = torch.atan2(minus * plus / 2, (plus.square() - minus.square()) / 4)
        zero = X.norm(dim=1) == 0
        ref[zero], ref[:, zero] = 0.0, 0.0
        G, N, theta = _angles(X)
        assert float((theta - ref).abs().max()) < 1e-15
        assert torch.equal(torch.diagonal(theta), torch.zeros(len(X), dtype=torch.float64))
        assert torch.equal(G, X @ X.T) and torch.allclose(
            N, torch.outer(X.norm(dim=1), X.norm(dim=1))
        )
    # a point and its negative are exactly π apart
    assert float(theta[0, 80]) == pytest.approx(math.pi, abs=1e-15)
