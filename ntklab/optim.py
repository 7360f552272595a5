"""Hand-written GD/SGD with heavy-ball momentum, minibatch orders and step-size schedules."""

from __future__ import annotations

from collections.abc import Callable

import torch


class HeavyBall:
    """b ← μ b + g, then W ← W − lr · b (μ = 0 is plain GD/SGD; PyTorch's convention for
    momentum, so lr means the same thing with and without it). Updates tensors in place."""

    def __init__(self, params: list[torch.Tensor], momentum: float = 0.0) -> None:
        self.params = list(params)
        self.momentum = float(momentum)
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if self.momentum != 0.0:
                b = self.buffers[i]
                b = g.clone() if b is None else b.mul_(self.momentum).add_(g)
                self.buffers[i] = b
                g = b
            p.sub_(lr * g)

    def state_dict(self) -> dict[str, object]:
        return {"momentum": self.momentum, "buffers": list(self.buffers)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.momentum = float(state["momentum"])
        self.buffers = [None if b is None else b.clone() for b in state["buffers"]]


def full_batch(n: int, generator: torch.Generator) -> list[torch.Tensor | None]:
    """GD: one step per epoch on all n samples (None = no indexing, samples in order)."""
    return [None]


def reshuffled(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One pass over a fresh random permutation, in minibatches (the last may be smaller)."""
    return list(torch.randperm(n, generator=generator).split(batch_size))


def with_replacement(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The lecture's SGD: each minibatch drawn uniformly with replacement; ⌈n/b⌉ per epoch."""
    steps = -(-n // batch_size)
    return [torch.randint(0, n, (batch_size,), generator=generator) for _ in range(steps)]


SAMPLERS: dict[str, Callable[[int, int, torch.Generator], list[torch.Tensor]]] = {
    "reshuffle": reshuffled,
    "replacement": with_replacement,
}


class ConstantLR:
    """The same step every epoch."""

    def __init__(self, lr: float, **_: object) -> None:
        self.lr = float(lr)

    def step(self, loss: float) -> float:
        """Called once per epoch with that epoch's loss; returns the next epoch's step."""
        return self.lr

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr = float(state["lr"])


SCHEDULES: dict[str, type] = {"constant": ConstantLR}
