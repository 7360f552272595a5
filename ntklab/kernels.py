"""The one-hidden-layer net's NTK in closed form: at finite width and in the m → ∞ limit, side
by side, with the net's options (a trained output layer, an output scale α).

For f = α h the kernel is K = α² (K_W + K_out). K_W is the hidden layer's part: the empirical
one is `structured.structured_ntk`, its limit `infinite_width_ntk`. K_out is the trained output
layer's part, there only when that layer is trained: the empirical c² Φ Φᵀ
(`output_layer_ntk`) and its limit, the arc-cosine kernel (`infinite_width_output_ntk`).
"""

from __future__ import annotations

import math

import torch

from ntklab.models import OneHiddenLayer, sigma, sigma_prime
from ntklab.structured import default_chunk, exact_matmul, structured_ntk


def output_layer_ntk(
    X: torch.Tensor, W: torch.Tensor, negative_slope: float, multiplier: float
) -> torch.Tensor:
    """The trained output layer's part c² Φ Φᵀ, Φ = σ(X Wᵀ) (n, m), c = ∂h/∂(output param)_k
    divided by σ(w_k·x) (1/√m in the NTK parameterization, 1 in the standard one): (n, n)."""
    with exact_matmul():
        Phi = sigma(X @ W.T, negative_slope) * multiplier
        return Phi @ Phi.T


# Pairs with |cos θ| above this get ‖u_i ∓ u_j‖ as norms of differences; below it the Gram
# matrix gives sin θ = √(1 − cos² θ) to a few eps (1 − cos² θ ≥ 31/256).
NEAR_PARALLEL = 15 / 16
PAIRS_PER_CHUNK = 2**16  # rows of the (pairs, d) differences at a time


def _angles(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gram G = X Xᵀ, norms product N_ij = ‖x_i‖‖x_j‖ and angles θ_ij ∈ [0, π], all (n, n).

    θ = atan2(sin θ, cos θ) from the unit vectors u_i. Near θ = 0 and π, where arccos(x_i·x_j /
    N_ij) loses half the digits, sin θ = ‖u_i − u_j‖ ‖u_i + u_j‖ / 2 and cos θ = (‖u_i + u_j‖² −
    ‖u_i − u_j‖²) / 4 with the distances taken as norms of differences (the diagonal among
    them: θ_ii = 0 exactly); elsewhere (|cos θ| ≤ 15/16) cos θ = u_i·u_j from one Gram product
    and sin θ = √(1 − cos² θ) are as accurate. The (n, n) passes run in place."""
    G = X @ X.T
    norms = X.norm(dim=1)
    N = norms[:, None] * norms[None, :]
    U = X / norms.clamp_min(torch.finfo(X.dtype).tiny)[:, None]
    C = U @ U.T  # cos θ
    theta = torch.square(C).neg_().add_(1).clamp_min_(0).sqrt_()  # sin θ
    torch.atan2(theta, C, out=theta)
    del C
    edge = math.acos(NEAR_PARALLEL)
    near = (theta < edge).logical_or_(theta > math.pi - edge)
    rows, cols = torch.nonzero(near, as_tuple=True)
    del near
    for k in range(0, rows.numel(), PAIRS_PER_CHUNK):
        i, j = rows[k : k + PAIRS_PER_CHUNK], cols[k : k + PAIRS_PER_CHUNK]
        minus = torch.linalg.vector_norm(U[i] - U[j], dim=1)
        plus = torch.linalg.vector_norm(U[i] + U[j], dim=1)
        theta[i, j] = torch.atan2(minus * plus / 2, (plus.square() - minus.square()) / 4)
    zero = torch.nonzero(norms == 0, as_tuple=True)[0]
    theta[zero] = 0.0
    theta[:, zero] = 0.0
    return G, N, theta


def infinite_width_ntk(X: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """K∞_ij = (x_i·x_j)[(π − θ_ij)(1 + ε²)/(2π) + ε θ_ij/π]: (n, n), float64.

    The m → ∞ limit (and, for Rademacher v with ‖v‖² = 1, the exact mean over inits) of the
    hidden layer's kernel K_W for w ~ N(0, I) (docs/theory.md). ε = 1 (the linear net) gives
    X Xᵀ; ε = 0 gives Du et al.'s H∞.
    """
    X = X.to(torch.float64)
    eps = float(negative_slope)
    G, _, theta = _angles(X)
    # (π − θ)(1 + ε²)/(2π) + εθ/π = (1 + ε²)/2 + θ (ε/π − (1 + ε²)/(2π)), in place
    theta.mul_(eps / math.pi - (1 + eps**2) / (2 * math.pi)).add_((1 + eps**2) / 2)
    return G.mul_(theta)


def infinite_width_output_ntk(X: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """The output layer's part E_w[σ(w·x_i) σ(w·x_j)], w ~ N(0, I): (n, n), float64.

    The NTK-parameterized limit of (1/m) Σ_k σ(w_k·x_i) σ(w_k·x_j). With σ(z) = εz + (1−ε)relu(z)
    it is ε(x_i·x_j) + (1−ε)² ‖x_i‖‖x_j‖ (sin θ + (π − θ) cos θ)/(2π) (arc-cosine kernel).
    """
    X = X.to(torch.float64)
    eps = float(negative_slope)
    G, N, theta = _angles(X)
    arccos1 = N * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    return eps * G + (1 - eps) ** 2 * arccos1


def model_ntk(model: OneHiddenLayer, X: torch.Tensor) -> torch.Tensor:
    """The empirical kernel of `model` on X (n, d) in closed form: α² (K_W + K_out), (n, n)."""
    W, v, eps = model.W.detach(), model.v.detach(), model.negative_slope
    K = structured_ntk(X, W, v, eps)
    if model.train_output:
        K = K + output_layer_ntk(X, W, eps, model.output_multiplier)
    return K if model.alpha == 1.0 else K * model.alpha**2


def cross_model_ntk(model: OneHiddenLayer, X1: torch.Tensor, X2: torch.Tensor) -> torch.Tensor:
    """The cross kernel K(X1, X2) of `model` in closed form, (n1, n2) in the model's dtype:
    α² ((X1 X2ᵀ) ⊙ (S1 diag(v²) S2ᵀ) + c² Φ1 Φ2ᵀ), neurons a slab at a time."""
    W, v, eps = model.W.detach(), model.v.detach(), model.negative_slope
    M = torch.zeros(X1.shape[0], X2.shape[0], dtype=X1.dtype, device=X1.device)
    out = torch.zeros_like(M) if model.train_output else None
    chunk = default_chunk(max(X1.shape[0], X2.shape[0]), W.shape[0])
    with exact_matmul(), torch.no_grad():
        for k in range(0, W.shape[0], chunk):
            Z1, Z2 = X1 @ W[k : k + chunk].T, X2 @ W[k : k + chunk].T
            M.addmm_(sigma_prime(Z1, eps) * v[k : k + chunk] ** 2, sigma_prime(Z2, eps).T)
            if out is not None:
                out.addmm_(sigma(Z1, eps), sigma(Z2, eps).T)
        K = M.mul_(X1 @ X2.T)
        if out is not None:
            K.add_(out, alpha=model.output_multiplier**2)
    return K if model.alpha == 1.0 else K * model.alpha**2


def model_ntk_inf(model: OneHiddenLayer, X: torch.Tensor) -> torch.Tensor | None:
    """Its infinite-width limit α² (K∞_W + K∞_out), float64 (n, n). None where no finite limit
    exists: a trained output layer in the standard parameterization grows like m."""
    eps = model.negative_slope
    K = infinite_width_ntk(X, eps)
    if model.train_output:
        if model.parameterization != "ntk":
            return None
        K = K + infinite_width_output_ntk(X, eps)
    return K * model.alpha**2
