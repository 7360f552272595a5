"""What a run trains and measures, from a validated config: the device, the data, the net at
W_0 and its kernel K_0 (the problem), and the training state that starts from it. Numeric edge
cases that would only fail deep inside training are refused here, naming the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ntklab.builders import build_model, kernel_output, load_data, targets
from ntklab.config import Config, ConfigError, check_against_data
from ntklab.data import DataError, fingerprint
from ntklab.losses import LOSSES
from ntklab.measurements import InitialKernel, initial_kernel
from ntklab.models import output_scale
from ntklab.ntk import Method, available_bytes, dense_bytes, resolve_method
from ntklab.optim import SAMPLERS, full_batch, make_schedule
from ntklab.theory import cross_entropy_lr, theory_lr
from ntklab.train import Batches, TrainState

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Independent streams from the one `seed`: data, model init, minibatch order.
DATA_STREAM, MODEL_STREAM, BATCH_STREAM = 0, 1, 2


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when a GPU is visible, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device(name)


@dataclass
class Problem:
    """The device, the data X (n, d) and y (n,) in the run's dtype on it (int64 class labels
    for cross-entropy) with their fingerprint, the net at W_0, the NTK method that runs, K_0 and
    the theory step it gives (n α² / (2 λ_max(K_0)) for the MSE, 2n / λ_max of the full kernel
    for cross-entropy); `output` is "full" where the kernel of k outputs is tracked."""

    device: torch.device
    X: torch.Tensor
    y: torch.Tensor
    data: dict[str, Any]  # data.fingerprint: n, d, SHA-256 of X, y (and of a CSV file)
    model: nn.Module
    method: Method
    initial: InitialKernel
    lr_theory: float
    batch_size: int  # SGD's minibatch size (all n for GD), checked against the data
    output: str | None = None

    @property
    def n(self) -> int:
        return self.X.shape[0]


def _on_device(cfg: Config, X: torch.Tensor, y: torch.Tensor, device: torch.device):
    X, y = X.to(device=device, dtype=DTYPES[cfg.dtype]), targets(cfg, y, device, DTYPES[cfg.dtype])
    if not (torch.isfinite(X).all() and torch.isfinite(y).all()):
        raise DataError(
            f"dtype={cfg.dtype!r}: the data's values overflow {cfg.dtype}; "
            "rescale the data or use dtype=float64"
        )
    return X, y


def _fits(cfg: Config, model: nn.Module, X: torch.Tensor, method: Method) -> None:
    """A dense kernel that cannot be allocated is refused before trying, with the fix."""
    if method.matrix_free:
        return
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    need, free = dense_bytes(X.shape[0], p, X.dtype, method), available_bytes(X.device)
    if need > free:
        raise ConfigError(
            f"data.n={X.shape[0]}: the dense kernel and its eigvalsh need {need / 2**30:.1f} GiB "
            f"and {free / 2**30:.1f} GiB are free; use ntk=auto (matrix-free when it does not "
            "fit) or ntk=ntvp, or fewer samples"
        )


def _kernel(
    cfg: Config, model: nn.Module, X: torch.Tensor, method: Method, output: str | None
) -> InitialKernel:
    _fits(cfg, model, X, method)
    ntk = cfg.ntk
    try:
        initial = initial_kernel(
            model, X, method, tol=ntk.tol, max_iter=ntk.max_iter, output=output
        )
    except torch.linalg.LinAlgError:  # eigvalsh of a kernel that overflowed
        initial = None
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "memory" not in str(err):
            raise
        raise ConfigError(
            f"ntk.method={cfg.ntk.method!r}: K_0 ({X.shape[0]} × {X.shape[0]}) did not fit in "
            "memory; use ntk=auto or ntk=ntvp, or fewer samples"
        ) from None
    if initial is None or not (0 < initial.lambda_max < float("inf")):
        raise DataError(
            f"data: the initial kernel K_0 has no usable spectrum (λ_max = "
            f"{'not computable' if initial is None else initial.lambda_max}): features that are "
            "all zero give K_0 = 0, values too large overflow it; rescale the data"
        )
    return initial


def make_problem(cfg: Config) -> Problem:
    """Device, data, the net at W_0 and K_0, from a validated config."""
    if cfg.threads is not None:
        # Parallel sweep jobs share the cores: each job's torch gets its share, not all of them.
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    X, y = load_data(cfg, seed=cfg.seed * 1000 + DATA_STREAM)
    batch_size = check_against_data(cfg, *X.shape)
    data = fingerprint(X, y, cfg.data.path if cfg.data.name == "csv" else None)
    X, y = _on_device(cfg, X, y, device)
    model = build_model(cfg, X, y, seed=cfg.seed * 1000 + MODEL_STREAM, device=device)
    ntk = cfg.ntk
    method = resolve_method(ntk.method, model, X, ntk.memory_budget_mb * 2**20)
    output = kernel_output(cfg, method, model, X)
    initial = _kernel(cfg, model, X, method, output)
    if output == "full":
        lr_theory = cross_entropy_lr(initial.full.lambda_max, X.shape[0])
    else:
        lr_theory = theory_lr(initial.lambda_max, X.shape[0], output_scale(model))
    return Problem(device, X, y, data, model, method, initial, lr_theory, batch_size, output)


def minibatches(cfg: Config, batch_size: int) -> Batches:
    """GD's one full batch, or SGD's sampler at `batch_size`."""
    if cfg.optim.name == "gd":
        return full_batch
    sampler = SAMPLERS[cfg.optim.sampling]

    def batches(n: int, g: torch.Generator) -> list[torch.Tensor]:
        return sampler(n, batch_size, g)

    return batches


def make_state(problem: Problem, cfg: Config, model: nn.Module | None = None) -> TrainState:
    """The loop's state at W_0 for `problem` (or for `model`, a copy of its net): the step size
    (optim.lr, or the theory step), its schedule, heavy-ball momentum and the minibatch rule."""
    opt = cfg.optim
    lr = problem.lr_theory if opt.lr == "auto" else float(opt.lr)
    options = {"patience": opt.patience, "factor": opt.factor, "decay_epochs": opt.decay_epochs}
    return TrainState.create(
        problem.model if model is None else model,
        problem.X,
        problem.y,
        epochs=cfg.epochs,
        lr=lr,
        momentum=opt.momentum,
        schedule=make_schedule(opt.schedule, lr, options),
        batches=minibatches(cfg, problem.batch_size),
        seed=cfg.seed * 1000 + BATCH_STREAM,
        loss_fn=LOSSES[cfg.loss],
    )


def hparams(cfg: Config, problem: Problem, lr: float) -> dict[str, Any]:
    """The run's hyper-parameters, as summary.json and TensorBoard's HParams tab show them."""
    m, opt = cfg.model, cfg.optim
    return {
        "model": m.name,
        "width": m.width,
        "depth": m.depth,
        "activation": m.activation or m.name,
        "negative_slope": getattr(problem.model, "negative_slope", None),
        "loss": cfg.loss,
        "data": cfg.data.name,
        "n": problem.n,
        "d": problem.X.shape[1],
        "optim": opt.name,
        "lr": lr,
        "lr_theory": problem.lr_theory,
        "batch_size": problem.batch_size,
        "momentum": opt.momentum,
        "schedule": opt.schedule,
        "train_output": m.train_output,
        "alpha": m.alpha,
        "center": m.center,
        "parameterization": m.parameterization,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "ntk_method": problem.method.value,
        "device": str(problem.device),
        "dtype": cfg.dtype,
        "threads": torch.get_num_threads(),
    }
