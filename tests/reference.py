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


def explicit_jacobian(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """J as (n, p): one autograd gradient of the scalar output per sample, over every trained
    parameter, stacked."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for x in X:
        grads = torch.autograd.grad(model(x[None]).sum(), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def explicit_ntk(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """K = J Jᵀ (n, n) from the explicit Jacobian."""
    J = explicit_jacobian(model, X)
    return J @ J.T


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
