"""Every NTK method against the explicit Jacobian contraction K = J Jᵀ, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ntklab import structured
from ntklab.models import OneHiddenLayer
from ntklab.ntk import (
    choose_method,
    empirical_ntk,
    jacobian_ntk,
    ntk_operator,
    ntk_vector_product,
    structured_ntk,
)
from ntklab.structured import StructuredOperator, coactivation_counts

F64 = torch.float64


def explicit_ntk(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """The slow obvious reference: one autograd gradient per sample, stacked into J, J Jᵀ."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for x in X:
        grads = torch.autograd.grad(model(x[None]).sum(), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    J = torch.stack(rows)  # (n, p)
    return J @ J.T


def rel(A: torch.Tensor, B: torch.Tensor) -> float:
    return float((A - B).norm() / B.norm())


def net(d: int, m: int, activation: str = "leaky_relu", eps: float = 0.1, seed: int = 1):
    return OneHiddenLayer(d, m, activation, eps, seed=seed, dtype=F64)


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64)


class TwoLayer(nn.Module):
    """A generic net with two trained tensors, for the methods that take any module."""

    def __init__(self, d: int, m: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.A = nn.Parameter(torch.randn(m, d, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(m, generator=g, dtype=F64) / m**0.5)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.tanh(X @ self.A.T) @ self.b


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp", "auto"])
@pytest.mark.parametrize(
    ("activation", "eps"), [("leaky_relu", 0.1), ("leaky_relu", 0.0), ("linear", 1.0)]
)
def test_every_method_matches_explicit_jacobian(method: str, activation: str, eps: float) -> None:
    model, X = net(6, 45, activation, eps), data(29, 6)
    K = empirical_ntk(model, X, method=method)
    assert K.shape == (29, 29) and K.dtype == F64
    assert rel(K, explicit_ntk(model, X)) < 1e-10


@pytest.mark.parametrize(("chunk", "block"), [(7, 5), (10, 3), (53, 37), (1, 2)])
def test_chunked_counts_and_float_paths(chunk: int, block: int) -> None:
    """Chunk and block sizes that do not divide m = 53 or n = 37 give the same kernel."""
    model, X = net(5, 53), data(37, 5)
    ref = explicit_ntk(model, X)
    W, v = model.W.detach(), model.v
    K = structured_ntk(X, W, v, 0.1, chunk=chunk, block=block)
    assert rel(K, ref) < 1e-10
    assert torch.equal(K, K.T)
    # a non-uniform output layer takes the float path
    model.v.copy_(torch.linspace(-1.0, 2.0, 53, dtype=F64))
    K = structured_ntk(X, W, model.v, 0.1, chunk=chunk, block=block)
    assert rel(K, explicit_ntk(model, X)) < 1e-10


def test_coactivation_counts_are_exact_integers() -> None:
    model, X = net(4, 70), data(41, 4)
    B = (X @ model.W.detach().T >= 0).to(F64)
    C = structured.symmetrize_upper(
        coactivation_counts(X, model.W.detach(), chunk=9, block=6).to(F64)
    )
    assert torch.equal(C, B @ B.T)


def test_float_fallback_of_the_count_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices without int8 kernels get the same exact counts from a float product."""
    model, X = net(5, 40), data(33, 5)
    K_int = structured_ntk(X, model.W.detach(), model.v, 0.1, chunk=11, block=8)
    monkeypatch.setattr(structured, "_int_mm_fits", lambda A, Bt: False)
    K_float = structured_ntk(X, model.W.detach(), model.v, 0.1, chunk=11, block=8)
    assert torch.equal(K_int, K_float)


def test_float32_counts_agree_with_float64_reference() -> None:
    model, X = net(16, 512), data(300, 16)
    X = torch.nn.functional.normalize(X, dim=1)
    ref = structured_ntk(X, model.W.detach(), model.v, 0.1)
    K = structured_ntk(X.float(), model.W.detach().float(), model.v.float(), 0.1)
    assert K.dtype == torch.float32
    assert rel(K.to(F64), ref) < 1e-6


@pytest.mark.parametrize("cache", [0, 2**27])
def test_structured_operator_products(cache: int) -> None:
    model, X = net(5, 53), data(31, 5)
    ref = explicit_ntk(model, X)
    op = StructuredOperator(X, model.W, model.v, 0.1, chunk=8, cache_bytes=cache)
    u = data(31, 1, seed=4).reshape(-1)
    U = data(31, 3, seed=5)
    assert rel(op(u), ref @ u) < 1e-12
    assert rel(op(U), ref @ U) < 1e-12


def test_generic_product_on_any_module() -> None:
    model, X = TwoLayer(4, 17), data(23, 4)
    ref = explicit_ntk(model, X)
    assert rel(jacobian_ntk(model, X), ref) < 1e-12
    u = data(23, 1, seed=2).reshape(-1)
    assert rel(ntk_vector_product(model, X, u), ref @ u) < 1e-12
    assert not isinstance(ntk_operator(model, X), StructuredOperator)
    assert rel(empirical_ntk(model, X, method="ntvp"), ref) < 1e-12


def test_structured_names_the_fix_for_other_modules() -> None:
    with pytest.raises(TypeError, match="ntk.method=jacobian"):
        empirical_ntk(TwoLayer(3, 4), data(5, 3), method="structured")


def test_auto_picks_matrix_free_on_a_tiny_budget() -> None:
    model, X = net(4, 8), data(100, 4)
    assert choose_method(model, X, budget_bytes=1e9) == "structured"
    assert choose_method(model, X, budget_bytes=1e3) == "ntvp"
    assert choose_method(TwoLayer(4, 8), X, budget_bytes=1e9) == "jacobian"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gpu_kernels_match_the_cpu(dtype: torch.dtype) -> None:
    """On a GPU (int8 tensor-core counts, TF32 off) the kernel and products match the CPU."""
    model, X = net(24, 700), torch.nn.functional.normalize(data(300, 24), dim=1)
    ref = structured_ntk(X, model.W.detach(), model.v, 0.1)
    Xg, Wg, vg = (t.to("cuda", dtype) for t in (X, model.W.detach(), model.v))
    K = structured_ntk(Xg, Wg, vg, 0.1, chunk=256, block=128)
    assert K.device.type == "cuda"
    assert rel(K.cpu().to(F64), ref) < (1e-10 if dtype == F64 else 1e-6)
    u = data(300, 1, seed=3).reshape(-1)
    Ku = StructuredOperator(Xg, Wg, vg, 0.1)(u.to("cuda"))
    assert rel(Ku.cpu(), ref @ u) < (1e-10 if dtype == F64 else 1e-6)
