"""The empirical NTK K = JᵀJ (n, n) of a model on X: the methods that compute it, K·u products,
and the choice between a dense kernel and a matrix-free one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from enum import Enum

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntklab.fixedpoint import PatternOperator
from ntklab.kernels import model_ntk
from ntklab.models import OneHiddenLayer, trains_only_W
from ntklab.structured import StructuredOperator, exact_matmul

Operator = Callable[[torch.Tensor], torch.Tensor]


class Method(str, Enum):
    """How K is computed. Each method trades generality, memory and speed:

    STRUCTURED: the one-hidden-layer net's closed form (`kernels.model_ntk`), never forming J:
        O(n²(m + d)) time and O(n² + n·chunk) memory, exact integer co-activation counts for
        the default output layer. OneHiddenLayer only, every option included.
    JACOBIAN: per-sample Jacobians by `vmap(jacrev)`, then Σ_p J_p J_pᵀ. Any scalar-output
        `nn.Module`; O(n·p) memory for J (p trained parameters). The reference recipe.
    NTVP: matrix-free. K is never formed during training: λ_max and λ_min come from a
        Davidson solver on u ↦ K u (one VJP and one JVP for any model; for a OneHiddenLayer
        that trains only W, two int8 products through its activation pattern). `empirical_ntk`
        assembles K column by column from the same products, to check them. O(n·p) per
        product, O(n·basis) memory.
    AUTO: a dense kernel (STRUCTURED where its fast closed form applies, else JACOBIAN) when K
        and its float64 `eigvalsh` fit a memory budget, else NTVP.
    """

    STRUCTURED = "structured"
    JACOBIAN = "jacobian"
    NTVP = "ntvp"
    AUTO = "auto"

    def __str__(self) -> str:
        return self.value

    @property
    def matrix_free(self) -> bool:
        return self is Method.NTVP


def _trainable(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    frozen.update({k: b.detach() for k, b in model.named_buffers()})
    return params, frozen


def jacobian_ntk(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Generic K = Σ_p J_p J_pᵀ from per-sample Jacobians (vmap of jacrev), any scalar-output
    module whose trainable parameters are J's rows: (n, n). Memory O(n·p). This is PyTorch's
    NTK tutorial recipe, and the route any module can take."""
    params, frozen = _trainable(model)

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, frozen), (x.unsqueeze(0),)).squeeze(0)

    with exact_matmul():
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, X)  # each (n, *param.shape)
        K = None
        for J in jac.values():
            J = J.reshape(J.shape[0], -1)
            K = J @ J.T if K is None else K + J @ J.T
    return K


def ntk_vector_product(model: nn.Module, X: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """K u = Jᵀ(J u) for any model, one VJP then one JVP, never forming J or K: (n,)."""
    params, frozen = _trainable(model)

    def h(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (p, frozen), (X,))

    with exact_matmul():
        _, pullback = vjp(h, params)
        (Ju,) = pullback(u.to(X.dtype))  # J u: a tangent in parameter space
        _, Ku = jvp(h, (params,), (Ju,))
    return Ku.detach()


def ntk_operator(model: nn.Module, X: torch.Tensor, dtype: torch.dtype = torch.float64) -> Operator:
    """u ↦ K u without forming K, u (n,) or (n, b): for a OneHiddenLayer that trains only W, the
    exact integer product through its activation pattern (a leaky ReLU: float64 results, and a
    `fast` method) or the two-GEMM product in `dtype` (the linear net); else the generic VJP +
    JVP (in the model's dtype)."""
    if trains_only_W(model):
        if 0.0 <= model.negative_slope < 1.0:
            return PatternOperator(X, model.W, model.v, model.negative_slope)
        return StructuredOperator(X, model.W, model.v, model.negative_slope, dtype=dtype)

    def generic(u: torch.Tensor) -> torch.Tensor:
        U = u.reshape(X.shape[0], -1)
        cols = [ntk_vector_product(model, X, U[:, j]) for j in range(U.shape[1])]
        return torch.stack(cols, dim=1).reshape(u.shape)

    return generic


def _structured(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    if not isinstance(model, OneHiddenLayer):
        raise TypeError(
            f"method='structured' is the closed form of a OneHiddenLayer; {type(model).__name__} "
            "is not one: use method='jacobian' (any module) or method='ntvp'"
        )
    return model_ntk(model, X)


def _assembled(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """K column block by column block from the matrix-free product (to check it; small n)."""
    apply = ntk_operator(model, X, dtype=X.dtype)
    n = X.shape[0]
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    K = torch.cat([apply(eye[:, j : j + 256]) for j in range(0, n, 256)], dim=1)
    return ((K + K.T) / 2).to(X.dtype)


_DENSE: dict[Method, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    Method.STRUCTURED: _structured,
    Method.JACOBIAN: jacobian_ntk,
    Method.NTVP: _assembled,
}


def dense_method(model: nn.Module) -> Method:
    """The dense method for `model`: the fast closed form where it applies, else jacobian."""
    return Method.STRUCTURED if trains_only_W(model) else Method.JACOBIAN


def empirical_ntk(
    model: nn.Module, X: torch.Tensor, method: Method | str = Method.STRUCTURED
) -> torch.Tensor:
    """The empirical NTK K = JᵀJ of `model` on X (n, d) by `method` (a Method or its name):
    (n, n). "auto" takes the closed form where its fast path applies, else jacobian."""
    try:
        method = Method(method)
    except ValueError:
        names = ", ".join(m.value for m in Method)
        raise ValueError(f"method={method!r} is unknown; choose one of {names}") from None
    if method is Method.AUTO:
        method = dense_method(model)
    grad_free = method is not Method.JACOBIAN
    with torch.no_grad() if grad_free else contextlib.nullcontext():
        return _DENSE[method](model, X)


def dense_bytes(n: int, p: int, dtype: torch.dtype, method: Method) -> int:
    """Peak memory of a dense kernel and its float64 eigvalsh: K, its float64 copy and
    LAPACK's workspace (~3 n² float64), int32 co-activation counts, and J (n, p) for jacobian."""
    size = n * n * (torch.empty((), dtype=dtype).element_size() + 4 + 3 * 8)
    return size + (n * p * 8 if method is Method.JACOBIAN else 0)


def resolve_method(
    method: Method | str, model: nn.Module, X: torch.Tensor, budget_bytes: float
) -> Method:
    """The method a run uses: `method` itself, or for "auto" the dense method when the kernel
    and its eigvalsh fit `budget_bytes`, else the matrix-free "ntvp"."""
    method = Method(method)
    if method is not Method.AUTO:
        return method
    dense = dense_method(model)
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    return dense if dense_bytes(X.shape[0], p, X.dtype, dense) <= budget_bytes else Method.NTVP
