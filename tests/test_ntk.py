"""Every NTK method against the explicit Jacobian contraction and against each other, in float64;
the closed forms of docs/theory.md; the matrix-free products; the choice between methods."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ntklab import structured
from ntklab.fixedpoint import PatternOperator
from ntklab.models import MLP, OneHiddenLayer
from ntklab.ntk import (
    Method,
    empirical_ntk,
    jacobian_ntk,
    ntk_operator,
    ntk_vector_product,
    resolve_method,
)
from ntklab.structured import StructuredOperator, coactivation_counts, structured_ntk
from ntklab.train import loss_and_grads

from reference import F64, explicit_jacobian, explicit_ntk, hand_jacobian, rel_err


def net(d: int, m: int, activation: str = "leaky_relu", eps: float = 0.1, seed: int = 1, **kw):
    return OneHiddenLayer(d, m, activation, eps, seed=seed, dtype=F64, **kw)


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


class TwoLayer(nn.Module):
    """A generic net with two trained tensors, for the methods that take any module."""

    def __init__(self, d: int, m: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.A = nn.Parameter(torch.randn(m, d, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(m, generator=g, dtype=F64) / m**0.5)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.tanh(X @ self.A.T) @ self.b


class TanhMLP(nn.Module):
    """nn.Linear layers with biases, squeezed to a scalar output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 1)).double()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X).squeeze(-1)


def moved(model: OneHiddenLayer) -> OneHiddenLayer:
    """Away from init, so that centering and the activation pattern are not trivial."""
    with torch.no_grad():
        model.W.add_(0.3 * torch.randn(model.W.shape, generator=torch.Generator().manual_seed(0)))
    return model


# (id, model, X): the one-hidden-layer net with each activation and option, rank-deficient
# kernels (n > m·d), and generic modules that only the generic methods take.
OPTIONS = list(itertools.product([False, True], [1.0, 2.5], [False, True], ["ntk", "standard"]))
CASES = [
    ("leaky", net(6, 45), data(29, 6)),
    ("relu", net(6, 45, eps=0.0), data(29, 6)),
    ("leaky_half", net(4, 33, eps=0.5), data(9, 4)),
    ("linear", net(6, 45, "linear", 1.0), data(29, 6)),
    ("leaky_rank_deficient", net(2, 3, eps=0.2), data(20, 2)),
    ("linear_rank_deficient", net(3, 4, "linear", 1.0), data(15, 3)),
    *(
        (
            f"options_{t}_{a}_{c}_{p}_{act}",
            moved(
                net(4, 9, act, eps, seed=3, train_output=t, alpha=a, center=c, parameterization=p)
            ),
            data(7, 4),
        )
        for t, a, c, p in OPTIONS
        for act, eps in (("leaky_relu", 0.1), ("linear", 1.0))
    ),
    *(
        (f"mlp_{act}_depth{L}", MLP(5, 11, L, act, 0.2, seed=L, dtype=F64), data(9, 5))
        for act in ("relu", "leaky_relu", "tanh", "linear")
        for L in (1, 3)
    ),
    ("mlp_rank_deficient", MLP(2, 2, 2, "leaky_relu", dtype=F64), data(14, 2)),
    ("two_layer", TwoLayer(4, 17), data(23, 4)),
    ("tanh_mlp", TanhMLP(), data(7, 4)),
]


def methods_for(model: nn.Module) -> list[Method]:
    generic = [Method.JACOBIAN, Method.NTVP, Method.AUTO]
    closed_form = isinstance(model, (OneHiddenLayer, MLP))
    return [Method.STRUCTURED, *generic] if closed_form else generic


@pytest.mark.parametrize(("case", "model", "X"), CASES, ids=[c[0] for c in CASES])
def test_every_method_matches_the_oracle_and_every_other(case, model, X) -> None:
    ref = explicit_ntk(model, X)
    kernels = {m: empirical_ntk(model, X, method=m) for m in methods_for(model)}
    for method, K in kernels.items():
        assert K.shape == ref.shape == (X.shape[0], X.shape[0]) and K.dtype == F64, method
        assert rel_err(K, ref) < 1e-10, method
    for (a, Ka), (b, Kb) in itertools.combinations(kernels.items(), 2):
        assert rel_err(Ka, Kb) < 1e-10, (a, b)
    if X.shape[0] > sum(p.numel() for p in model.parameters() if p.requires_grad):
        # rank(K) ≤ p < n: the smallest eigenvalue is 0 up to round-off
        assert torch.linalg.matrix_rank(ref).item() < X.shape[0]


def test_the_hand_written_jacobian_is_autograds() -> None:
    """∂h(x_i)/∂W_kj = v_k σ'(w_k·x_i) x_ij, hence K = (X Xᵀ) ⊙ (S diag(v²) Sᵀ)."""
    for model, X in [(net(5, 7, eps=0.0), data(12, 5)), (net(4, 30, eps=0.3), data(6, 4))]:
        J = explicit_jacobian(model, X)
        assert rel_err(hand_jacobian(model, X), J) < 1e-14


def test_the_defaults_are_the_plain_model_bit_for_bit() -> None:
    X = data(7, 4).float()
    model = OneHiddenLayer(4, 33, "leaky_relu", 0.2, seed=1)
    assert torch.equal(empirical_ntk(model, X), structured_ntk(X, model.W.detach(), model.v, 0.2))


def test_linear_kernel_is_the_gram_matrix_and_constant_in_training() -> None:
    X, y = data(10, 4), data(10, 1, seed=1).reshape(-1)
    model = net(4, 50, "linear", 1.0)
    W0 = model.W.detach().clone()
    for _ in range(20):
        for method in (Method.STRUCTURED, Method.JACOBIAN):
            assert torch.allclose(empirical_ntk(model, X, method=method), X @ X.T, atol=1e-12)
        _, (g,) = loss_and_grads(model, X, y)
        with torch.no_grad():
            model.W -= 0.2 * g
    assert float((model.W.detach() - W0).norm()) > 0.1  # it trained, and K never moved


def test_leaky_relu_with_slope_one_is_the_linear_net() -> None:
    X = data(7, 3)
    lin, leaky = net(3, 20, "linear", 1.0, seed=5), net(3, 20, "leaky_relu", 0.5, seed=5)
    leaky.negative_slope = 1.0  # ε = 1 (outside the config's [0, 1), allowed here on purpose)
    assert torch.allclose(leaky(X), lin(X), atol=1e-14)
    assert torch.allclose(empirical_ntk(leaky, X), empirical_ntk(lin, X), atol=1e-12)


def test_gradient_is_two_over_n_J_r_and_the_pl_inequality_holds() -> None:
    model, X, y = net(3, 16, seed=3), data(9, 3, seed=2), data(9, 1, seed=4).reshape(-1)
    loss, (g,) = loss_and_grads(model, X, y)
    J, r = explicit_jacobian(model, X), model(X).detach() - y
    assert torch.allclose(g.reshape(-1), 2 / 9 * J.T @ r, atol=1e-13)
    K = J @ J.T
    assert float(g.pow(2).sum()) == pytest.approx(float(4 / 81 * r @ K @ r), rel=1e-12)
    lam_min = float(torch.linalg.eigvalsh(K)[0])
    assert float(g.pow(2).sum()) / float(loss) >= 4 * lam_min / 9 * (1 - 1e-12)


@pytest.mark.parametrize("model_X", [(net(4, 30), data(11, 4)), (TanhMLP(), data(7, 4))])
def test_matrix_free_products_equal_K_u(model_X) -> None:
    model, X = model_X
    ref = explicit_ntk(model, X)
    u, U = data(X.shape[0], 1, seed=4).reshape(-1), data(X.shape[0], 3, seed=5)
    assert rel_err(ntk_vector_product(model, X, u), ref @ u) < 1e-12
    apply = ntk_operator(model, X)
    # the leaky-ReLU net gets the exact integer product through its activation pattern
    assert isinstance(apply, PatternOperator) == isinstance(model, OneHiddenLayer)
    assert rel_err(apply(u), ref @ u) < 1e-12 and rel_err(apply(U), ref @ U) < 1e-12


@pytest.mark.parametrize("cache", [0, 2**27])
def test_structured_operator_with_and_without_its_slope_cache(cache: int) -> None:
    model, X = net(5, 53), data(31, 5)
    ref = explicit_ntk(model, X)
    op = StructuredOperator(X, model.W, model.v, 0.1, chunk=8, cache_bytes=cache)
    U = data(31, 3, seed=5)
    assert rel_err(op(U), ref @ U) < 1e-12


@pytest.mark.parametrize(("chunk", "block"), [(7, 5), (10, 3), (53, 37), (1, 2)])
def test_chunked_counts_and_float_paths(chunk: int, block: int) -> None:
    """Chunk and block sizes that do not divide m = 53 or n = 37 give the same kernel."""
    model, X = net(5, 53), data(37, 5)
    W = model.W.detach()
    K = structured_ntk(X, W, model.v, 0.1, chunk=chunk, block=block)
    assert rel_err(K, explicit_ntk(model, X)) < 1e-10
    assert torch.equal(K, K.T)
    # a non-uniform output layer takes the float path
    model.v.copy_(torch.linspace(-1.0, 2.0, 53, dtype=F64))
    K = structured_ntk(X, W, model.v, 0.1, chunk=chunk, block=block)
    assert rel_err(K, explicit_ntk(model, X)) < 1e-10


def test_coactivation_counts_are_exact_integers() -> None:
    model, X = net(4, 70), data(41, 4)
    B = (X @ model.W.detach().T >= 0).to(F64)
    C = coactivation_counts(X, model.W.detach(), chunk=9, block=6).to(F64)
    assert torch.equal(structured.symmetrize_upper(C), B @ B.T)


def test_float_fallback_of_the_count_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices without int8 kernels get the same exact counts from a float product."""
    model, X = net(5, 40), data(33, 5)
    K_int = structured_ntk(X, model.W.detach(), model.v, 0.1, chunk=11, block=8)
    monkeypatch.setattr(structured, "_int_mm_fits", lambda A, Bt: False)
    K_float = structured_ntk(X, model.W.detach(), model.v, 0.1, chunk=11, block=8)
    assert torch.equal(K_int, K_float)


def test_float32_counts_agree_with_float64_reference() -> None:
    model, X = net(16, 512), torch.nn.functional.normalize(data(300, 16), dim=1)
    ref = structured_ntk(X, model.W.detach(), model.v, 0.1)
    K = structured_ntk(X.float(), model.W.detach().float(), model.v.float(), 0.1)
    assert K.dtype == torch.float32
    assert rel_err(K.to(F64), ref) < 1e-6


def test_errors_name_the_argument_and_the_fix() -> None:
    with pytest.raises(TypeError, match="use method='jacobian'"):
        empirical_ntk(TwoLayer(3, 4), data(5, 3), method="structured")
    with pytest.raises(ValueError, match="method='magic' is unknown; choose one of structured"):
        empirical_ntk(net(3, 4), data(5, 3), method="magic")


def test_auto_picks_by_model_and_memory_budget() -> None:
    model, X = net(4, 8), data(100, 4)
    assert resolve_method("auto", model, X, budget_bytes=1e9) is Method.STRUCTURED
    assert resolve_method("auto", model, X, budget_bytes=1e3) is Method.NTVP
    assert resolve_method("auto", TwoLayer(4, 8), X, budget_bytes=1e9) is Method.JACOBIAN
    assert resolve_method("jacobian", model, X, budget_bytes=1e3) is Method.JACOBIAN
    # every option of the one-hidden-layer net, and the deep MLP, have a closed form
    assert resolve_method("auto", net(4, 8, train_output=True), X, 1e9) is Method.STRUCTURED
    assert resolve_method("auto", MLP(4, 8, 2), X.float(), 1e9) is Method.STRUCTURED


def test_jacobian_method_for_any_module_is_the_torch_func_recipe() -> None:
    model, X = TwoLayer(4, 17), data(23, 4)
    assert rel_err(jacobian_ntk(model, X), explicit_ntk(model, X)) < 1e-12


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
    assert rel_err(K.cpu().to(F64), ref) < (1e-10 if dtype == F64 else 1e-6)
    u = data(300, 1, seed=3).reshape(-1)
    Ku = StructuredOperator(Xg, Wg, vg, 0.1)(u.to("cuda"))
    assert rel_err(Ku.cpu(), ref @ u) < (1e-10 if dtype == F64 else 1e-6)
