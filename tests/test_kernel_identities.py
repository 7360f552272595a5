"""The structured NTK against explicit Jacobian contractions and THEORY.md's identities, float64."""

import pytest
import torch

from ntklab.models import OneHiddenLayer
from ntklab.ntk import empirical_ntk, jacobian_ntk, ntk_vector_product, structured_ntvp
from ntklab.train import loss_and_grads

F64 = torch.float64


def explicit_jacobian(net: OneHiddenLayer, X: torch.Tensor) -> torch.Tensor:
    """J as (n, m·d) from autograd's full Jacobian of h(X) with respect to W."""

    def h(W):
        Z = X @ W.T
        return net.sigma(Z) @ net.v

    J = torch.autograd.functional.jacobian(h, net.W.detach())  # (n, m, d)
    return J.reshape(X.shape[0], -1)


def hand_jacobian(net: OneHiddenLayer, X: torch.Tensor) -> torch.Tensor:
    """∂h(x_i)/∂W_kj = v_k σ'(w_k·x_i) x_ij, written out: (n, m·d)."""
    S = net.sigma_prime(X @ net.W.detach().T)  # (n, m)
    J = (S * net.v)[:, :, None] * X[:, None, :]
    return J.reshape(X.shape[0], -1)


def rel_err(A, B):
    return float((A - B).norm() / B.norm())


CASES = [
    # (n, d, m, activation, eps)
    (6, 3, 10, "leaky_relu", 0.1),
    (12, 5, 7, "leaky_relu", 0.0),
    (9, 4, 33, "leaky_relu", 0.5),
    (20, 2, 3, "leaky_relu", 0.2),  # n > m·d: K is rank-deficient
    (15, 3, 4, "linear", 1.0),  # n > m·d for the linear net too
    (8, 6, 25, "linear", 1.0),
]


@pytest.mark.parametrize("n, d, m, activation, eps", CASES)
def test_structured_equals_explicit_contraction(n, d, m, activation, eps):
    torch.manual_seed(n * 100 + m)
    net = OneHiddenLayer(d, m, activation, eps, seed=n + m, dtype=F64)
    X = torch.randn(n, d, dtype=F64)
    J = explicit_jacobian(net, X)
    K_ref = J @ J.T
    assert rel_err(hand_jacobian(net, X) @ hand_jacobian(net, X).T, K_ref) < 1e-12
    for method in ("structured", "jacobian"):
        K = empirical_ntk(net, X, method=method)
        assert K.shape == (n, n) and K.dtype == F64
        assert rel_err(K, K_ref) < 1e-10, method
    if n > m * d:
        # rank(K) ≤ m·d < n: the smallest eigenvalue is 0 up to round-off
        assert torch.linalg.matrix_rank(K_ref).item() <= m * d


def test_linear_kernel_is_gram_and_constant_in_training():
    torch.manual_seed(0)
    X = torch.randn(10, 4, dtype=F64)
    y = torch.randn(10, dtype=F64)
    net = OneHiddenLayer(4, 50, "linear", seed=1, dtype=F64)
    G = X @ X.T
    for _ in range(20):
        K = empirical_ntk(net, X)
        assert torch.allclose(K, G, rtol=1e-12, atol=1e-12)
        assert torch.allclose(jacobian_ntk(net, X), G, rtol=1e-10, atol=1e-12)
        _, (g,) = loss_and_grads(net, X, y)
        with torch.no_grad():
            net.W -= 0.2 * g
    moved = net.W.detach() - OneHiddenLayer(4, 50, "linear", seed=1, dtype=F64).W.detach()
    assert float(moved.norm()) > 0.1


def test_leaky_relu_with_slope_one_is_the_linear_net():
    X = torch.randn(7, 3, dtype=F64)
    lin = OneHiddenLayer(3, 20, "linear", seed=5, dtype=F64)
    leaky = OneHiddenLayer(3, 20, "leaky_relu", 0.5, seed=5, dtype=F64)
    leaky.negative_slope = 1.0  # ε = 1 (outside the config's [0, 1), allowed here on purpose)
    assert torch.allclose(leaky(X), lin(X), atol=1e-14)
    assert torch.allclose(empirical_ntk(leaky, X), empirical_ntk(lin, X), atol=1e-12)
    assert torch.allclose(empirical_ntk(leaky, X, method="jacobian"), X @ X.T, atol=1e-12)


@pytest.mark.parametrize("activation, eps", [("leaky_relu", 0.1), ("linear", 1.0)])
def test_matrix_free_products_equal_K_u(activation, eps):
    torch.manual_seed(1)
    net = OneHiddenLayer(4, 30, activation, eps, seed=2, dtype=F64)
    X, u = torch.randn(11, 4, dtype=F64), torch.randn(11, dtype=F64)
    Ku = empirical_ntk(net, X) @ u
    assert rel_err(ntk_vector_product(net, X, u), Ku) < 1e-12
    assert rel_err(structured_ntvp(X, net.W.detach(), net.v, net.negative_slope, u), Ku) < 1e-12


def test_gradient_is_two_over_n_J_r_and_pl_identity():
    torch.manual_seed(2)
    net = OneHiddenLayer(3, 16, "leaky_relu", 0.1, seed=3, dtype=F64)
    X, y = torch.randn(9, 3, dtype=F64), torch.randn(9, dtype=F64)
    loss, (g,) = loss_and_grads(net, X, y)
    J = explicit_jacobian(net, X)
    r = net(X).detach() - y
    assert torch.allclose(g.reshape(-1), 2 / 9 * J.T @ r, atol=1e-13)
    K = J @ J.T
    assert float(g.pow(2).sum()) == pytest.approx(float(4 / 81 * r @ K @ r), rel=1e-12)
    lam_min = float(torch.linalg.eigvalsh(K)[0])
    assert float(g.pow(2).sum()) / float(loss) >= 4 * lam_min / 9 * (1 - 1e-12)


def test_jacobian_method_works_for_any_module():
    """A two-layer tanh MLP with biases: vmap(jacrev) + contraction equals autograd's J Jᵀ."""
    torch.manual_seed(3)

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 9), torch.nn.Tanh(), torch.nn.Linear(9, 1)
            )

        def forward(self, X):
            return self.net(X).squeeze(-1)

    model = MLP().double()
    X = torch.randn(7, 4, dtype=F64)
    params = dict(model.named_parameters())
    jac = torch.autograd.functional.jacobian(
        lambda *ps: torch.func.functional_call(model, dict(zip(params, ps, strict=True)), (X,)),
        tuple(p.detach() for p in params.values()),
    )
    J = torch.cat([j.reshape(7, -1) for j in jac], dim=1)  # (n, p)
    assert rel_err(empirical_ntk(model, X, method="jacobian"), J @ J.T) < 1e-12
    u = torch.randn(7, dtype=F64)
    assert rel_err(ntk_vector_product(model, X, u), J @ (J.T @ u)) < 1e-12
    with pytest.raises(TypeError, match="use ntk.method=jacobian"):
        empirical_ntk(model, X, method="structured")
