"""The exact integer product u ↦ K u through the activation pattern: digits, products, and the
operator against the explicit Jacobian contraction, in float64."""

from __future__ import annotations

import pytest
import torch

from ntklab import fixedpoint
from ntklab.fixedpoint import (
    EXACT_PLANES,
    FAST_PLANES,
    PatternOperator,
    digit_planes,
    pattern_product,
)
from ntklab.models import OneHiddenLayer

from reference import F64, explicit_ntk, rel_err


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def awkward_columns() -> torch.Tensor:
    """Columns with wide dynamic range, exact extremes of both signs, and all zeros."""
    Y = data(50, 5) * torch.tensor([1e-30, 1.0, 1e12, 0.0, -3.0], dtype=F64)
    Y[7, 1], Y[9, 4] = -Y[:, 1].abs().max() * 2, 1e3
    return Y


@pytest.mark.parametrize("planes", range(1, 8))
def test_digits_reproduce_each_column_to_its_bound(planes: int) -> None:
    Y = awkward_columns()
    Q, scale = digit_planes(Y, planes)
    assert Q.dtype == torch.int8 and Q.shape == (50, 5 * planes)
    weights = torch.tensor([256.0**t for t in range(planes)], dtype=F64)
    back = (Q.view(50, 5, planes).to(F64) @ weights) * scale
    bound = max(2.0 ** (2 - 8 * planes), 2.0**-51) * Y.abs().amax(dim=0)
    assert ((back - Y).abs() <= bound).all()


@pytest.mark.parametrize("planes", [FAST_PLANES, EXACT_PLANES])
def test_pattern_product_is_the_float_product_to_the_digits_bound(planes: int) -> None:
    B = (data(40, 60, seed=1) > 0).view(torch.int8)
    Y = awkward_columns()[:, :3].repeat(2, 1)[:60]
    ref = B.to(F64) @ Y
    got = pattern_product(B, Y, planes)
    bound = 60 * max(2.0 ** (2 - 8 * planes), 2.0**-51) * Y.abs().amax(dim=0)
    assert ((got - ref).abs() <= bound + 1e-15 * ref.abs()).all()


def net(d: int, m: int, eps: float, seed: int = 1) -> OneHiddenLayer:
    return OneHiddenLayer(d, m, "leaky_relu", eps, seed=seed, dtype=F64)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_the_operator_is_the_jacobian_contraction(eps: float) -> None:
    model, X = net(5, 70, eps), data(33, 5)
    K = explicit_ntk(model, X)
    op = PatternOperator(X, model.W, model.v, eps)
    u, U = data(33, 1, seed=2).reshape(-1), data(33, 4, seed=3)
    assert op(u).shape == (33,) and op(U).shape == (33, 4) and op(U).dtype == F64
    assert rel_err(op(u), K @ u) < 1e-13 and rel_err(op(U), K @ U) < 1e-13
    assert rel_err(op.fast(U), K @ U) < 1e-8  # 30-bit digits


def test_any_output_layer_and_float32_inputs() -> None:
    model, X = net(4, 40, 0.2), data(25, 4)
    with torch.no_grad():
        model.v.copy_(torch.linspace(-1.0, 2.0, 40, dtype=F64))
    K = explicit_ntk(model, X)
    U = data(25, 2, seed=4)
    assert rel_err(PatternOperator(X, model.W, model.v, 0.2)(U), K @ U) < 1e-13
    # a float32 model: the pattern and X in float32, the products still exact in float64
    X32, W32, v32 = X.float(), model.W.detach().float(), model.v.float()
    K32 = (X32.double() @ X32.double().T) * _slopes_kernel(X32, W32, v32, 0.2)
    assert rel_err(PatternOperator(X32, W32, v32, 0.2)(U), K32 @ U) < 1e-13


def _slopes_kernel(X, W, v, eps):
    one = torch.ones((), dtype=F64)
    S = torch.where(X.double() @ W.double().T >= 0, one, one * eps)
    return (S * v.double() ** 2) @ S.T


def test_without_int8_kernels_the_same_products(monkeypatch: pytest.MonkeyPatch) -> None:
    model, X = net(6, 50, 0.1), data(30, 6)
    U = data(30, 3, seed=5)
    op = PatternOperator(X, model.W, model.v, 0.1)
    exact, fast = op(U), op.fast(U)
    monkeypatch.setattr(fixedpoint, "_int_mm_fits", lambda A, B: False)
    assert torch.equal(op(U), exact) and torch.equal(op.fast(U), fast)


def test_the_linear_net_is_refused_with_the_reason() -> None:
    model, X = net(3, 5, 0.1), data(4, 3)
    with pytest.raises(ValueError, match="negative_slope=1.0: the pattern product needs 0 ≤ ε < 1"):
        PatternOperator(X, model.W, model.v, 1.0)
