"""The training losses: the mean squared error (with the one-hidden-layer net's output scale) and
cross-entropy over k classes, and the accuracy of a classifier."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from ntklab.models import output_scale

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/n) Σ (f(x_i) − y_i)² / α² (docs/theory.md; α = 1 unless the model scales its
    output f = α h, in which case dividing by α² keeps the loss O(1), as in Chizat et al.).
    An output of shape (n, 1) is read as (n,)."""
    f = model(X)
    if f.ndim == 2 and f.shape[1] == 1:
        f = f[:, 0]
    loss = (f - y).pow(2).mean()
    alpha = output_scale(model)
    return loss if alpha == 1.0 else loss / alpha**2


def cross_entropy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/n) Σ −log softmax(f(x_i))_{y_i} for logits f (n, k) and integer labels y (n,)."""
    return functional.cross_entropy(model(X), y)


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of samples whose largest logit is their label."""
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).double().mean())


LOSSES: dict[str, Loss] = {"mse": mse, "cross_entropy": cross_entropy}
# The losses whose PL inequality ‖∇L‖² ≥ (4 λ_min(K)/n) L the pl/* tags measure.
PL_LOSSES = ("mse",)
