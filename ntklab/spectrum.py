"""Extreme eigenvalues of a symmetric kernel, in float64, with their round-off floor."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of K (ascending, float64) and what of them rises above round-off."""

    eigenvalues: torch.Tensor  # (n,)
    roundoff: float  # |λ| at or below this is indistinguishable from 0 at K's precision

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def resolved(self) -> bool:
        """False when λ_min is round-off (a rank-deficient or numerically singular K)."""
        return self.lambda_min > self.roundoff


def roundoff_floor(K: torch.Tensor, lambda_max: float) -> float:
    """n · eps(K.dtype) · λ_max: the size of eigenvalue errors K's own rounding can make."""
    return K.shape[0] * torch.finfo(K.dtype).eps * abs(lambda_max)


def dense_spectrum(K: torch.Tensor) -> Spectrum:
    """All eigenvalues of symmetric K (n, n) by float64 `eigvalsh`, on K's device."""
    eig = torch.linalg.eigvalsh(K.to(torch.float64))
    return Spectrum(eig, roundoff_floor(K, float(eig[-1])))
