"""A preconditioner for the smallest eigenvalues of an NTK: damp the span of the inputs'
low-degree polynomial features, where the kernel's large eigenvalues live.

The kernel of a net on inputs x is, to first order, a function of the inner products x_i·x_j,
and its Taylor terms (x_i·x_j)^k = ⟨x_i^{⊗k}, x_j^{⊗k}⟩ put the degree-k features' span under
the top of the spectrum: for data on the sphere in R^64 at n = 8192, the span of
[1, x, x xᵀ] (2145 columns) holds 99.4% of the top 2145 eigenvectors, whose eigenvalues
(0.25 … 46) dwarf the bulk below them (0.05 … 0.09). Krylov methods pay for that spread;
a search direction w ↦ (I − (1 − α) P) w, P the projector onto the features' span, removes
it at the cost of one p × p Gram matrix, with α = the Rayleigh quotient of K off the span over that
on it. The preconditioner only steers the search: the eigenvalues are K's whatever it is.
"""

from __future__ import annotations

import torch

MAX_FEATURE_FRACTION = 0.5  # features beyond n/2 columns would cost more than they save
MAX_GRAM_BYTES = 2**28  # the inverse Gram matrix (p, p), float32
ROWS_PER_CHUNK = 4096  # rows of features formed at a time while the Gram matrix is summed
RIDGE = 1e-6  # on the unit-diagonal Gram matrix: above its float32 rounding


def feature_count(d: int, degree: int) -> int:
    """Columns of [1, x, upper triangle of x xᵀ] up to `degree` (0, 1 or 2) for x ∈ R^d."""
    return [1, 1 + d, 1 + d + d * (d + 1) // 2][degree]


def feature_degree(n: int, d: int) -> int:
    """The highest degree (≤ 2) whose features fit n/2 columns and the Gram budget."""
    for degree in (2, 1):
        p = feature_count(d, degree)
        if p <= MAX_FEATURE_FRACTION * n and 4 * p * p <= MAX_GRAM_BYTES:
            return degree
    return 0


def polynomial_features(X: torch.Tensor, degree: int) -> torch.Tensor:
    """[1, x, x_a x_b for a ≤ b] of each row of X (n, d), up to `degree`: (n, p)."""
    n, d = X.shape
    cols = [torch.ones(n, 1, dtype=X.dtype, device=X.device)]
    if degree >= 1:
        cols.append(X)
    if degree >= 2:
        a, b = torch.triu_indices(d, d, device=X.device)
        cols.append(X[:, a] * X[:, b])
    return torch.cat(cols, dim=1)


class FeatureDeflation:
    """w ↦ w − (1 − α) P w, P = F (Fᵀ F)⁻¹ Fᵀ the projector onto the span of X's polynomial
    features F (n, p), applied without forming F: Fᵀ w from X and X diag(w) Xᵀ, F z from the
    rows' quadratic forms. Costs O(n d² + p²) per vector and p² floats of memory.

    `probes(g)` splits a vector into its parts on and off the span; `calibrate` sets α from
    K's Rayleigh quotients on them (the solver does it with its first products). Until then
    α = 1: no damping."""

    def __init__(self, X: torch.Tensor, degree: int | None = None) -> None:
        n, d = X.shape
        self.degree = feature_degree(n, d) if degree is None else int(degree)
        self.X = X.detach().to(torch.float64)
        self.pairs = torch.triu_indices(d, d, device=X.device)
        self.Ginv = _gram_inverse(self.X, self.degree)  # (p, p) float32
        self.alpha = 1.0
        self.calibrated = False

    @property
    def rank(self) -> int:
        return self.Ginv.shape[0]

    def _features_t(self, W: torch.Tensor) -> torch.Tensor:
        """Fᵀ W for W (n, b): (p, b)."""
        parts = [W.sum(dim=0, keepdim=True)]
        if self.degree >= 1:
            parts.append(self.X.T @ W)
        if self.degree >= 2:
            a, b = self.pairs
            M = torch.einsum("ia,ij,ib->jab", self.X, W, self.X)  # Xᵀ diag(w_j) X
            parts.append(M[:, a, b].T)
        return torch.cat(parts, dim=0)

    def _features(self, Z: torch.Tensor) -> torch.Tensor:
        """F Z for coefficients Z (p, b): (n, b)."""
        d = self.X.shape[1]
        out = Z[:1].expand(self.X.shape[0], -1).clone()
        if self.degree >= 1:
            out += self.X @ Z[1 : 1 + d]
        if self.degree >= 2:
            a, b = self.pairs
            C = torch.zeros(Z.shape[1], d, d, dtype=Z.dtype, device=Z.device)
            C[:, a, b] = Z[1 + d :].T  # x_iᵀ C x_i with C upper triangular = Σ_{a≤b} z_ab x_a x_b
            out += torch.einsum("ia,jab,ib->ij", self.X, C, self.X)
        return out

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """P W for W (n,) or (n, b): the part in the features' span."""
        W2 = W.reshape(W.shape[0], -1).to(torch.float64)
        Z = (self.Ginv @ self._features_t(W2).to(self.Ginv.dtype)).to(torch.float64)
        return self._features(Z).reshape(W.shape).to(W.dtype)

    def __call__(self, W: torch.Tensor) -> torch.Tensor:
        """The damped direction(s) for residual(s) W (n,) or (n, b)."""
        return W - (1.0 - self.alpha) * self.project(W)

    def probes(self, g: torch.Tensor) -> torch.Tensor:
        """g (n,) split into unit vectors on and off the span: (n, 2)."""
        on = self.project(g)
        parts = torch.stack([on, g - on], dim=1)
        return parts / parts.norm(dim=0).clamp_min(torch.finfo(g.dtype).tiny)

    def calibrate(self, rho_on: float, rho_off: float) -> None:
        """α = ρ_off / ρ_on from K's Rayleigh quotients on and off the span (kept in (0, 1])."""
        alpha = rho_off / rho_on if rho_on > 0 and rho_off > 0 else 1.0
        self.calibrate_to(min(1.0, alpha))

    def calibrate_to(self, alpha: float) -> None:
        """Set α directly (a calibration restored from a checkpoint)."""
        self.alpha, self.calibrated = float(alpha), True


def _gram_inverse(X: torch.Tensor, degree: int) -> torch.Tensor:
    """(Fᵀ F)⁻¹ (p, p) in float32, Fᵀ F summed over row chunks (F is never whole). Columns
    may be dependent (on the sphere Σ x_a² = 1): a ridge on the unit-diagonal scaling keeps
    the factorisation defined (F maps the dependent directions to 0 anyway) at the price of a
    projector accurate to about 1e-6, plenty for steering a search."""
    G = None
    for i in range(0, X.shape[0], ROWS_PER_CHUNK):
        F = polynomial_features(X[i : i + ROWS_PER_CHUNK], degree).to(torch.float32)
        G = F.T @ F if G is None else G.addmm_(F.T, F)
    G = G.to(torch.float64)
    scale = G.diagonal().clamp_min(torch.finfo(G.dtype).tiny).rsqrt()
    Gs = G * scale[:, None] * scale[None, :]
    Gs.diagonal().add_(RIDGE)
    L = torch.linalg.cholesky(Gs)
    return (torch.cholesky_inverse(L) * scale[:, None] * scale[None, :]).to(torch.float32)
