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
from ntklab.losses import LOSSES, with_weight_decay
from ntklab.measurements import InitialKernel, initial_kernel
from ntklab.models import PlainLinear, output_scale
from ntklab.ntk import Method, available_bytes, dense_bytes, resolve_method
from ntklab.optim import SAMPLERS, draws, full_batch, make_schedule
from ntklab.theory import (
    cross_entropy_lr,
    logistic_smoothness,
    mean_example_grad_sq,
    sgd_nonconvex_lr,
    smoothness,
    theory_lr,
)
from ntklab.train import Batches, TrainState

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Independent streams from the one `seed`: data, model init, minibatch order, held-out points.
DATA_STREAM, MODEL_STREAM, BATCH_STREAM, TEST_STREAM = 0, 1, 2, 3


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
    for cross-entropy); `output` is "full" where the kernel of k outputs is tracked; X_test,
    y_test the held-out set (data.n_test, data.test_path), None without one."""

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
    X_test: torch.Tensor | None = None  # (n_test, d): the held-out set, where there is one
    y_test: torch.Tensor | None = None  # (n_test,)

    @property
    def n(self) -> int:
        return self.X.shape[0]


def _on_device(
    cfg: Config, X: torch.Tensor, y: torch.Tensor, device: torch.device, source: str = ""
):
    dtype = DTYPES[cfg.dtype]
    X, y = X.to(device=device, dtype=dtype), targets(cfg, y, device, dtype, source)
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
    seeds = {"seed": cfg.seed * 1000 + DATA_STREAM, "test_seed": cfg.seed * 1000 + TEST_STREAM}
    X, y, X_test, y_test = load_data(cfg, **seeds)
    batch_size = check_against_data(cfg, *X.shape)
    csv = cfg.data.name == "csv"
    test = None if X_test is None else (X_test, y_test)
    data = fingerprint(X, y, cfg.data.path if csv else None, test, cfg.data.test_path)
    X, y = _on_device(cfg, X, y, device)
    if X_test is not None:
        held_out = "data.test_path" if csv else "data.n_test"
        X_test, y_test = _on_device(cfg, X_test, y_test, device, held_out)
        if cfg.loss == "cross_entropy" and int(y_test.max()) > int(y.max()):
            raise DataError(
                f"{held_out}: the held-out set has class {int(y_test.max())}, the training data "
                f"only classes 0 … {int(y.max())}; the model has one output per training class"
            )
    model = build_model(cfg, X, y, seed=cfg.seed * 1000 + MODEL_STREAM, device=device)
    ntk = cfg.ntk
    method = resolve_method(ntk.method, model, X, ntk.memory_budget_mb * 2**20)
    output = kernel_output(cfg, method, model, X)
    initial = _kernel(cfg, model, X, method, output)
    lr_theory = _theory_step(cfg, X, initial, model, output)
    return Problem(
        device, X, y, data, model, method, initial, lr_theory, batch_size, output, X_test, y_test
    )


def _theory_step(
    cfg: Config, X: torch.Tensor, initial: InitialKernel, model: nn.Module, output: str | None
) -> float:
    """1/(β + λ), λ = optim.weight_decay (the L2 term adds λ to the smoothness), with β the
    loss's: the MSE's 2 λ_max(K_0)/(n α²); cross-entropy's λ_max(K_full)/(2n); the logistic
    loss's (1/(4n)) Σ‖x_i‖² for the plain linear model (theory.logistic_smoothness, the
    notes' constant) and λ_max(K_0)/(4n) for other models (its Gauss–Newton part: the
    logistic curvature is at most 1/4)."""
    lam, n = cfg.optim.weight_decay, X.shape[0]
    if cfg.loss == "logistic":
        if isinstance(model, PlainLinear):
            return 1.0 / logistic_smoothness(X, lam)
        return 1.0 / (initial.lambda_max / (4.0 * n) + lam)
    if output == "full":
        lr = cross_entropy_lr(initial.full.lambda_max, n)
    else:
        lr = theory_lr(initial.lambda_max, n, output_scale(model))
    return lr if lam == 0 else 1.0 / (1.0 / lr + lam)


def minibatches(cfg: Config, batch_size: int) -> Batches:
    """GD's one full batch, or SGD's sampler at `batch_size` (with replacement, an epoch of
    optim.pass_fraction of a pass)."""
    opt = cfg.optim
    if opt.name == "gd":
        return full_batch
    sampler = SAMPLERS[opt.sampling]
    extra = {} if opt.pass_fraction == 1.0 else {"pass_fraction": opt.pass_fraction}

    def batches(n: int, g: torch.Generator) -> list[torch.Tensor]:
        if extra:
            return sampler(n, batch_size, g, steps=draws(n, batch_size, **extra))
        return sampler(n, batch_size, g)

    return batches


def steps_per_epoch(cfg: Config, n: int, batch_size: int) -> int:
    """The optimiser's steps in one epoch: 1 for GD, the minibatches of an SGD epoch."""
    opt = cfg.optim
    if opt.name == "gd":
        return 1
    if opt.sampling == "replacement":
        return draws(n, batch_size, opt.pass_fraction)
    return -(-n // batch_size)


def step_size(problem: Problem, cfg: Config) -> float:
    """optim.lr as a number: the theory step for "auto"; for "nonconvex" and "nonconvex_slide"
    SGD's constant steps for T = epochs × steps per epoch from W_0 (theory.sgd_nonconvex_lr): R =
    L(W_0) (L* ≥ 0 taken as 0), β = 2 λ_max(K_0)/(n α²), L² = (1/n) Σ 4 r_i² K_ii / α⁴."""
    lr = cfg.optim.lr
    if lr == "auto":
        return problem.lr_theory
    if lr not in ("nonconvex", "nonconvex_slide"):
        return float(lr)
    K0 = problem.initial.K
    if K0 is None:
        raise ConfigError(
            f"optim.lr={lr}: K_0 was not formed (ntk.method={problem.method.value}); use "
            "ntk.method=structured or jacobian, or raise ntk.memory_budget_mb"
        )
    model, X, y, n = problem.model, problem.X, problem.y, problem.n
    alpha = output_scale(model)
    with torch.no_grad():
        f = model(X)
        r = (f[:, 0] if f.ndim == 2 else f) - y
    R = float(r.double().pow(2).mean()) / alpha**2
    beta = smoothness(problem.initial.lambda_max, n, alpha)
    grad_sq = mean_example_grad_sq(r, torch.diagonal(K0), alpha)
    T = max(1, cfg.epochs * steps_per_epoch(cfg, n, problem.batch_size))
    return sgd_nonconvex_lr(R, beta, grad_sq, T, lr)


def make_state(problem: Problem, cfg: Config, model: nn.Module | None = None) -> TrainState:
    """The loop's state at W_0 for `problem` (or for `model`, a copy of its net): the step size
    (optim.lr, or the theory step), its schedule, heavy-ball momentum and the minibatch rule."""
    opt = cfg.optim
    lr = step_size(problem, cfg)
    options = {
        "patience": opt.patience,
        "factor": opt.factor,
        "decay_epochs": opt.decay_epochs,
        "decay_steps": opt.decay_steps,
    }
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
        loss_fn=training_loss(cfg),
    )


def training_loss(cfg: Config):
    """The loss `cfg.loss` names, with the L2 term (λ/2)‖θ‖² where optim.weight_decay = λ > 0."""
    loss_fn = LOSSES[cfg.loss]
    lam = cfg.optim.weight_decay
    return with_weight_decay(loss_fn, lam) if lam > 0 else loss_fn


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
        "weight_decay": opt.weight_decay,
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
