"""The nets follow the conventions of docs/theory.md: shapes, init, v = ±1/√m, forward formula."""

import math

import pytest
import torch

from ntklab.models import OneHiddenLayer


@pytest.mark.parametrize("activation", ["linear", "leaky_relu"])
def test_init_conventions(activation):
    net = OneHiddenLayer(7, 300, activation, negative_slope=0.2, seed=3, dtype=torch.float64)
    assert net.W.shape == (300, 7) and net.v.shape == (300,)
    assert torch.allclose(net.v.abs(), torch.full((300,), 1 / math.sqrt(300), dtype=torch.float64))
    assert float(net.v @ net.v) == pytest.approx(1.0, abs=1e-12)
    assert {int(s) for s in torch.sign(net.v)} == {-1, 1}
    # W ~ N(0, 1): mean near 0 and variance near 1 over 2100 draws
    W = net.W.detach()
    assert abs(float(W.mean())) < 0.1 and abs(float(W.var()) - 1) < 0.1
    assert net.W.requires_grad and not net.v.requires_grad


def test_seed_reproducible_and_distinct():
    a, b, c = (OneHiddenLayer(4, 16, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.W, b.W) and torch.equal(a.v, b.v)
    assert not torch.equal(a.W, c.W)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_forward_matches_formula(eps):
    net = OneHiddenLayer(5, 40, "leaky_relu", eps, seed=0, dtype=torch.float64)
    X = torch.randn(9, 5, dtype=torch.float64)
    Z = X @ net.W.T
    expected = (torch.maximum(Z, eps * Z) * net.v).sum(dim=1)
    assert torch.allclose(net(X), expected, rtol=0, atol=1e-13)


def test_linear_forward_is_linear():
    net = OneHiddenLayer(5, 40, "linear", seed=0, dtype=torch.float64)
    X = torch.randn(9, 5, dtype=torch.float64)
    assert torch.allclose(net(X), X @ (net.W.T @ net.v), atol=1e-13)
    assert net.negative_slope == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "tanh"}, "activation='tanh' is unknown"),
        ({"negative_slope": 1.0}, "negative_slope=1.0"),
        ({"negative_slope": -0.1}, "negative_slope=-0.1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneHiddenLayer(3, 4, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.37])
def test_sigma_is_the_lecture_formula_bit_for_bit(dtype, eps):
    """σ by torch's leaky_relu kernel gives max(z, εz) as torch.where(z ≥ 0, z, εz) does, bit
    for bit: signed zeros, NaN, infinities and subnormals included; σ' is 1 at z ≥ 0."""
    from ntklab.models import sigma, sigma_prime

    special = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-45, -1e-45, 1e-310, -1e-310]
    Z = torch.cat([torch.randn(2000, dtype=torch.float64), torch.tensor(special)]).to(dtype)
    expected = torch.where(Z >= 0, Z, eps * Z)
    got = sigma(Z, eps)
    assert torch.equal(got.isnan(), expected.isnan())
    both = ~expected.isnan()
    assert torch.equal(got[both], expected[both])
    assert torch.equal(torch.signbit(got[both]), torch.signbit(expected[both]))
    assert sigma_prime(torch.tensor([0.0, -0.0, 2.0, -2.0], dtype=dtype), eps).tolist() == [
        1.0, 1.0, 1.0, pytest.approx(eps)
    ]  # fmt: skip
