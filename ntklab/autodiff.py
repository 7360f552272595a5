"""The generic routes to the NTK of any `nn.Module`, by torch.func: per-sample Jacobians and
kernel–vector products, for one or k outputs and for a cross kernel K(X1, X2); and the checks
that make a module's per-sample kernel well defined.

A model's output on X (n, d) may be (n,) or (n, k); it is read as (n, k), k = 1 for (n,). The
kernel of k outputs is the (n1, n2, k, k) array K[i, j, a, b] = ⟨∇f_a(x_i), ∇f_b(x'_j)⟩ over
every trained parameter ("full"), or its trace over the outputs, Σ_a K[i, j, a, a] ("trace").
Buffers (BatchNorm's running statistics in eval mode) and untrained parameters are constants.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntklab.structured import exact_matmul

Tensors = dict[str, torch.Tensor]

# Layers whose output for one sample depends on the rest of the batch, or on chance, while in
# training mode: the per-sample kernel is then undefined.
BATCH_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def check_module(model: nn.Module) -> None:
    """Refuse a model whose per-sample NTK is undefined: BatchNorm (batch statistics) or
    Dropout (random masks) in training mode."""
    for name, layer in model.named_modules():
        if isinstance(layer, BATCH_DEPENDENT) and layer.training:
            kind = type(layer).__name__
            where = f"model.{name}" if name else "model"
            raise ValueError(
                f"{where} is a {kind} in training mode: its output for one sample depends on "
                f"{'the whole batch' if 'Norm' in kind else 'random masks'}, so the per-sample "
                "NTK is undefined; call model.eval() first (running statistics are then "
                "constants)"
            )


def split_parameters(model: nn.Module) -> tuple[Tensors, Tensors]:
    """(trained parameters, constants): J's rows are the trained parameters; untrained
    parameters and buffers are held fixed."""
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    frozen.update({k: b.detach() for k, b in model.named_buffers()})
    return params, frozen


def as_outputs(out: torch.Tensor, n: int) -> torch.Tensor:
    """A model's output on n samples as (n, k): (n,) → (n, 1), (n, k) as it is."""
    if out.ndim == 0 and n == 1:
        return out.reshape(1, 1)
    if out.ndim not in (1, 2) or out.shape[0] != n:
        raise ValueError(
            f"model(X) returned shape {tuple(out.shape)} for X with n={n} rows; the NTK needs "
            f"outputs of shape (n,) or (n, k)"
        )
    return out.reshape(n, -1)


def output_count(model: nn.Module, X: torch.Tensor) -> int:
    """k, the number of outputs per sample, from one forward pass on X's first row."""
    with torch.no_grad():
        return as_outputs(model(X[:1]), 1).shape[1]


def _jacobians(model: nn.Module, X: torch.Tensor, params: Tensors, frozen: Tensors) -> list:
    """Per-sample Jacobians of the k outputs, one (n, k, P) tensor per trained tensor."""

    def f(p: Tensors, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, frozen), (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, X)  # each (n, k, *param.shape)
    return [J.reshape(J.shape[0], J.shape[1], -1) for J in jac.values()]


def jacobian_kernel(
    model: nn.Module, X1: torch.Tensor, X2: torch.Tensor | None = None, full: bool = False
) -> torch.Tensor:
    """K = Σ_p J_p(X1) J_p(X2)ᵀ from per-sample Jacobians (vmap of jacrev), any module:
    (n1, n2) (summed over the outputs), or (n1, n2, k, k) with `full`. Memory O(n·k·p)."""
    params, frozen = split_parameters(model)
    with exact_matmul():
        J1 = _jacobians(model, X1, params, frozen)
        J2 = J1 if X2 is None else _jacobians(model, X2, params, frozen)
        K = None
        for A, B in zip(J1, J2, strict=True):
            if full:  # (n1 k, P) (n2 k, P)ᵀ, read as (n1, k, n2, k)
                P = A.reshape(-1, A.shape[2]) @ B.reshape(-1, B.shape[2]).T
            else:  # Σ_a over the outputs: (n1, k P) (n2, k P)ᵀ
                A, B = A.reshape(A.shape[0], -1), B.reshape(B.shape[0], -1)
                P = A @ B.T
            K = P if K is None else K + P
    if full:
        n1, k = J1[0].shape[:2]
        K = K.reshape(n1, k, -1, k).permute(0, 2, 1, 3)
    return K


def kernel_product(
    model: nn.Module, X1: torch.Tensor, X2: torch.Tensor, U: torch.Tensor
) -> torch.Tensor:
    """J(X1) J(X2)ᵀ U for U (n2, k): one VJP on X2, then one JVP on X1, never forming J or K:
    (n1, k). With X1 = X2 it is the full kernel's product K u."""
    params, frozen = split_parameters(model)

    def outputs(X: torch.Tensor):
        return lambda p: as_outputs(functional_call(model, (p, frozen), (X,)), X.shape[0])

    with exact_matmul():
        _, pullback = vjp(outputs(X2), params)
        (tangent,) = pullback(U.to(X2.dtype))  # J(X2)ᵀ U: a direction in parameter space
        _, KU = jvp(outputs(X1), (params,), (tangent,))
    return KU.detach()


def assembled_kernel(
    model: nn.Module, X1: torch.Tensor, X2: torch.Tensor | None, k: int, full: bool
) -> torch.Tensor:
    """K assembled one column (sample j, output b) at a time from `kernel_product`, to check
    the matrix-free products (small n): (n1, n2) summed over the outputs, or (n1, n2, k, k)."""
    X2 = X1 if X2 is None else X2
    n1, n2 = X1.shape[0], X2.shape[0]
    K = torch.empty(n1, n2, k, k, dtype=X1.dtype, device=X1.device)
    E = torch.zeros(n2, k, dtype=X1.dtype, device=X1.device)
    for j in range(n2):
        for b in range(k):
            E[j, b] = 1.0
            K[:, j, :, b] = kernel_product(model, X1, X2, E)
            E[j, b] = 0.0
    return K if full else torch.diagonal(K, dim1=2, dim2=3).sum(-1)
