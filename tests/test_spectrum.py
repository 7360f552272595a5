"""Matrix-free extreme eigenvalues (Lanczos) against dense float64 eigvalsh."""

from __future__ import annotations

import pytest
import torch

from ntklab.models import OneHiddenLayer
from ntklab.spectrum import dense_spectrum, lanczos
from ntklab.structured import StructuredOperator, structured_ntk

from reference import clustered_kernel

F64 = torch.float64


def ntk_case(n: int = 150, d: int = 8, m: int = 300):
    g = torch.Generator().manual_seed(0)
    X = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=F64), dim=1)
    model = OneHiddenLayer(d, m, seed=2, dtype=F64)
    op = StructuredOperator(X, model.W, model.v, 0.1)
    return op, structured_ntk(X, model.W.detach(), model.v, 0.1)


ill_conditioned = clustered_kernel


@pytest.mark.parametrize("largest", [True, False])
def test_lanczos_matches_eigvalsh_on_an_ntk(largest: bool) -> None:
    op, K = ntk_case()
    spec = dense_spectrum(K)
    eig = lanczos(op, K.shape[0], largest=largest, tol=1e-8, max_iter=150)
    ref = spec.lambda_max if largest else spec.lambda_min
    assert eig.converged
    assert abs(eig.value - ref) <= 1e-8 * abs(ref)
    # the Ritz vector is an eigenvector to the reported residual
    assert float((K @ eig.vector - eig.value * eig.vector).norm()) <= 2 * eig.residual + 1e-12


@pytest.mark.parametrize("largest", [True, False])
def test_lanczos_on_an_ill_conditioned_clustered_kernel(largest: bool) -> None:
    K = ill_conditioned()
    ev = torch.linalg.eigvalsh(K)
    eig = lanczos(lambda u: K @ u, K.shape[0], largest=largest, tol=1e-6, max_iter=200)
    ref = float(ev[-1] if largest else ev[0])
    assert eig.converged
    # a converged Ritz value is within tol·θ of an eigenvalue; at the bottom it is ≥ λ_min
    assert abs(eig.value - ref) <= 1e-6 * abs(ref)
    if not largest:
        assert eig.value >= ref * (1 - 1e-12)


def test_non_convergence_is_reported() -> None:
    K = ill_conditioned()
    eig = lanczos(lambda u: K @ u, K.shape[0], largest=False, tol=1e-10, max_iter=5)
    assert not eig.converged
    assert eig.iterations == 5
    assert eig.residual > 1e-10 * abs(eig.value)


def test_warm_start_from_the_eigenvector_converges_at_once() -> None:
    op, K = ntk_case()
    cold = lanczos(op, K.shape[0], largest=False, tol=1e-8, max_iter=150)
    warm = lanczos(op, K.shape[0], largest=False, tol=1e-6, max_iter=150, v0=cold.vector)
    assert warm.converged and warm.iterations <= 2
    assert warm.value == pytest.approx(cold.value, rel=1e-6)


def test_a_full_krylov_space_is_exact() -> None:
    K = ill_conditioned(n=12, kappa=1e3)
    eig = lanczos(lambda u: K @ u, 12, largest=False, tol=1e-14, max_iter=50)
    assert eig.value == pytest.approx(float(torch.linalg.eigvalsh(K)[0]), rel=1e-9)
