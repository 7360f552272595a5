"""The one-hidden-layer net's kernel in closed form: symmetric dense blocks and K·u products.

For h = <v, σ(W x)> with W trained and v fixed, K = (X Xᵀ) ⊙ (S diag(v²) Sᵀ), S_ik = σ'(w_k·x_i).
For leaky ReLU S = ε + (1 − ε) B with B ∈ {0, 1} the activation pattern, so when every v_k²
is the same number s (the default v_k = ±1/√m):

    S diag(v²) Sᵀ = s · (m ε² + ε(1 − ε)(c_i + c_j) + (1 − ε)² B Bᵀ),   c = B 1,

and the only heavy product, B Bᵀ, counts co-activations: integers, computed exactly in
int8 × int8 → int32 (several times faster than float32 on CPUs with VNNI and on GPUs).
Only the upper triangle of row blocks is computed, and neurons are taken `chunk` at a time,
so memory stays O(n² + n·chunk).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ntklab.models import sigma_prime


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


# Working-set sizes (elements): an (n, chunk) slab of pre-activations, and row blocks of at
# least 1024 rows (each block product has a fixed cost that small blocks do not repay).
SLAB_ELEMENTS = 2**24
MIN_BLOCK = 1024
PATTERN_ELEMENTS = 2**21  # pre-activations compared per block (8 MiB in float32)


def default_chunk(n: int, m: int) -> int:
    """Neurons per slab: an (n, chunk) float32 slab is at most 64 MiB; a multiple of 64."""
    return max(64, min(m, (SLAB_ELEMENTS // max(n, 1)) // 64 * 64))


def default_block(n: int) -> int:
    """Rows per block: at most four blocks (10 of 16 products computed, by symmetry) and
    none below MIN_BLOCK rows; a multiple of 64 (GPU int8 kernels want multiples of 8)."""
    return max(MIN_BLOCK, -(-n // 256) * 64)


def row_blocks(n: int, block: int) -> list[slice]:
    return [slice(i, min(i + block, n)) for i in range(0, n, block)]


def uniform_square(v: torch.Tensor) -> float | None:
    """s when every v_k² equals s exactly (the default ±1/√m output layer), else None."""
    v2 = v * v
    s = v2[0]
    return float(s) if bool((v2 == s).all()) else None


def _int_mm_fits(A: torch.Tensor, Bt: torch.Tensor) -> bool:
    """torch._int_mm's shape rules: CUDA wants > 16 rows and multiples of 8 elsewhere; on
    the CPU an inner size of 1 returns garbage (torch 2.13), so tiny slabs take the float path."""
    if not hasattr(torch, "_int_mm"):
        return False
    if A.device.type == "cuda":
        return A.shape[0] > 16 and A.shape[1] % 8 == 0 and Bt.shape[1] % 8 == 0
    return A.device.type == "cpu" and A.shape[1] >= 8


def count_matmul(A: torch.Tensor, Bt: torch.Tensor) -> torch.Tensor:
    """A @ Bt for 0/1 int8 matrices as exact int32 counts: int8 kernels where the device has
    them, else a float32 product (exact while the inner size is below 2**24)."""
    if _int_mm_fits(A, Bt):
        try:
            return torch._int_mm(A, Bt)
        except RuntimeError:  # a layout this device's int8 kernel refuses: same counts below
            pass
    return (A.to(torch.float32) @ Bt.to(torch.float32)).to(torch.int32)


def upper_pairs(n: int, block: int) -> list[tuple[slice, slice]]:
    """Row-block pairs (I, J) with J ≥ I: the upper triangle of a symmetric (n, n) product."""
    blocks = row_blocks(n, block)
    return [(I, J) for a, I in enumerate(blocks) for J in blocks[a:]]


def symmetrize_upper(K: torch.Tensor, tile: int = 256) -> torch.Tensor:
    """Fill K's lower triangle from its upper one, in place (whatever the lower one held), a
    tile at a time: whole-matrix transposed reads miss the cache on every row (7× slower at
    n = 2048)."""
    n = K.shape[0]
    for i in range(0, n, tile):
        I = slice(i, min(i + tile, n))
        D = K[I, I]
        D.copy_(torch.triu(D) + torch.triu(D, 1).T)
        for j in range(i + tile, n, tile):
            J = slice(j, min(j + tile, n))
            K[J, I] = K[I, J].T
    return K


def gram(X: torch.Tensor, block: int) -> torch.Tensor:
    """X Xᵀ (n, n) from its upper row blocks."""
    G = torch.empty(X.shape[0], X.shape[0], dtype=X.dtype, device=X.device)
    for I, J in upper_pairs(X.shape[0], block):
        G[I, J] = X[I] @ X[J].T
    return symmetrize_upper(G)


def pattern(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """B_ik = [w_k·x_i ≥ 0] as 0/1 int8: (n, m). Rows a few hundred at a time, so each block
    of pre-activations is compared while it is still in cache (2.7× faster at n = 2048,
    m = 4096 than one (n, m) float product, and no (n, m) float temporary)."""
    n, m = X.shape[0], W.shape[0]
    rows = max(1, PATTERN_ELEMENTS // max(m, 1))
    if rows >= n:
        return torch.ge(X @ W.T, 0).view(torch.int8)
    B = torch.empty(n, m, dtype=torch.bool, device=X.device)
    Wt = W.T
    for i in range(0, n, rows):
        torch.ge(X[i : i + rows] @ Wt, 0, out=B[i : i + rows])
    return B.view(torch.int8)


def coactivation_counts(X: torch.Tensor, W: torch.Tensor, chunk: int, block: int) -> torch.Tensor:
    """C = B Bᵀ (n, n) int32, exact co-activation counts, neurons `chunk` at a time; diag(C) =
    c = B 1. Up to two row blocks, one product of the whole pattern with itself (one large
    int8 GEMM is faster than its three upper blocks, and the counts come out symmetric);
    beyond, the upper row blocks only, the lower ones left unset."""
    n = X.shape[0]
    C = None if n <= 2 * block else torch.empty(n, n, dtype=torch.int32, device=X.device)
    for k in range(0, W.shape[0], chunk):
        B = pattern(X, W[k : k + chunk])  # (n, chunk)
        if C is None or n <= 2 * block:  # the whole product (B.T: a view, no copy of B)
            C = count_matmul(B, B.T) if C is None else C.add_(count_matmul(B, B.T))
            continue
        for I, J in upper_pairs(n, block):
            CIJ = count_matmul(B[I], B[J].T)
            if k == 0:
                C[I, J] = CIJ
            else:
                C[I, J] += CIJ
    return C


def _counts_kernel(
    X: torch.Tensor, W: torch.Tensor, s: float, eps: float, chunk: int, block: int
) -> torch.Tensor:
    """K_ij = (x_i·x_j) · (s a C_ij + r_i + r_j), a = (1 − ε)², r = s(ε(1 − ε)c + mε²/2).
    Three passes over the (n, n) matrix, in place: the counts become floats in their own
    memory (float32), one rank-two update adds s a C + r 1ᵀ + 1 rᵀ (addmm with β = s a),
    and the product with X Xᵀ; the unset lower blocks are then overwritten by the mirror."""
    m, dt = W.shape[0], X.dtype
    C = coactivation_counts(X, W, chunk, block)
    c = torch.diagonal(C).to(dt)
    r = (s * eps * (1.0 - eps)) * c + s * m * eps * eps / 2
    ones = torch.ones_like(r)
    # int32 → float32 element by element over the same bytes: no second (n, n) array
    K = C.view(dt).copy_(C) if dt.itemsize == C.dtype.itemsize else C.to(dt)
    del C
    K.addmm_(torch.stack([r, ones], dim=1), torch.stack([ones, r]), beta=s * (1.0 - eps) ** 2)
    K.mul_(X @ X.T)
    return symmetrize_upper(K)  # exactly symmetric even where X Xᵀ's rounding is not


def _float_kernel(
    X: torch.Tensor, W: torch.Tensor, v: torch.Tensor, eps: float, chunk: int, block: int
) -> torch.Tensor:
    """Any v: Σ over neuron slabs of (S diag(v²)) Sᵀ, upper blocks only, in X's dtype."""
    n = X.shape[0]
    pairs = upper_pairs(n, block)
    M = torch.zeros(n, n, dtype=X.dtype, device=X.device)
    for k in range(0, W.shape[0], chunk):
        S = sigma_prime(X @ W[k : k + chunk].T, eps)  # S_ik = σ'(w_k·x_i): (n, chunk)
        Sv = S * (v[k : k + chunk] ** 2)
        for I, J in pairs:
            M[I, J] += Sv[I] @ S[J].T
    return symmetrize_upper(M).mul_(gram(X, block))


def structured_ntk(
    X: torch.Tensor,
    W: torch.Tensor,
    v: torch.Tensor,
    negative_slope: float,
    *,
    chunk: int | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """K = (X Xᵀ) ⊙ (S diag(v²) Sᵀ) for h = <v, σ(W x)> with W trained, v fixed: (n, n).

    X (n, d), W (m, d), v (m,). Exact integer co-activation counts when all v_k² are equal,
    else a float product in X's dtype. `chunk` neurons and `block` rows at a time (defaults
    keep the working set near 64 MiB); memory O(n² + n·chunk).
    """
    n, m = X.shape[0], W.shape[0]
    chunk = chunk or default_chunk(n, m)
    block = block or default_block(n)
    eps = float(negative_slope)
    with exact_matmul(), torch.no_grad():
        if eps == 1.0:  # linear: S ≡ 1
            return gram(X, block) * (v @ v)
        s = uniform_square(v)
        if s is not None:
            return _counts_kernel(X, W, s, eps, chunk, block)
        return _float_kernel(X, W, v, eps, chunk, block)


class StructuredOperator:
    """u ↦ K u for K = (X Xᵀ) ⊙ M, M = S diag(v²) Sᵀ, without forming K (docs/theory.md).

    Written as K u = Σ_a x_a ⊙ M (x_a ⊙ u) (x_a the a-th column of X), so one product is two
    GEMMs through the neurons, R = Sᵀ (X ⊙ u) (m, d) then S (v² ⊙ R) (n, d): O(n·m·d), with
    no elementwise pass over an (n, m) array. The slopes S are kept in `dtype` (float64 by
    default, for eigenvalues) when n·m of them fit `cache_bytes`, else recomputed per slab.
    """

    def __init__(
        self,
        X: torch.Tensor,
        W: torch.Tensor,
        v: torch.Tensor,
        negative_slope: float,
        *,
        chunk: int | None = None,
        dtype: torch.dtype = torch.float64,
        cache_bytes: int = 2**31,
    ) -> None:
        self.X, self.W = X.detach().to(dtype), W.detach().to(dtype)
        self.v2 = (v.detach().to(dtype)) ** 2
        self.eps = float(negative_slope)
        self.n, m = X.shape[0], W.shape[0]
        self.chunk = chunk or default_chunk(self.n, m)
        self.starts = list(range(0, m, self.chunk))
        self.cache: list[torch.Tensor] | None = None
        if self.n * m * self.X.element_size() <= cache_bytes:
            self.cache = [self._slopes(i) for i in range(len(self.starts))]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def dtype(self) -> torch.dtype:
        return self.X.dtype

    @property
    def device(self) -> torch.device:
        return self.X.device

    def _slopes(self, i: int) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[i]
        k = self.starts[i]
        with exact_matmul():
            return sigma_prime(self.X @ self.W[k : k + self.chunk].T, self.eps)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """K u for u (n,) or (n, b): same shape back, in self.dtype."""
        U = u.to(self.dtype).reshape(self.n, -1)
        n, b, d = self.n, U.shape[1], self.X.shape[1]
        XU = (U[:, :, None] * self.X[:, None, :]).reshape(n, b * d)  # columns x_a ⊙ u_j
        MXU = torch.zeros_like(XU)
        with exact_matmul(), torch.no_grad():
            for i, k in enumerate(self.starts):
                S = self._slopes(i)  # (n, chunk)
                R = S.T @ XU  # (chunk, b·d)
                MXU.addmm_(S, R.mul_(self.v2[k : k + self.chunk, None]))
        Ku = (MXU.reshape(n, b, d) * self.X[:, None, :]).sum(dim=2)
        return Ku.reshape(u.shape)
