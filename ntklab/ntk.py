"""The empirical NTK K = JᵀJ (n, n) of a model on X, and the cross kernel K(X1, X2) of one or k
outputs: the methods that compute it, K·u products, and the choice between a dense kernel and a
matrix-free one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from enum import Enum

import torch
from torch import nn

from ntklab.autodiff import (
    assembled_kernel,
    check_module,
    jacobian_kernel,
    kernel_product,
    output_count,
)
from ntklab.fixedpoint import PatternOperator
from ntklab.kernels import cross_model_ntk, model_ntk
from ntklab.mlp_kernels import mlp_ntk
from ntklab.models import MLP, OneHiddenLayer, PlainLinear, trains_only_W
from ntklab.structured import StructuredOperator, exact_matmul  # noqa: F401  (ntk.exact_matmul)

Operator = Callable[[torch.Tensor], torch.Tensor]


class Method(str, Enum):
    """How K is computed. Each method trades generality, memory and speed:

    STRUCTURED: the closed forms, never forming J. The one-hidden-layer net's
        (`kernels.model_ntk`): O(n²(m + d)) time and O(n² + n·chunk) memory, exact integer
        co-activation counts for the default output layer, every option included. The deep
        MLP's (`mlp_kernels.mlp_ntk`): per layer, a sensitivity Gram times an activation Gram.
        The plain linear model's: X Xᵀ.
    JACOBIAN: per-sample Jacobians by `vmap(jacrev)`, then Σ_p J_p J_pᵀ. Any `nn.Module`, one
        output or k; O(n·k·p) memory for J (p trained parameters). The reference recipe.
    NTVP: matrix-free. K is never formed during training: λ_max and λ_min come from a
        Davidson solver on u ↦ K u (one VJP and one JVP for any model; for a OneHiddenLayer
        that trains only W, two int8 products through its activation pattern). `empirical_ntk`
        assembles K column by column from the same products, to check them. O(n·p) per
        product, O(n·basis) memory.
    AUTO: STRUCTURED for the nets that have a closed form, else JACOBIAN; in a run (with a
        memory budget, `resolve_method`) NTVP where K and its float64 `eigvalsh` do not fit.
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


def jacobian_ntk(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Generic K = Σ_p J_p J_pᵀ from per-sample Jacobians (vmap of jacrev), any module whose
    trainable parameters are J's rows, summed over its outputs: (n, n). Memory O(n·p). This is
    PyTorch's NTK tutorial recipe, and the route any module can take."""
    return jacobian_kernel(model, X)


def ntk_vector_product(model: nn.Module, X: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """K u = J(Jᵀ u) for any model, one VJP then one JVP, never forming J or K: u (n,) → (n,)
    for a model with one output ((n,) or (n, 1)); u (n, k) → (n, k) for k outputs (the full
    kernel's product)."""
    U = u.reshape(X.shape[0], -1)
    return kernel_product(model, X, X, U).reshape(u.shape)


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


STRUCTURED_MODELS = (OneHiddenLayer, MLP, PlainLinear)  # the models with a closed-form kernel


def _structured(model, X1, X2, full: bool) -> torch.Tensor:
    if isinstance(model, MLP):
        return mlp_ntk(model, X1, X2, output="full" if full else None)
    if isinstance(model, PlainLinear):  # ∇_w ⟨w, x⟩ = x: K = X1 X2ᵀ, for every w
        K = X1 @ (X1 if X2 is None else X2).T
        return K[:, :, None, None] if full else K
    if not isinstance(model, OneHiddenLayer):
        raise TypeError(
            f"method='structured' is the closed form of OneHiddenLayer, MLP and PlainLinear; "
            f"{type(model).__name__} is none of them: use method='jacobian' (any module), "
            "method='ntvp', or method='auto' (which picks the route that applies)"
        )
    K = model_ntk(model, X1) if X2 is None else cross_model_ntk(model, X1, X2)
    return K[:, :, None, None] if full else K


def _assembled(model, X1, X2, full: bool) -> torch.Tensor:
    """K from the matrix-free products, column block by column block (to check them; small n)."""
    if X2 is None and not full and trains_only_W(model):
        apply = ntk_operator(model, X1, dtype=X1.dtype)
        n = X1.shape[0]
        eye = torch.eye(n, dtype=X1.dtype, device=X1.device)
        K = torch.cat([apply(eye[:, j : j + 256]) for j in range(0, n, 256)], dim=1)
        return ((K + K.T) / 2).to(X1.dtype)
    k = output_count(model, X1)
    K = assembled_kernel(model, X1, X2, k, full)
    if X2 is None:  # symmetric up to the products' round-off: K[i, j, a, b] = K[j, i, b, a]
        K = (K + (K.permute(1, 0, 3, 2) if full else K.T)) / 2
    return K


def _jacobian(model, X1, X2, full: bool) -> torch.Tensor:
    return jacobian_kernel(model, X1, X2, full=full)


_DENSE: dict[Method, Callable[..., torch.Tensor]] = {
    Method.STRUCTURED: _structured,
    Method.JACOBIAN: _jacobian,
    Method.NTVP: _assembled,
}
OUTPUTS = ("trace", "full")


def outputs_of(model: nn.Module, X: torch.Tensor) -> int:
    """k, the model's outputs per sample: known for the nets with a closed form, else from one
    forward pass (after refusing layers that make the per-sample kernel undefined)."""
    if isinstance(model, MLP):
        return model.outputs
    if isinstance(model, (OneHiddenLayer, PlainLinear)):
        return 1
    check_module(model)
    return output_count(model, X)


def dense_method(model: nn.Module) -> Method:
    """The dense method for `model`: the closed form for the nets that have one, else jacobian."""
    return Method.STRUCTURED if isinstance(model, STRUCTURED_MODELS) else Method.JACOBIAN


def parse_method(method: Method | str) -> Method:
    """`method` as a Method; a ValueError naming the argument for an unknown name."""
    try:
        return Method(method)
    except ValueError:
        names = ", ".join(m.value for m in Method)
        raise ValueError(f"method={method!r} is unknown; choose one of {names}") from None


def _parse(method: Method | str, output: str | None) -> Method:
    method = parse_method(method)
    if output is not None and output not in OUTPUTS:
        raise ValueError(
            f"output={output!r} is unknown; choose 'trace' (n1, n2) or 'full' (n1, n2, k, k)"
        )
    return method


def empirical_ntk(
    model: nn.Module,
    X1: torch.Tensor,
    X2: torch.Tensor | None = None,
    *,
    method: Method | str = Method.AUTO,
    output: str | None = None,
) -> torch.Tensor:
    """The empirical NTK K(X1, X2) = J(X1) J(X2)ᵀ of `model` on X1 (n1, d) and X2 (n2, d)
    (X2 = X1 when None) by `method` (a Method or its name). "auto" takes the closed form for
    OneHiddenLayer, MLP and PlainLinear, and the generic jacobian route for any other module.

    A model with one output ((n,) or (n, 1)) gives (n1, n2). A model with k > 1 outputs needs
    `output`: "trace" gives (n1, n2), Σ_a J_a J_aᵀ; "full" gives (n1, n2, k, k), the kernel
    between every pair of outputs ("full" on one output gives (n1, n2, 1, 1))."""
    if isinstance(X2, (str, Method)):  # the old positional `method`
        raise TypeError(f"method is keyword-only: empirical_ntk(model, X, method={str(X2)!r})")
    method = _parse(method, output)
    k = outputs_of(model, X1)
    if k > 1 and output is None:
        raise ValueError(
            f"the model has k={k} outputs: pass output='trace' for the (n1, n2) kernel "
            "Σ_a J_a J_aᵀ, or output='full' for the (n1, n2, k, k) kernel of every output pair"
        )
    if method is Method.AUTO:
        method = dense_method(model)
    grad_free = method is not Method.JACOBIAN
    with torch.no_grad() if grad_free else contextlib.nullcontext():
        return _DENSE[method](model, X1, X2, output == "full")


def output_trace(K: torch.Tensor) -> torch.Tensor:
    """Σ_a K[:, :, a, a]: the (n1, n2) trace of a (n1, n2, k, k) kernel."""
    return torch.diagonal(K, dim1=2, dim2=3).sum(-1)


def full_matrix(K: torch.Tensor) -> torch.Tensor:
    """A (n1, n2, k, k) kernel as the (n1·k, n2·k) matrix of its k × k blocks, sample-major:
    the kernel of the vector of all n·k outputs, whose eigenvalues govern their dynamics."""
    n1, n2, k, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(n1 * k, n2 * k)


def dense_bytes(n: int, p: int, dtype: torch.dtype, method: Method) -> int:
    """Peak memory of a dense kernel and its float64 eigvalsh: K, its float64 copy and
    LAPACK's workspace (~3 n² float64), int32 co-activation counts, and J (n, p) for jacobian."""
    size = n * n * (torch.empty((), dtype=dtype).element_size() + 4 + 3 * 8)
    return size + (n * p * 8 if method is Method.JACOBIAN else 0)


def available_bytes(device: torch.device) -> float:
    """Memory a new allocation may take on `device`: free GPU memory, or the kernel's
    MemAvailable on Linux (inf where it cannot be read)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


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
