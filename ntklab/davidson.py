"""An extreme eigenpair of a symmetric K from products u ↦ K u: Davidson's method with an
optional preconditioner, float64 orthogonalisation and Rayleigh–Ritz, thick restarts, cheap
products while it iterates and exact ones to certify what it reports.

Each step adds one direction, the (preconditioned) residual of the current Ritz vector, to an
orthonormal basis V and takes the extreme eigenpair of H = Vᵀ K V. Without a preconditioner
this spans the same Krylov space as Lanczos, product for product; with one it reaches the
bottom of an NTK spectrum in about a third of the products (docs/ntk-engine.md). When the
basis is full it restarts from the Ritz vectors nearest the wanted end.

Products may come in two precisions: `fast` while iterating, then the answer and the Ritz
vector next to it are recomputed with exact products, and their residuals, from those, are
what is reported and tested against `tol`. The first block gets exact products, and its
first two columns fast ones too, which measure the fast products' error; a fast residual
within a few times of it ends the fast iterations, and if the exact check then misses `tol`,
the solve goes on with exact products from the Ritz vectors it has. A solve that ends on its
first block (a warm start often does) is certified by that block's exact products alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ntklab.spectrum import ExtremeEig, ritz_gap

Operator = Callable[[torch.Tensor], torch.Tensor]
F64 = torch.float64
NOISE_FACTOR = 4  # fast residuals below this many times the fast products' error: stop there


def orthonormal_columns(W: torch.Tensor, V: torch.Tensor | None, tol: float = 1e-10):
    """W's columns orthogonalised against V's (twice) and each other; columns that were
    (nearly) in the span already are dropped: (n, ≤ k)."""
    norm0 = W.norm(dim=0).clamp_min(torch.finfo(W.dtype).tiny)
    for _ in range(2):  # twice is enough (Kahan–Parlett)
        if V is not None and V.shape[1]:
            W = W - V @ (V.T @ W)
    Q, R = torch.linalg.qr(W)
    keep = R.diagonal().abs() > tol * norm0
    return Q[:, keep]


class _Basis:
    """V (n, s) orthonormal, AV = K V and H = Vᵀ K V (s, s), in preallocated float64 storage
    for `capacity` columns, grown one block at a time."""

    def __init__(self, V: torch.Tensor, AV: torch.Tensor, capacity: int) -> None:
        n, s = V.shape
        capacity = max(capacity, s)
        self._V = torch.empty(n, capacity, dtype=F64, device=V.device)
        self._AV = torch.empty_like(self._V)
        self._H = torch.empty(capacity, capacity, dtype=F64, device=V.device)
        self.s = 0
        self._set(V, AV)

    def _set(self, V: torch.Tensor, AV: torch.Tensor) -> None:
        s = V.shape[1]
        self._V[:, :s], self._AV[:, :s] = V, AV
        H = V.T @ AV
        self._H[:s, :s] = (H + H.T) / 2
        self.s = s

    @property
    def V(self) -> torch.Tensor:
        return self._V[:, : self.s]

    @property
    def AV(self) -> torch.Tensor:
        return self._AV[:, : self.s]

    @property
    def H(self) -> torch.Tensor:
        return self._H[: self.s, : self.s]

    @property
    def full(self) -> bool:
        return self.s >= self._V.shape[1]

    def extend(self, W: torch.Tensor, AW: torch.Tensor) -> None:
        s, k = self.s, W.shape[1]
        top = self.V.T @ AW  # (s, k): one side only, so H stays exactly symmetric
        corner = W.T @ AW
        self._V[:, s : s + k], self._AV[:, s : s + k] = W, AW
        self._H[:s, s : s + k], self._H[s : s + k, :s] = top, top.T
        self._H[s : s + k, s : s + k] = (corner + corner.T) / 2
        self.s = s + k

    def ritz(self, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz values and coefficient vectors, the wanted end first."""
        theta, C = torch.linalg.eigh(self.H)
        return (theta.flip(0), C.flip(1)) if largest else (theta, C)

    def restart(self, C: torch.Tensor, keep: int, C_prev: torch.Tensor | None) -> None:
        """Keep the span of the first `keep` Ritz vectors and of the previous step's first two
        (Stathopoulos' GD+k: they carry the direction the search was moving in, what a
        restart would otherwise lose). No products needed."""
        C = C[:, :keep]
        if C_prev is not None:
            pad = torch.zeros(C.shape[0] - C_prev.shape[0], C_prev.shape[1], dtype=F64)
            both = torch.cat([C, torch.cat([C_prev, pad.to(C.device)], 0)], 1)
            C = orthonormal_columns(both, None)
        self._set(self.V @ C, self.AV @ C)


def _first_basis(apply: Operator, n: int, v0, precond, device, seed, capacity) -> _Basis:
    """The starting block and its products: the warm vectors `v0`, else a random vector; while
    the preconditioner is uncalibrated, a random vector's parts on and off its span go first,
    and their Rayleigh quotients calibrate it."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(n, 1, generator=g, dtype=F64).to(device)
    probing = precond is not None and not precond.calibrated
    if probing:
        start = precond.probes(start[:, 0])
    if v0 is not None:
        warm = v0.to(device=device, dtype=F64).reshape(n, -1)
        start = torch.cat([start, warm], 1) if probing else warm
    V = orthonormal_columns(start, None)
    basis = _Basis(V, apply(V).to(F64), capacity)
    if probing and V.shape[1] >= 2:  # QR kept the two probes' directions, in order
        precond.calibrate(float(basis.H[0, 0]), float(basis.H[1, 1]))
    return basis


PROBE_COLUMNS = 2  # first-block columns whose fast products measure the fast products' error


def _fast_error(fast: Operator | None, basis: _Basis) -> float:
    """How far the fast products of the first (unit) basis vectors, `PROBE_COLUMNS` of them,
    fall from their exact ones: a residual below a few times this is the fast products'
    noise, not convergence. (A warm start's whole block would cost as many products again.)"""
    if fast is None:
        return 0.0
    k = min(PROBE_COLUMNS, basis.s)
    return float((fast(basis.V[:, :k]).to(F64) - basis.AV[:, :k]).norm(dim=0).max())


def _checked(basis: _Basis, C, theta, exact: Operator | None):
    """The first two Ritz pairs' values and residual norms: from the basis when its products
    are exact (`exact` None), else recomputed with exact products. Also the products spent."""
    k = min(2, C.shape[1])
    X = basis.V @ C[:, :k]
    if exact is None:
        return theta[:k], (basis.AV @ C[:, :k] - X * theta[:k]).norm(dim=0), 0
    AX = exact(X).to(F64)
    th = (X * AX).sum(dim=0)
    return th, (AX - X * th).norm(dim=0), k


def _direction(r: torch.Tensor, precond, basis: _Basis, seed: int) -> torch.Tensor:
    """The next basis direction: the (preconditioned) residual orthogonalised against the
    basis, or a random one when nothing of it is new. (n, 1)."""
    W = orthonormal_columns((r if precond is None else precond(r))[:, None], basis.V)
    if W.shape[1] == 0:
        g = torch.Generator().manual_seed(seed)
        rand = torch.randn(r.shape[0], 1, generator=g, dtype=F64).to(r.device)
        W = orthonormal_columns(rand, basis.V)
    return W


def davidson(
    apply: Operator,
    n: int,
    *,
    largest: bool,
    tol: float = 1e-6,
    max_iter: int = 300,
    v0: torch.Tensor | None = None,
    precond=None,
    fast: Operator | None = None,
    max_basis: int = 300,
    keep: int = 8,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> ExtremeEig:
    """The largest (or smallest) eigenpair of symmetric K given u ↦ K u (`apply`, exact;
    `fast`, cheaper and less accurate, to iterate with). Stops when the exact residual
    ‖K x − θ x‖ ≤ tol·|θ|, or after about `max_iter` products (a certification may add two).
    `v0` (n,) or (n, k) warm-starts it; `precond` (a FeatureDeflation, or any w ↦ T w with
    `probes` and `calibrate`) steers the search for the smallest. The result's `block` holds
    the `keep` Ritz vectors nearest the answer: the next solve's warm start. Memory: two
    (n, max_basis) float64 arrays."""
    precond = None if largest else precond
    max_basis = max(keep + 1, min(max_basis, n))
    basis = _first_basis(apply, n, v0, precond, device, seed, max_basis)
    noise = NOISE_FACTOR * _fast_error(fast, basis)
    step = fast or apply
    products = basis.s + (min(PROBE_COLUMNS, basis.s) if fast else 0)
    inexact = False  # whether a fast product is in the basis (the first block's are exact)
    C_prev = None  # the previous step's Ritz coefficients, for restarts
    while True:
        theta, C = basis.ritz(largest)
        r = basis.AV @ C[:, 0] - theta[0] * (basis.V @ C[:, 0])
        small = float(r.norm()) <= max(tol * abs(float(theta[0])), noise if inexact else 0)
        if small or products >= max_iter or basis.s >= n:
            th, res_k, spent = _checked(basis, C, theta, apply if inexact else None)
            products += spent
            converged = float(res_k[0]) <= tol * abs(float(th[0]))
            if converged or step is apply or products >= max_iter:
                gap = ritz_gap(th, res_k, largest, tol)
                return _result(basis, C, th, res_k, products, converged, keep, gap)
            # the fast products were not accurate enough for tol: go on with exact ones
            X = basis.V @ C[:, :keep]
            step, basis = apply, _Basis(X, apply(X).to(F64), max_basis)
            products += X.shape[1]
            inexact = False
            continue
        if basis.full:
            basis.restart(C, keep, C_prev)
        C_prev = C[:, :2]
        W = _direction(r, precond, basis, seed + products)
        basis.extend(W, step(W).to(F64))
        products += W.shape[1]
        inexact = inexact or step is not apply


def _result(basis, C, theta, res, products, converged, keep, gap) -> ExtremeEig:
    block = basis.V @ C[:, : min(keep, C.shape[1])]
    return ExtremeEig(
        value=float(theta[0]),
        vector=block[:, 0],
        residual=float(res[0]),
        iterations=products,
        converged=converged,
        gap=gap,
        block=block,
    )
