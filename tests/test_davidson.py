"""The Davidson solver against dense float64 eigvalsh: its values, its error bounds (they must
cover the true error on well- and ill-conditioned, clustered kernels), its fast/exact split,
warm starts, restarts and reported failures."""

from __future__ import annotations

import pytest
import torch

from ntklab.data import make_synthetic
from ntklab.davidson import davidson
from ntklab.fixedpoint import PatternOperator
from ntklab.models import OneHiddenLayer
from ntklab.precondition import FeatureDeflation
from ntklab.spectrum import lanczos
from ntklab.structured import structured_ntk

from reference import F64, clustered_kernel


def ntk(n: int = 150, d: int = 8, m: int = 300):
    """An NTK's exact product (with its fast one), the dense K, and its inputs."""
    X, _ = make_synthetic("sphere", n, d, seed=0)
    model = OneHiddenLayer(d, m, seed=2, dtype=F64)
    op = PatternOperator(X, model.W, model.v, 0.1)
    return op, structured_ntk(X, model.W.detach(), model.v, 0.1), X


def dense(K: torch.Tensor):
    return lambda U: K @ U


def floor(ev: torch.Tensor) -> float:
    """The reference's own uncertainty: eigvalsh is backward stable to about n·eps·‖K‖."""
    return ev.shape[0] * torch.finfo(F64).eps * float(ev.abs().max())


@pytest.mark.parametrize("largest", [True, False])
def test_the_ntk_extremes_match_eigvalsh(largest: bool) -> None:
    op, K, X = ntk()
    ev = torch.linalg.eigvalsh(K)
    ref = float(ev[-1] if largest else ev[0])
    eig = davidson(op, 150, largest=largest, tol=1e-9, fast=op.fast, precond=FeatureDeflation(X))
    assert eig.converged
    assert abs(eig.value - ref) <= 1e-9 * abs(ref)
    # the reported residual is the exact one, and the vectors are K's
    x = eig.vector
    assert float((K @ x - eig.value * x).norm()) == pytest.approx(eig.residual, rel=1e-3, abs=1e-13)
    assert eig.block.shape == (150, 8) and torch.allclose(eig.block[:, 0], x)


KERNELS = {
    "ntk": lambda: ntk()[1],
    "clustered_1e4": lambda: clustered_kernel(kappa=1e4),
    "clustered_1e8": lambda: clustered_kernel(kappa=1e8),
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-7])
@pytest.mark.parametrize("largest", [True, False])
def test_the_error_bound_covers_the_true_error(kernel: str, tol: float, largest: bool) -> None:
    """|θ − λ| ≤ error for Davidson and Lanczos, on an NTK and on kernels with κ = 1e4 and 1e8
    whose bottom holds 20 eigenvalues within 1%; at the bottom θ is also an upper bound."""
    K = KERNELS[kernel]()
    ev = torch.linalg.eigvalsh(K)
    ref, n = float(ev[-1] if largest else ev[0]), K.shape[0]
    for eig in (
        davidson(dense(K), n, largest=largest, tol=tol, max_iter=400),
        lanczos(dense(K), n, largest=largest, tol=tol, max_iter=400),
    ):
        assert eig.converged
        assert abs(eig.value - ref) <= eig.error + floor(ev)
        assert eig.error <= eig.residual <= tol * abs(eig.value)
        if not largest:
            assert eig.value >= ref - floor(ev)


def test_an_unresolved_cluster_bounds_the_distance_to_one_of_its_eigenvalues() -> None:
    """The documented limit: 20 eigenvalues within 0.1% at the bottom, tol = 1e-4. Both solvers
    stop inside the cluster before resolving it; the residual then bounds the distance to an
    eigenvalue of the cluster but not to λ_min, and θ still lies above λ_min, in the cluster."""
    K = clustered_kernel(n=120, kappa=1e2, size=20, width=1e-3)
    ev = torch.linalg.eigvalsh(K)
    for solve in (davidson, lanczos):
        eig = solve(dense(K), 120, largest=False, tol=1e-4, max_iter=120)
        assert eig.converged and eig.error == eig.residual  # no converged neighbour, no gap
        assert float((ev - eig.value).abs().min()) <= eig.error
        assert ev[0] <= eig.value <= ev[19] and eig.value - float(ev[0]) > eig.error


def test_a_converged_neighbour_sharpens_the_bound() -> None:
    """λ_max = 10 and λ_2 = 5 above a bulk in [1e-5, 1e-2]: once the second Ritz pair has
    converged too, the bound is r²/gap, below r, and it still covers the error. (With the bulk
    up to 1 the solve stops, λ_max converged, before λ_2 has: no gap, the bound stays r.)"""
    K = clustered_kernel(n=120, kappa=1e3)
    w, Q = torch.linalg.eigh(K)
    w = w * 0.01
    w[-2:] = torch.tensor([5.0, 10.0], dtype=F64)
    K = (Q * w) @ Q.T
    for solve in (davidson, lanczos):
        eig = solve(dense(K), 120, largest=True, tol=1e-6)
        assert eig.gap == pytest.approx(5.0, rel=1e-5)
        assert eig.error == pytest.approx(eig.residual**2 / eig.gap) and eig.error < eig.residual
        assert abs(eig.value - 10.0) <= eig.error + floor(w)


def test_inaccurate_fast_products_hand_over_to_exact_ones() -> None:
    """Fast products with a 1e-6 relative error cannot reach tol=1e-11: the solve measures
    their noise, stops using them there and finishes with exact products."""
    K = clustered_kernel(kappa=1e3)
    g = torch.Generator().manual_seed(7)
    E = torch.randn(200, 200, generator=g, dtype=F64)
    noisy = K + 1e-6 * (E + E.T) / 2
    ev = torch.linalg.eigvalsh(K)
    eig = davidson(dense(K), 200, largest=False, tol=1e-11, max_iter=600, fast=dense(noisy))
    assert eig.converged and eig.residual <= 1e-11 * eig.value
    assert abs(eig.value - float(ev[0])) <= eig.error + floor(ev)


def test_non_convergence_is_reported() -> None:
    K = clustered_kernel()
    eig = davidson(dense(K), 200, largest=False, tol=1e-12, max_iter=5)
    assert not eig.converged and eig.iterations == 5
    assert eig.residual > 1e-12 * eig.value
    assert abs(eig.value - float(torch.linalg.eigvalsh(K)[0])) <= eig.error


def test_a_warm_start_from_the_last_ritz_vectors_converges_at_once() -> None:
    op, K, X = ntk()
    cold = davidson(op, 150, largest=False, tol=1e-8, fast=op.fast)
    warm = davidson(op, 150, largest=False, tol=1e-6, fast=op.fast, v0=cold.block)
    # the block's exact products (they certify it too) and two fast ones, their error
    assert warm.converged and warm.iterations <= 8 + 2
    assert warm.value == pytest.approx(cold.value, rel=1e-6)


@pytest.mark.parametrize("largest", [True, False])
def test_restarts_keep_converging(largest: bool) -> None:
    """A basis of 12 vectors, restarted from 4 Ritz vectors and the last step's two."""
    K = ntk()[1]
    ev = torch.linalg.eigvalsh(K)
    eig = davidson(dense(K), 150, largest=largest, tol=1e-8, max_iter=1000, max_basis=12, keep=4)
    assert eig.converged
    assert abs(eig.value - float(ev[-1] if largest else ev[0])) <= eig.error + floor(ev)


def test_a_basis_of_the_whole_space_is_exact() -> None:
    K = clustered_kernel(n=12, kappa=1e3)
    eig = davidson(dense(K), 12, largest=False, tol=1e-15, max_iter=50)
    assert eig.value == pytest.approx(float(torch.linalg.eigvalsh(K)[0]), rel=1e-9)


def test_the_preconditioner_saves_products_at_the_bottom() -> None:
    """Data on the sphere in R^16: the top of the spectrum lives on 1, x, x xᵀ (153 columns)."""
    X, _ = make_synthetic("sphere", 1000, 16, seed=0)
    model = OneHiddenLayer(16, 1000, seed=1, dtype=F64)
    op = PatternOperator(X, model.W, model.v, 0.1)
    plain = davidson(op, 1000, largest=False, tol=1e-4, max_iter=1000, fast=op.fast)
    steered = davidson(
        op, 1000, largest=False, tol=1e-4, max_iter=1000, fast=op.fast, precond=FeatureDeflation(X)
    )
    assert plain.converged and steered.converged
    assert steered.value == pytest.approx(plain.value, rel=1e-6)
    assert steered.iterations <= 0.6 * plain.iterations
