"""`empirical_ntk` on the modules users bring: cross kernels K(X1, X2), k outputs (trace and
full), (n, 1) outputs, BatchNorm in eval mode; every method against the explicit Jacobian
contraction and against each other, in float64; and the errors, worded in Python."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ntklab.autodiff import kernel_product
from ntklab.models import MLP, OneHiddenLayer
from ntklab.ntk import Method, empirical_ntk, ntk_vector_product

from reference import F64, explicit_ntk, rel_err


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def seeded(module: nn.Module, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, dtype=F64) / max(1, p.shape[-1]) ** 0.5
    return module.double()


def batchnorm_net() -> nn.Module:
    """BatchNorm in eval mode after a few training batches: its running statistics (buffers)
    are constants of the kernel."""
    net = seeded(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)))
    for seed in range(3):
        net(data(16, 4, seed=10 + seed))
    return net.eval()


def frozen_layer_net() -> nn.Module:
    """An untrained first layer: a constant of the kernel, not one of J's rows."""
    net = seeded(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)))
    net[0].weight.requires_grad_(False)
    return net


class Conv(nn.Module):
    """A 1-d convolution over the input's coordinates, then two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv1d(1, 3, kernel_size=3, padding=1), nn.Linear(12, 2)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(X[:, None, :])).flatten(1))


# (id, model, k): scalar outputs of shape (n,) and (n, 1), and k = 2, 3 outputs.
MODULES = [
    ("sequential_n1", seeded(nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 1))), 1),
    ("sequential_k3", seeded(nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3))), 3),
    ("batchnorm_eval_k3", batchnorm_net(), 3),
    ("frozen_layer_k2", frozen_layer_net(), 2),
    ("conv1d_k2", seeded(Conv()), 2),
    ("one_hidden_layer", OneHiddenLayer(4, 9, "leaky_relu", 0.1, seed=1, dtype=F64), 1),
    ("one_hidden_layer_options", OneHiddenLayer(4, 9, seed=2, dtype=F64, train_output=True), 1),
    ("mlp_k1", MLP(4, 6, 2, "leaky_relu", 0.2, seed=1, dtype=F64), 1),
    ("mlp_k3", MLP(4, 6, 2, "tanh", seed=2, dtype=F64, outputs=3), 3),
]

OUTPUTS = {1: [None, "trace", "full"], 2: ["trace", "full"], 3: ["trace", "full"]}
CASES = [
    (f"{name}-{output}-{'cross' if cross else 'sym'}", model, output, cross)
    for name, model, k in MODULES
    for output in OUTPUTS[k]
    for cross in (False, True)
]


def methods_for(model: nn.Module) -> list[Method]:
    generic = [Method.JACOBIAN, Method.NTVP, Method.AUTO]
    return [Method.STRUCTURED, *generic] if isinstance(model, (OneHiddenLayer, MLP)) else generic


@pytest.mark.parametrize(("case", "model", "output", "cross"), CASES, ids=[c[0] for c in CASES])
def test_every_method_matches_the_oracle_and_every_other(case, model, output, cross) -> None:
    X1, X2 = data(7, 4), (data(5, 4, seed=1) if cross else None)
    ref = explicit_ntk(model, X1, X2, output=output)
    kernels = {m: empirical_ntk(model, X1, X2, method=m, output=output) for m in methods_for(model)}
    n2 = 5 if cross else 7
    for method, K in kernels.items():
        if output == "full":
            assert K.shape[:2] == (7, n2) and K.shape == ref.shape, method
        else:
            assert K.shape == ref.shape == (7, n2), method
        assert K.dtype == F64 and rel_err(K, ref) < 1e-10, method
    for (a, Ka), (b, Kb) in itertools.combinations(kernels.items(), 2):
        assert rel_err(Ka, Kb) < 1e-10, (a, b)


def test_the_full_kernel_holds_the_trace_and_the_symmetry() -> None:
    model, X = MLP(3, 5, 2, seed=4, dtype=F64, outputs=4), data(6, 3)
    full = empirical_ntk(model, X, output="full")
    trace = empirical_ntk(model, X, output="trace")
    assert full.shape == (6, 6, 4, 4)
    assert torch.allclose(torch.diagonal(full, dim1=2, dim2=3).sum(-1), trace, atol=1e-13)
    assert torch.allclose(full, full.permute(1, 0, 3, 2), atol=1e-13)  # K_ab(x, x') = K_ba(x', x)


def test_cross_kernel_blocks_of_the_joint_kernel() -> None:
    """K(X1, X2) is the off-diagonal block of the kernel on the stacked points."""
    model, X1, X2 = MLP(3, 8, 3, seed=5, dtype=F64), data(4, 3), data(6, 3, seed=2)
    joint = empirical_ntk(model, torch.cat([X1, X2]))
    assert torch.allclose(empirical_ntk(model, X1, X2), joint[:4, 4:], atol=1e-13)
    assert torch.allclose(empirical_ntk(model, X2, X1), joint[4:, :4], atol=1e-13)


def test_products_of_n_by_1_outputs_and_of_k_outputs() -> None:
    """`ntvp` on nn.Linear(..., 1)'s (n, 1) output, and the full kernel's product for k."""
    one = seeded(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1)))
    X, u = data(6, 4), data(6, 1, seed=4).reshape(-1)
    assert rel_err(ntk_vector_product(one, X, u), explicit_ntk(one, X) @ u) < 1e-12
    three = MODULES[1][1]
    U = data(6, 3, seed=5)
    ref = torch.einsum("ijab,jb->ia", explicit_ntk(three, X, output="full"), U)
    assert rel_err(ntk_vector_product(three, X, U), ref) < 1e-12
    assert rel_err(kernel_product(three, X, X, U), ref) < 1e-12


def test_k_outputs_need_the_output_argument() -> None:
    model = MODULES[1][1]
    with pytest.raises(ValueError, match=r"k=3 outputs: pass output='trace'.*output='full'"):
        empirical_ntk(model, data(5, 4))
    with pytest.raises(ValueError, match="output='sum' is unknown; choose 'trace'"):
        empirical_ntk(model, data(5, 4), output="sum")


@pytest.mark.parametrize(
    ("layer", "message"),
    [(nn.BatchNorm1d(8), "BatchNorm1d in training mode"), (nn.Dropout(0.5), "Dropout in train")],
)
def test_layers_in_training_mode_are_refused(layer, message) -> None:
    model = nn.Sequential(nn.Linear(4, 8), layer, nn.Linear(8, 1)).double()
    with pytest.raises(ValueError, match=rf"model\.1 is a {message}.*call model\.eval\(\)"):
        empirical_ntk(model, data(5, 4))
    model.eval()
    assert empirical_ntk(model, data(5, 4)).shape == (5, 5)


def test_other_errors_speak_python() -> None:
    model = MODULES[0][1]
    with pytest.raises(TypeError, match=r"method is keyword-only: empirical_ntk\(model, X, meth"):
        empirical_ntk(model, data(5, 4), "jacobian")
    with pytest.raises(TypeError, match="Sequential is neither: use method='jacobian'"):
        empirical_ntk(model, data(5, 4), method="structured")
    square = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3))).double()
    with pytest.raises(ValueError, match=r"returned shape \(1, 2, 3\).*\(n,\) or \(n, k\)"):
        empirical_ntk(square, data(5, 4))


@pytest.mark.parametrize(
    ("train_output", "alpha", "center", "parameterization", "activation"),
    list(itertools.product([False, True], [1.0, 2.5], [False, True], ["ntk", "standard"],
                           ["leaky_relu", "linear"])),
)  # fmt: skip
def test_cross_kernel_of_every_one_hidden_layer_option(
    train_output, alpha, center, parameterization, activation
) -> None:
    model = OneHiddenLayer(
        4, 9, activation, 0.1, seed=3, dtype=F64, train_output=train_output, alpha=alpha,
        center=center, parameterization=parameterization,
    )  # fmt: skip
    with torch.no_grad():  # away from init, so that centring and the pattern are not trivial
        model.W.add_(0.3 * torch.randn(model.W.shape, generator=torch.Generator(), dtype=F64))
    X1, X2 = data(7, 4), data(5, 4, seed=1)
    K = empirical_ntk(model, X1, X2, method="structured")
    assert rel_err(K, explicit_ntk(model, X1, X2)) < 1e-12
