"""The deep MLP: its conventions (depth 1 is the one-hidden-layer net with a trained output
layer), its closed-form kernel in float32, and the infinite-width kernel of the arc-cosine
recursion against Monte-Carlo averages."""

from __future__ import annotations

import math

import pytest
import torch

from ntklab.mlp_kernels import arccos_moments, mlp_ntk, mlp_ntk_inf
from ntklab.models import MLP, OneHiddenLayer
from ntklab.ntk import empirical_ntk

from reference import F64, explicit_ntk, rel_err


def sphere(n: int, d: int, seed: int = 0) -> torch.Tensor:
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return X / X.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("activation", ["leaky_relu", "linear"])
def test_depth_one_is_the_one_hidden_layer_net_with_a_trained_output(activation) -> None:
    X = sphere(9, 4)
    mlp = MLP(4, 33, 1, activation, 0.1, seed=7, dtype=F64)
    net = OneHiddenLayer(4, 33, activation, 0.1, seed=7, dtype=F64, train_output=True)
    assert torch.equal(mlp(X), net(X))
    assert rel_err(empirical_ntk(mlp, X), empirical_ntk(net, X)) < 1e-14


def test_shapes_init_and_parameters() -> None:
    mlp = MLP(5, 16, 3, seed=1, dtype=F64, outputs=4)
    assert [tuple(W.shape) for W in mlp.hidden] == [(16, 5), (16, 16), (16, 16)]
    assert mlp.out.shape == (4, 16) and set(mlp.out.unique().tolist()) == {-1.0, 1.0}
    assert all(p.requires_grad for p in mlp.parameters())  # every layer is trained
    X = sphere(7, 5)
    assert mlp(X).shape == (7, 4) and mlp(X[0]).shape == (4,)
    assert MLP(5, 16, 3)(X.float()).shape == (7,) and MLP(5, 16, 3)(X[0].float()).shape == ()
    # h^{l+1} = W^{l+1} σ(h^l)/√m, f = V σ(h^L)/√m
    H1 = X @ mlp.hidden[0].T
    H2 = torch.relu(H1) @ mlp.hidden[1].T / 4
    H3 = torch.relu(H2) @ mlp.hidden[2].T / 4
    assert torch.allclose(mlp(X), torch.relu(H3) @ mlp.out.T / 4, atol=1e-13)
    assert torch.equal(MLP(5, 16, 3, seed=2).hidden[2], MLP(5, 16, 3, seed=2).hidden[2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "gelu"}, "activation='gelu' is unknown; choose one of \\['leaky_relu'"),
        ({"depth": 0}, "depth=0 must be a positive integer"),
        ({"width": 2.5}, "width=2.5 must be a positive integer"),
        ({"activation": "leaky_relu", "negative_slope": 1.0}, "negative_slope=1.0 must lie"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message) -> None:
    args = {"d": 3, "width": 4, "depth": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        MLP(**args)


def test_float32_kernel_agrees_with_float64() -> None:
    X = sphere(64, 8)
    mlp = MLP(8, 128, 3, "leaky_relu", seed=3, dtype=F64)
    ref = mlp_ntk(mlp, X)
    K = mlp_ntk(mlp.float(), X.float())
    assert K.dtype == torch.float32 and rel_err(K.to(F64), ref) < 1e-6


@pytest.mark.parametrize(("activation", "eps"), [("relu", 0.0), ("leaky_relu", 0.3)])
def test_one_layer_moments_are_gaussian_expectations(activation, eps) -> None:
    """E[σ(u)σ(v)] and E[σ'(u)σ'(v)] against 400,000 Gaussian pairs for a few covariances."""
    g = torch.Generator().manual_seed(0)
    Sigma = torch.tensor([[1.0, 0.6, -0.5], [0.6, 2.0, 0.1], [-0.5, 0.1, 0.5]], dtype=F64)
    Z = torch.randn(400_000, 3, generator=g, dtype=F64) @ torch.linalg.cholesky(Sigma).T
    act = MLP(1, 1, 1, activation, eps)
    value, slope = arccos_moments(Sigma, eps)
    S, P = act.sigma(Z), act.sigma_prime(Z)
    assert torch.allclose(value, S.T @ S / len(Z), rtol=0, atol=6e-3)
    assert torch.allclose(slope, P.T @ P / len(Z), rtol=0, atol=4e-3)


@pytest.mark.parametrize(("activation", "depth"), [("relu", 3), ("leaky_relu", 2)])
def test_infinite_width_kernel_is_the_monte_carlo_mean(activation, depth) -> None:
    """The mean of K_0 over 300 nets of width 128 is K∞ within a few standard errors of the
    mean, entry by entry (the finite-width bias, O(1/m), is below them)."""
    X = sphere(5, 4)
    kernels = torch.stack(
        [mlp_ntk(MLP(4, 128, depth, activation, 0.2, seed=s, dtype=F64), X) for s in range(300)]
    )
    K_inf = mlp_ntk_inf(MLP(4, 1, depth, activation, 0.2), X)
    mean, se = kernels.mean(0), kernels.std(0) / math.sqrt(len(kernels))
    assert float(((mean - K_inf).abs() / se).max()) < 4.0
    assert rel_err(mean, K_inf) < 0.03


def test_infinite_width_closed_forms() -> None:
    """Linear nets: K∞ = (L + 1) X Xᵀ (every layer adds X Xᵀ); depth 1 is the one-hidden-layer
    net's K∞ with its output layer; tanh has no closed form; k outputs multiply the trace."""
    X = sphere(6, 3)
    assert torch.allclose(mlp_ntk_inf(MLP(3, 1, 4, "linear"), X), 5 * X @ X.T, atol=1e-13)
    from ntklab.kernels import model_ntk_inf

    one = OneHiddenLayer(3, 1, "leaky_relu", 0.2, train_output=True)
    assert torch.allclose(
        mlp_ntk_inf(MLP(3, 1, 1, "leaky_relu", 0.2), X), model_ntk_inf(one, X), atol=1e-13
    )
    assert mlp_ntk_inf(MLP(3, 1, 2, "tanh"), X) is None
    three = mlp_ntk_inf(MLP(3, 1, 2, outputs=3), X)
    assert torch.allclose(three, 3 * mlp_ntk_inf(MLP(3, 1, 2), X), atol=1e-13)


@pytest.mark.parametrize("output", [None, "full"])
def test_blocks_of_the_symmetric_kernel(monkeypatch, output) -> None:
    """Blocks of 4 rows (n = 10: ragged last block), upper ones computed, lower mirrored: the
    same kernel as one block, symmetric, and the explicit contraction."""
    from ntklab import mlp_kernels

    mlp, X = MLP(3, 8, 2, "leaky_relu", seed=6, dtype=F64, outputs=2), sphere(10, 3)
    whole = mlp_ntk(mlp, X, output=output or "trace")
    monkeypatch.setattr(mlp_kernels, "BLOCK", 4)
    K = mlp_ntk(mlp, X, output=output or "trace")
    assert rel_err(K, whole) < 1e-14
    assert rel_err(K, explicit_ntk(mlp, X, output=output)) < 1e-12
    mirror = K.permute(1, 0, 3, 2) if output else K.T
    assert torch.equal(K, mirror) or rel_err(K, mirror) < 1e-15


def test_structured_kernel_of_a_moved_net() -> None:
    """Away from init (after a few steps) the closed form still is the Jacobian contraction."""
    mlp, X = MLP(3, 10, 3, "leaky_relu", seed=5, dtype=F64, outputs=2), sphere(8, 3)
    with torch.no_grad():
        for p in mlp.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=F64, generator=torch.Generator()))
    assert rel_err(mlp_ntk(mlp, X, output="full"), explicit_ntk(mlp, X, output="full")) < 1e-12
