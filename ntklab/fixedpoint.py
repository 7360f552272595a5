"""u ↦ K u for the leaky-ReLU net in exact integer arithmetic: the 0/1 activation pattern in
int8 times fixed-point digits of the vectors, int8 × int8 → int32.

K u = Σ_a x_a ⊙ S D Sᵀ (x_a ⊙ u) with S = ε + (1 − ε) B, B ∈ {0, 1} the pattern and
D = diag(v²) (docs/theory.md). Both heavy products, Bᵀ Y and B R, have one 0/1 factor. The
other, a float64 matrix Y (n, c), is written per column in fixed point with P signed
base-256 digits,

    Y = scale · (Q_0 + 256 Q_1 + … + 256^{P−1} Q_{P−1}) + E,   Q_t ∈ [−128, 127] int8,

|E| ≤ 2^{2−8P} · the column's largest |Y|, so one int8 product of B with the P digit planes
side by side gives every B Q_t as exact int32 sums, and the truncation E is the only error
(P = 4: 1e-9 of the column's scale, better than float32's 6e-8 per entry; P = 7: 4e-16,
float64's level). int8 products run several times faster than float64 GEMMs on CPUs with
VNNI or AMX and on GPUs, and the pattern takes n·m bytes instead of n·m float64 slopes.
The digits are the bytes of little-endian int64s (x86, ARM and CUDA all are).
"""

from __future__ import annotations

import torch

from ntklab.structured import _int_mm_fits, exact_matmul, pattern

FAST_PLANES = 4  # 30 bits: the products an eigensolver iterates with
EXACT_PLANES = 7  # 51 bits, float64's level: for certified residuals
MAX_INNER = 2**24  # 128 · 2^24 = 2^31: the int32 sums cannot overflow below it


def _digit_weights(planes: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([256.0**t for t in range(planes)], dtype=torch.float64, device=device)


def digit_planes(Y: torch.Tensor, planes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (n, c) float64 in fixed point as P signed base-256 digits per entry, int8 (n, c·P)
    (column a's digits at a·P … a·P + P − 1, least significant first), and the column
    scales (c,): Y = scale · Σ_t 256^t Q_t to within 2^{2−8P} (at least 2^{−51}) of each
    column's largest entry.

    The digits are the bytes of the int64 fixed-point value after adding 0x80…80 and flipping
    each byte's top bit: four passes over int32 (P ≤ 4) or int64 values, whatever P."""
    n, c = Y.shape
    # Balanced digits cover [−0x80…80, 0x7F…7F]; the largest entry maps just inside it, and
    # inside ±2^53, where float64 still holds every integer.
    top = min(int("7f" * planes, 16), 2**53) * (1 - 2.0**-40)
    width, whole = (4, torch.int32) if planes <= 4 else (8, torch.int64)
    offset = int("80" * planes, 16)
    offset -= 2**32 if offset >= 2**31 and width == 4 else 0  # the same bits, as an int32
    amax = Y.abs().amax(dim=0)
    scale = torch.where(amax > 0, amax / top, torch.ones_like(amax))
    Yi = (Y / scale).to(whole).add_(offset).bitwise_xor_(offset)  # wraps mod 2^32: same bytes
    digits = Yi.view(torch.int8).view(n, c, width)[:, :, :planes]
    return digits.reshape(n, c * planes), scale  # a copy only when planes < width


def digit_matmul(B: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """B @ Q for int8 B (r, n) with 0/1 entries and int8 digits Q (n, c) as exact int32 sums
    (|sum| ≤ 128 n): int8 kernels where they apply, else float64, exact below 2^53."""
    if _int_mm_fits(B, Q):
        try:
            return torch._int_mm(B, Q)
        except RuntimeError:  # a layout this device's int8 kernel refuses
            pass
    return (B.to(torch.float64) @ Q.to(torch.float64)).to(torch.int32)


def pattern_product(B: torch.Tensor, Y: torch.Tensor, planes: int) -> torch.Tensor:
    """B @ Y for a 0/1 int8 B (r, n) and float64 Y (n, c), through P digit planes: (r, c)."""
    Q, scale = digit_planes(Y, planes)
    Z = digit_matmul(B, Q).view(B.shape[0], Y.shape[1], planes).to(torch.float64)
    return (Z @ _digit_weights(planes, Z.device)).mul_(scale)


class PatternOperator:
    """u ↦ K u for h = <v, σ(W x)> with σ the leaky ReLU (0 ≤ ε < 1) and W trained, never
    forming K or the float slopes: one int8 product with Bᵀ (m, n), one with B (n, m).

    Calling it gives float64 products at float64's accuracy (`EXACT_PLANES`); `fast` gives
    the same products to 2^{−30} of each column's scale (`FAST_PLANES`), what an eigensolver
    iterates with before it certifies its answer with exact products. Memory: 2·n·m bytes.
    """

    def __init__(self, X: torch.Tensor, W: torch.Tensor, v: torch.Tensor, negative_slope: float):
        eps = float(negative_slope)
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"negative_slope={eps}: the pattern product needs 0 ≤ ε < 1")
        self.X = X.detach().to(torch.float64)
        self.v2 = v.detach().to(torch.float64) ** 2
        self.eps = eps
        with exact_matmul(), torch.no_grad():
            self.B = pattern(X.detach(), W.detach())  # (n, m)
        self.Bt = self.B.T.contiguous()  # (m, n)
        self.n = X.shape[0]
        if max(self.B.shape) > MAX_INNER:  # int32 sums of 0/1 × int8 digits: |sum| ≤ 128·inner
            raise ValueError(f"n, m = {tuple(self.B.shape)}: the int32 sums hold n, m ≤ 2^24")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    @property
    def device(self) -> torch.device:
        return self.X.device

    def _apply(self, u: torch.Tensor, planes: int) -> torch.Tensor:
        U = u.to(device=self.device, dtype=torch.float64).reshape(self.n, -1)
        n, b, d = self.n, U.shape[1], self.X.shape[1]
        Y = (U[:, :, None] * self.X[:, None, :]).reshape(n, b * d)  # columns x_a ⊙ u_j
        eps = self.eps
        # Sᵀ Y = ε 1 (1ᵀ Y) + (1 − ε) Bᵀ Y, then the output layer's v_k²
        R = pattern_product(self.Bt, Y, planes).mul_(1 - eps).add_(Y.sum(dim=0), alpha=eps)
        R.mul_(self.v2[:, None])
        # S R = ε 1 (1ᵀ R) + (1 − ε) B R
        Z = pattern_product(self.B, R, planes).mul_(1 - eps).add_(R.sum(dim=0), alpha=eps)
        Ku = (Z.reshape(n, b, d) * self.X[:, None, :]).sum(dim=2)
        return Ku.reshape(u.shape)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """K u for u (n,) or (n, b), float64, at float64's accuracy."""
        return self._apply(u, EXACT_PLANES)

    def fast(self, u: torch.Tensor) -> torch.Tensor:
        """K u to 2^{−30} of each column's scale: for iterating, not for certifying."""
        return self._apply(u, FAST_PLANES)
