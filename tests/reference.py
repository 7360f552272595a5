"""The slow obvious references every fast route is tested against, in float64: the explicit
Jacobian contraction, the one-hidden-layer net's Jacobian written out by hand, GD on least
squares in function space, kernels with a known spectrum, and the relative error."""

from __future__ import annotations

import math

import torch
from torch import nn

from ntklab.models import OneHiddenLayer

F64 = torch.float64


def rel_err(A: torch.Tensor, B: torch.Tensor) -> float:
    """‖A − B‖ / ‖B‖."""
    return float((A - B).norm() / B.norm())


def explicit_jacobians(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """J as (n, k, p): one autograd gradient per sample and per output, over every trained
    parameter, stacked (k = 1 for an output of shape (n,) or (n, 1))."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for x in X:
        out = model(x[None]).reshape(-1)
        grads = [torch.autograd.grad(f, params, retain_graph=True) for f in out]
        rows.append(torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads]))
    return torch.stack(rows)


def explicit_jacobian(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """J as (n, p) for a model with one output."""
    J = explicit_jacobians(model, X)
    assert J.shape[1] == 1, "one output only; use explicit_jacobians"
    return J[:, 0]


def explicit_ntk(
    model: nn.Module, X1: torch.Tensor, X2: torch.Tensor | None = None, output: str | None = None
) -> torch.Tensor:
    """K(X1, X2) = J(X1) J(X2)ᵀ from explicit Jacobians: the (n1, n2, k, k) array of every
    output pair for `output="full"`, else its trace over the outputs (n1, n2)."""
    J1 = explicit_jacobians(model, X1)
    J2 = J1 if X2 is None else explicit_jacobians(model, X2)
    if output == "full":
        return torch.einsum("iap,jbp->ijab", J1, J2)
    return torch.einsum("iap,jap->ij", J1, J2)


def hand_jacobian(net: OneHiddenLayer, X: torch.Tensor) -> torch.Tensor:
    """∂h(x_i)/∂W_kj = v_k σ'(w_k·x_i) x_ij, written out for a net that trains only W: (n, m·d)."""
    S = net.sigma_prime(X @ net.W.detach().T)  # (n, m)
    J = (S * net.v)[:, :, None] * X[:, None, :]
    return J.reshape(X.shape[0], -1)


def gd_losses(K: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> list[float]:
    """Full-batch GD on L = ‖f − y‖²/n for a model linear in its parameters with kernel K, in
    function space from f = 0: f ← f − (2 lr / n) K (f − y). The losses L_0 … L_steps."""
    n = K.shape[0]
    r = -y.clone()
    losses = [float(r @ r) / n]
    for _ in range(steps):
        r = r - 2 * lr / n * (K @ r)
        losses.append(float(r @ r) / n)
    return losses


def clustered_kernel(
    n: int = 200, kappa: float = 1e8, seed: int = 1, size: int = 20, width: float = 0.01
) -> torch.Tensor:
    """K = Q diag(λ) Qᵀ (n, n) with λ from 1/κ to 1, log-spaced, plus a tight cluster at the
    bottom (as in NTK spectra): `size` eigenvalues (at most n/4) within `width` of λ_min."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    lam = torch.logspace(-math.log10(kappa), 0, n, dtype=F64)
    c = min(size, n // 4)
    lam[:c] = lam[0] * (1 + width * torch.linspace(0, 1, c, dtype=F64))
    return (Q * lam) @ Q.T
