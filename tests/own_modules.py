"""Models and data functions a user might name in a config (model._target_, data._target_),
good and bad, for the tests that run them."""

from __future__ import annotations

import torch
from torch import nn


class ThreeOutputs(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer = nn.Linear(d, 3)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layer(X)


class WithBatchNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.body(X)


class NotAModule:
    def __init__(self, d: int) -> None:
        self.d = d


def labels(size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(size, 3, generator=g), torch.arange(size) % 3


def ragged() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(5, 3), torch.zeros(4)


def not_a_pair() -> torch.Tensor:
    return torch.zeros(5, 3)


def with_nan() -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.zeros(5, 3)
    X[2, 1] = float("nan")
    return X, torch.zeros(5)
