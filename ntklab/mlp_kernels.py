"""The deep MLP's NTK in closed form: the empirical kernel layer by layer, never forming J, and
its infinite-width limit by the arc-cosine recursion (docs/theory.md, "Deep nets").

Layer l's weights enter h^l = c_l W^l a^{l−1} (a⁰ = x, a^l = σ(h^l)), so the gradient of output
f_a with respect to W^l is c_l δ^l_a (a^{l−1})ᵀ with δ^l_a = ∂f_a/∂h^l, and

    K_ab(x, x') = Σ_l c_l² ⟨δ^l_a(x), δ^l_b(x')⟩ · ⟨a^{l−1}(x), a^{l−1}(x')⟩:

per layer, a Gram of backpropagated sensitivities times a Gram of input activations (the
output layer's sensitivity is the identity: δ_ab). One forward and one backward sweep over all
n samples, then two (n × n) Grams per layer: O(n·Σ_l m_l m_{l−1} + n²·Σ_l m_l) time, O(n² + n·k·m)
memory, against O(n·p) memory for J (p = Σ_l m_l m_{l−1} parameters).
"""

from __future__ import annotations

import math

import torch

from ntklab.models import MLP
from ntklab.structured import exact_matmul

# Rows per block of a symmetric kernel: only the upper blocks are computed, then mirrored
# (3 of 4 block products at n = 1024; the Grams' temporaries stay (block × block)).
BLOCK = 512
Features = tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]


def _sweep(model: MLP, X: torch.Tensor) -> Features:
    """One forward and one backward sweep over X (n, d). For each hidden layer l = 1 … L the
    pair (a^{l−1} (n, m_{l−1}), c_l δ^l (n, k, m)), δ for all k outputs; and c_{L+1} a^L (n, m),
    the output layer's input (its sensitivity is the identity)."""
    W = [w.detach() for w in model.hidden]
    c = model.layer_multipliers()
    H, acts = model.layers(X)
    # δ^L_a = σ'(h^L) ⊙ c_{L+1} V_a, then δ^{l−1} = σ'(h^{l−1}) ⊙ (c_l δ^l W^l)
    delta = model.sigma_prime(H[-1])[:, None, :] * (model.out.detach() * c[-1])[None]
    scaled = [None] * model.depth
    for l in range(model.depth - 1, -1, -1):
        scaled[l] = delta if c[l] == 1.0 else delta * c[l]
        if l > 0:
            delta = (scaled[l] @ W[l]) * model.sigma_prime(H[l - 1])[:, None, :]
    return list(zip(acts[:-1], scaled, strict=True)), acts[-1] * c[-1]


def mlp_ntk(
    model: MLP, X1: torch.Tensor, X2: torch.Tensor | None = None, output: str | None = None
) -> torch.Tensor:
    """The empirical NTK of an MLP on X1 (n1, d) and X2 (n2, d) (X2 = X1 when None), in the
    model's dtype: (n1, n2) for one output or `output="trace"` (Σ_a K_aa), (n1, n2, k, k) for
    `output="full"`."""
    full, k = output == "full", model.outputs
    with torch.no_grad(), exact_matmul():
        F1 = _sweep(model, X1)
        if X2 is not None:
            return _block(F1, _sweep(model, X2), slice(None), slice(None), k, full)
        n = X1.shape[0]
        K = X1.new_empty((n, n, k, k) if full else (n, n))
        blocks = [slice(i, i + BLOCK) for i in range(0, n, BLOCK)]
        for a, I in enumerate(blocks):
            for J in blocks[a:]:  # the upper blocks; each lower one is its mirror image
                block = _block(F1, F1, I, J, k, full)
                K[I, J] = block
                if J != I:
                    K[J, I] = block.permute(1, 0, 3, 2) if full else block.T
        return K


def _block(F1: Features, F2: Features, I: slice, J: slice, k: int, full: bool) -> torch.Tensor:
    """The kernel's block between rows I of the first set and rows J of the second."""
    (L1, top1), (L2, top2) = F1, F2
    K = _output_part(top1[I] @ top2[J].T, k, full)
    for (A1, D1), (A2, D2) in zip(L1, L2, strict=True):
        G = A1[I] @ A2[J].T  # activation Gram
        D1, D2 = D1[I], D2[J]  # sensitivities (rows, k, m)
        if full:
            n1, n2 = D1.shape[0], D2.shape[0]
            S = (D1.reshape(n1 * k, -1) @ D2.reshape(n2 * k, -1).T).reshape(n1, k, n2, k)
            K.addcmul_(S.permute(0, 2, 1, 3), G[:, :, None, None])
        else:
            K.addcmul_(D1.reshape(D1.shape[0], -1) @ D2.reshape(D2.shape[0], -1).T, G)
    return K


def _output_part(G: torch.Tensor, k: int, full: bool) -> torch.Tensor:
    """The output layer's part: c² Gram(a^L) ⊗ I_k, (n1, n2, k, k); its trace k · c² Gram."""
    if not full:
        return G if k == 1 else G * k
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    return G[:, :, None, None] * eye


def arccos_moments(Sigma: torch.Tensor, negative_slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E[σ(u)σ(v)] and E[σ'(u)σ'(v)] for (u, v) ~ N(0, [[Σ_ii, Σ_ij], [Σ_ij, Σ_jj]]) and
    σ(z) = max(z, εz), for every pair: two (n, n) float64 matrices.

    With θ the angle of Σ_ij, σ = εz + (1 − ε) relu(z) gives ε Σ_ij + (1 − ε)² √(Σ_ii Σ_jj)
    (sin θ + (π − θ) cos θ)/(2π) (the degree-1 arc-cosine kernel) and (π − θ)(1 + ε²)/(2π)
    + ε θ/π (the signs agree with probability 1 − θ/π)."""
    eps = float(negative_slope)
    norms = torch.diagonal(Sigma).clamp_min(0).sqrt()
    N = norms[:, None] * norms[None, :]
    cos = torch.where(N > 0, Sigma / N.clamp_min(torch.finfo(Sigma.dtype).tiny), 1.0)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    arccos1 = N * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    value = eps * Sigma + (1 - eps) ** 2 * arccos1
    slope = (math.pi - theta) * (1 + eps**2) / (2 * math.pi) + eps * theta / math.pi
    return value, slope


def mlp_ntk_inf(model: MLP, X: torch.Tensor) -> torch.Tensor | None:
    """The m → ∞ limit of `mlp_ntk(model, X, output="trace")`, float64 (n, n): k Θ^{L+1} by

        Σ¹ = Θ¹ = X Xᵀ,   Σ^{l+1} = E[σ(u)σ(v)],   Θ^{l+1} = Σ^{l+1} + Θ^l ⊙ E[σ'(u)σ'(v)],

    (u, v) ~ N(0, Σ^l) (`arccos_moments`). None for activations without that closed form
    (tanh)."""
    if not model.act.piecewise_linear:
        return None
    X = X.to(torch.float64)
    Sigma = X @ X.T
    Theta = Sigma
    for _ in range(model.depth):
        Sigma, slope = arccos_moments(Sigma, model.negative_slope)
        Theta = Sigma + Theta * slope
    return Theta * model.outputs
