"""The empirical NTK K = JᵀJ (n, n) of a model on X: every method, and K·u products."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntklab.structured import (
    StructuredOperator,
    activation_slopes,
    exact_matmul,
    structured_ntk,
)

__all__ = [
    "DENSE_METHODS",
    "METHODS",
    "MATRIX_FREE",
    "activation_slopes",
    "choose_method",
    "dense_bytes",
    "empirical_ntk",
    "exact_matmul",
    "jacobian_ntk",
    "ntk_operator",
    "ntk_vector_product",
    "structured_ntk",
    "structured_ntvp",
]


def structured_ntvp(
    X: torch.Tensor, W: torch.Tensor, v: torch.Tensor, negative_slope: float, u: torch.Tensor
) -> torch.Tensor:
    """K u without forming K: ((S ⊙ (X (Xᵀ (S ⊙ u)))) v²) summed over neurons. u (n,) → (n,)."""
    return StructuredOperator(X, W, v, negative_slope, dtype=X.dtype, cache_bytes=0)(u)


def _trainable(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    frozen.update({k: b.detach() for k, b in model.named_buffers()})
    return params, frozen


def _scalar_fn(model: nn.Module, frozen: dict[str, torch.Tensor]) -> Callable:
    def f(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (params, frozen), (x.unsqueeze(0),)).squeeze(0)

    return f


def jacobian_ntk(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Generic K = Σ_p J_p J_pᵀ from per-sample Jacobians (vmap of jacrev), any scalar-output
    module whose trainable parameters are J's rows: (n, n). Memory O(n·p). This is PyTorch's
    NTK tutorial recipe, kept as the reference every faster method is tested against."""
    params, frozen = _trainable(model)
    f = _scalar_fn(model, frozen)
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


def _w_only(model: nn.Module) -> bool:
    """The closed forms hold for OneHiddenLayer-like nets whose only trained tensor is W
    (and no output scale other than 1)."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    has_attrs = all(hasattr(model, a) for a in ("W", "v", "negative_slope"))
    return has_attrs and names == ["W"] and float(getattr(model, "alpha", 1.0)) == 1.0


def output_layer_ntk(
    X: torch.Tensor, W: torch.Tensor, negative_slope: float, multiplier: float
) -> torch.Tensor:
    """The trained output layer's part c² Φ Φᵀ, Φ = σ(X Wᵀ) (n, m), c = ∂h/∂(output param)_k
    divided by σ(w_k·x) (1/√m in the NTK parameterization, 1 in the standard one): (n, n)."""
    with exact_matmul():
        Z = X @ W.T
        Phi = Z if negative_slope == 1.0 else torch.where(Z >= 0, Z, negative_slope * Z)
        Phi = Phi * multiplier
        return Phi @ Phi.T


def model_structured_ntk(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """The closed-form kernel of a OneHiddenLayer with its options: α² (K_W + K_out), where
    K_out (output_layer_ntk) is there only when the output layer is trained: (n, n)."""
    W, v, eps = model.W.detach(), model.v.detach(), model.negative_slope
    K = structured_ntk(X, W, v, eps)
    if getattr(model, "train_output", False):
        K = K + output_layer_ntk(X, W, eps, model.output_multiplier)
    alpha = getattr(model, "alpha", 1.0)
    return K if alpha == 1.0 else K * alpha**2


def _structured(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    if not all(hasattr(model, a) for a in ("W", "v", "negative_slope")):
        raise TypeError(
            f"ntk.method=structured needs a OneHiddenLayer-like model (W, v, negative_slope); "
            f"{type(model).__name__} has none: use ntk.method=jacobian"
        )
    return model_structured_ntk(model, X)


def ntk_operator(
    model: nn.Module, X: torch.Tensor, dtype: torch.dtype = torch.float64
) -> Callable[[torch.Tensor], torch.Tensor]:
    """u ↦ K u without forming K: the structured product for W-only one-hidden-layer nets
    (products in `dtype`), else the generic VJP + JVP (in the model's dtype). u (n,) or (n, b)."""
    if _w_only(model):
        return StructuredOperator(X, model.W, model.v, model.negative_slope, dtype=dtype)

    def generic(u: torch.Tensor) -> torch.Tensor:
        U = u.reshape(X.shape[0], -1)
        cols = [ntk_vector_product(model, X, U[:, j]) for j in range(U.shape[1])]
        return torch.stack(cols, dim=1).reshape(u.shape)

    return generic


def _ntvp_dense(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """K column block by column block from the matrix-free product (for tests and small n)."""
    apply = ntk_operator(model, X, dtype=X.dtype)
    n = X.shape[0]
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    K = torch.cat([apply(eye[:, j : j + 256]) for j in range(0, n, 256)], dim=1)
    return ((K + K.T) / 2).to(X.dtype)


DENSE_METHODS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "structured": _structured,
    "jacobian": jacobian_ntk,
}
# Methods that never need K: the tracker uses products u ↦ K u and iterative eigensolvers.
MATRIX_FREE: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "ntvp": _ntvp_dense,
}
# Every ntk.method a config may name; "auto" is resolved by the tracker from a memory budget.
METHODS: dict[str, Callable | None] = {**DENSE_METHODS, **MATRIX_FREE, "auto": None}


def empirical_ntk(model: nn.Module, X: torch.Tensor, method: str = "structured") -> torch.Tensor:
    """The empirical NTK K = JᵀJ of `model` on X (n, d) by `method`: (n, n). "ntvp" builds K
    from matrix-free products; "auto" uses the closed form where it applies, else jacobian."""
    if method == "auto":
        method = "structured" if _w_only(model) else "jacobian"
    if method not in METHODS:
        raise ValueError(f"ntk.method={method!r} is unknown; choose one of {sorted(METHODS)}")
    with torch.no_grad() if method != "jacobian" else contextlib.nullcontext():
        return METHODS[method](model, X)


def dense_bytes(n: int, p: int, dtype: torch.dtype, method: str) -> int:
    """Peak memory of a dense kernel and its float64 eigvalsh: K, its float64 copy and
    LAPACK's workspace (~3 n² float64), int32 co-activation counts, and J (n, p) for jacobian."""
    size = n * n * (torch.empty((), dtype=dtype).element_size() + 4 + 3 * 8)
    return size + (n * p * 8 if method == "jacobian" else 0)


def choose_method(model: nn.Module, X: torch.Tensor, budget_bytes: float) -> str:
    """ntk.method=auto: the dense closed form (or jacobian where it does not apply) when the
    kernel and its eigvalsh fit `budget_bytes`, else the matrix-free "ntvp"."""
    dense = "structured" if _w_only(model) else "jacobian"
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    return dense if dense_bytes(X.shape[0], p, X.dtype, dense) <= budget_bytes else "ntvp"
