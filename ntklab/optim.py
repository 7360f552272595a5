"""Hand-written GD/SGD with heavy-ball momentum, minibatch orders and step-size schedules."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Protocol

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


def draws(n: int, batch_size: int, pass_fraction: float = 1.0) -> int:
    """Minibatches per epoch with replacement: ⌈pass_fraction · n/b⌉, at least one (⌈n/b⌉, a
    pass's worth of samples, at pass_fraction = 1)."""
    if pass_fraction == 1.0:
        return -(-n // batch_size)
    return max(1, math.ceil(pass_fraction * n / batch_size))


def with_replacement(
    n: int, batch_size: int, generator: torch.Generator, steps: int | None = None
) -> list[torch.Tensor]:
    """The lecture notes' SGD: each minibatch drawn uniformly with replacement; `steps` of them
    per epoch (⌈n/b⌉ when None). The draws of a step never depend on how many follow it, so
    an epoch of k steps is the first k steps of a longer one."""
    steps = draws(n, batch_size) if steps is None else int(steps)
    return [torch.randint(0, n, (batch_size,), generator=generator) for _ in range(steps)]


SAMPLERS: dict[str, Callable[[int, int, torch.Generator], list[torch.Tensor]]] = {
    "reshuffle": reshuffled,
    "replacement": with_replacement,
}


class Schedule(Protocol):
    """A step-size schedule: `step(loss)` once per epoch with that epoch's loss returns the next
    epoch's step; its state (tensors and plain values) lets a resumed run continue it."""

    def step(self, loss: float) -> float: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


class ConstantLR:
    """The same step every epoch."""

    def __init__(self, lr: float) -> None:
        self.lr = float(lr)

    def step(self, loss: float) -> float:
        """Called once per epoch with that epoch's loss; returns the next epoch's step."""
        return self.lr

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr = float(state["lr"])


class PlateauLR:
    """The lecture notes' quick-start recipe: keep the step until the loss has not improved for
    `patience` epochs in a row, then multiply it by `factor` (divide by 10) and start counting
    again. "Improved" means below the best loss so far by a relative `threshold`."""

    def __init__(
        self, lr: float, patience: int = 10, factor: float = 0.1, threshold: float = 1e-4
    ) -> None:
        self.lr, self.patience, self.factor = float(lr), int(patience), float(factor)
        self.threshold = float(threshold)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, loss: float) -> float:
        """Called once per epoch with that epoch's loss; returns the next epoch's step."""
        if loss < self.best * (1.0 - self.threshold):  # NaN never improves
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.lr *= self.factor
            self.bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr, self.best = float(state["lr"]), float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


class InverseTimeLR:
    """1/t decay: epoch t uses lr / (1 + (t − 1)/decay_epochs), so the step halves after
    `decay_epochs` epochs and falls like 1/t after that (the lecture notes' O(1/T) phase)."""

    def __init__(self, lr: float, decay_epochs: float = 10.0) -> None:
        self.lr0, self.decay_epochs = float(lr), float(decay_epochs)
        self.epoch = 0  # epochs done

    def step(self, loss: float) -> float:
        """Called once per epoch with that epoch's loss; returns the next epoch's step."""
        self.epoch += 1
        return self.lr0 / (1.0 + self.epoch / self.decay_epochs)

    def state_dict(self) -> dict[str, float]:
        return {"lr0": self.lr0, "decay_epochs": self.decay_epochs, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr0, self.decay_epochs = float(state["lr0"]), float(state["decay_epochs"])
        self.epoch = int(state["epoch"])


class InverseStepLR:
    """1/s decay by optimiser step: step s = 1, 2, … uses lr / (1 + (s − 1)/decay_steps), the step
    changing within an epoch (`after_step`, which the loop calls after each update). With lr =
    1/β and decay_steps = β/λ this is ≈ 1/(λ s) once s ≫ β/λ: the steps for which SGD on a
    λ-strongly convex loss reaches L − L* = O(1/T) whatever the epoch's length (docs/theory.md)."""

    def __init__(self, lr: float, decay_steps: float = 10.0) -> None:
        self.lr0, self.decay_steps = float(lr), float(decay_steps)
        self.steps = 0  # optimiser steps done

    def after_step(self) -> float:
        """Called after each update; returns the next update's step."""
        self.steps += 1
        return self.step(math.nan)

    def step(self, loss: float) -> float:
        """Called once per epoch; returns the next step (it moves with the updates only)."""
        return self.lr0 / (1.0 + self.steps / self.decay_steps)

    def state_dict(self) -> dict[str, float]:
        return {"lr0": self.lr0, "decay_steps": self.decay_steps, "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr0, self.decay_steps = float(state["lr0"]), float(state["decay_steps"])
        self.steps = int(state["steps"])


SCHEDULES: dict[str, type] = {
    "constant": ConstantLR,
    "plateau": PlateauLR,
    "inverse_time": InverseTimeLR,
    "inverse_step": InverseStepLR,
}


def make_schedule(name: str, lr: float, options: dict[str, object]) -> Schedule:
    """SCHEDULES[name] at `lr`, given the options it takes; `options` may hold those of the other
    schedules too (a config carries them all), and only this schedule's own are passed on, so a
    misspelt keyword in a direct call still fails."""
    cls = SCHEDULES[name]
    own = [k for k in inspect.signature(cls).parameters if k != "lr"]
    return cls(lr, **{k: options[k] for k in own if k in options})
