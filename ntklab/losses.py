"""The training losses: the mean squared error (with the one-hidden-layer net's output scale),
cross-entropy over k classes, the binary logistic loss, an L2 term (weight decay) on any of them,
and the accuracy of a classifier."""

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


def logistic(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/n) Σ log(1 + e^{−y_i f(x_i)}) for labels y_i = ±1 and one output f (n,) or (n, 1):
    the binary logistic loss of the lecture notes, log(1 + e^z) taken as logaddexp(0, z), exact
    for large margins of either sign."""
    f = model(X)
    if f.ndim == 2 and f.shape[1] == 1:
        f = f[:, 0]
    z = -y * f
    return torch.logaddexp(torch.zeros_like(z), z).mean()


def cross_entropy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/n) Σ −log softmax(f(x_i))_{y_i} for logits f (n, k) and integer labels y (n,)."""
    return functional.cross_entropy(model(X), y)


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of samples whose largest logit is their label."""
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).double().mean())


def with_weight_decay(loss_fn: Loss, weight_decay: float) -> Loss:
    """`loss_fn` plus the L2 term (λ/2) Σ ‖θ‖² over the trained parameters, λ = weight_decay:
    the objective the lecture notes' regularised logistic regression minimises. Every minibatch
    loss carries the whole term (f_i = ℓ_i + (λ/2)‖θ‖², whose mean is the objective)."""
    lam = float(weight_decay)

    def regularised(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squares = sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
        return loss_fn(model, X, y) + 0.5 * lam * squares

    return regularised


LOSSES: dict[str, Loss] = {"mse": mse, "cross_entropy": cross_entropy, "logistic": logistic}
# The losses whose PL inequality ‖∇L‖² ≥ (4 λ_min(K)/n) L the pl/* tags measure.
PL_LOSSES = ("mse",)
