"""The empirical NTK K = JᵀJ (n, n) of a model on X: closed form, generic Jacobian, products."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap


@contextlib.contextmanager
def exact_matmul() -> Iterator[None]:
    """TF32 off while kernels are computed: its 10-bit mantissa would swamp λ_min."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def activation_slopes(X: torch.Tensor, W: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """S_ik = σ'(w_k·x_i) ∈ {1, ε}: (n, m)."""
    Z = X @ W.T
    one = torch.ones((), dtype=Z.dtype, device=Z.device)
    return torch.where(Z >= 0, one, one * negative_slope)


def structured_ntk(
    X: torch.Tensor, W: torch.Tensor, v: torch.Tensor, negative_slope: float
) -> torch.Tensor:
    """Closed form K = (X Xᵀ) ⊙ (S diag(v²) Sᵀ) for h = <v, σ(W x)> with W trained: (n, n).

    X (n, d), W (m, d), v (m,). Never forms J; O(n²(m + d)) time, O(n² + nm) memory.
    """
    with exact_matmul():
        G = X @ X.T
        if negative_slope == 1.0:
            return G * (v @ v)
        S = activation_slopes(X, W, negative_slope)
        return G * ((S * (v * v)) @ S.T)


def structured_ntvp(
    X: torch.Tensor, W: torch.Tensor, v: torch.Tensor, negative_slope: float, u: torch.Tensor
) -> torch.Tensor:
    """K u without forming K: ((S ⊙ (X (Xᵀ (S ⊙ u)))) v²) summed over neurons. u (n,) → (n,)."""
    with exact_matmul():
        S = activation_slopes(X, W, negative_slope)  # (n, m)
        A = X.T @ (S * u[:, None])  # (d, m): column k is Σ_i u_i S_ik x_i
        return ((X @ A) * S) @ (v * v)


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
    module whose trainable parameters are J's rows: (n, n). Memory O(n·p)."""
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
        (Ju,) = pullback(u)  # J u: a tangent in parameter space
        _, Ku = jvp(h, (params,), (Ju,))
    return Ku


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


METHODS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "structured": _structured,
    "jacobian": jacobian_ntk,
}


def empirical_ntk(model: nn.Module, X: torch.Tensor, method: str = "structured") -> torch.Tensor:
    """The empirical NTK K = JᵀJ of `model` on X (n, d) by `method` (a key of METHODS): (n, n)."""
    if method not in METHODS:
        raise ValueError(f"ntk.method={method!r} is unknown; choose one of {sorted(METHODS)}")
    with torch.no_grad() if method == "structured" else contextlib.nullcontext():
        return METHODS[method](model, X)
