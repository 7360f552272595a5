"""Assembles a run from a validated config (data, model, optimiser, callbacks), trains it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ntklab.callbacks import Checkpointer, DivergenceGuard, LogWriter, NTKTracker, WeightMetrics
from ntklab.config import ConfigError, check_batch_size, parse_lr, validate
from ntklab.data import load_csv, make_synthetic
from ntklab.logger import RunLogger
from ntklab.models import build_model
from ntklab.optim import SAMPLERS, SCHEDULES, HeavyBall, full_batch
from ntklab.theory import theory_lr
from ntklab.train import TrainResult, TrainState, fit

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


def load_data(cfg: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d), y (n,) in float64 on the CPU, from the `data` config group."""
    if cfg.name == "csv":
        X, y = load_csv(cfg.path)
        for key, actual in (("n", X.shape[0]), ("d", X.shape[1])):
            asked = getattr(cfg, key)
            if asked is not None and asked != actual:
                raise ConfigError(
                    f"data.{key}={asked}: the CSV {cfg.path} has {key}={actual}; "
                    f"leave data.{key} unset (null) for csv data"
                )
        if X.shape[0] == 0:
            raise ConfigError(f"data.path={cfg.path}: holds no data rows")
        return X, y
    return make_synthetic(
        cfg.name,
        cfg.n,
        cfg.d,
        target=cfg.target,
        teacher_width=cfg.teacher_width,
        noise=cfg.noise,
        seed=seed * 1000 + DATA_STREAM,
    )


@dataclass
class Run:
    """Everything a run is made of, before training."""

    state: TrainState
    batches: Any
    logger: RunLogger
    callbacks: list
    tracker: NTKTracker
    hparams: dict[str, Any]


def initial_lr(
    cfg: Any, model: torch.nn.Module, X: torch.Tensor, tracker: NTKTracker
) -> tuple[float, float]:
    """The step size to use and the theory step n / (2 λ_max(K_0)) it is compared with."""
    lam_max = tracker.lambda_max(model, X)
    eta = theory_lr(lam_max, X.shape[0])
    lr = parse_lr(cfg.optim.lr)
    return (eta if lr == "auto" else float(lr)), eta


def build(cfg: Any, run_dir: str | Path) -> Run:
    validate(cfg)
    device = resolve_device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    X, y = load_data(cfg.data, cfg.seed)
    n, d = X.shape
    X, y = X.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
    model = build_model(
        cfg.model.name,
        d,
        cfg.model.width,
        cfg.model.negative_slope,
        seed=cfg.seed * 1000 + MODEL_STREAM,
        dtype=dtype,
        device=device,
    )
    ntk = cfg.ntk
    tracker = NTKTracker(ntk.method, ntk.every, ntk.memory_budget_mb, ntk.tol, ntk.max_iter)
    lr, eta = initial_lr(cfg, model, X, tracker)
    opt = cfg.optim
    if opt.name == "gd":
        batches = full_batch
    else:
        batch_size = check_batch_size(opt.batch_size, n)
        sampler = SAMPLERS[opt.sampling]

        def batches(n: int, g: torch.Generator) -> list[torch.Tensor]:
            return sampler(n, batch_size, g)

    schedule = SCHEDULES[opt.schedule](lr)
    state = TrainState(
        model=model,
        X=X,
        y=y,
        epochs=cfg.epochs,
        optimizer=HeavyBall([model.W], momentum=opt.momentum),
        schedule=schedule,
        generator=torch.Generator().manual_seed(cfg.seed * 1000 + BATCH_STREAM),
        lr=lr,
    )
    logger = RunLogger(run_dir)
    callbacks = [
        WeightMetrics(),
        tracker,
        DivergenceGuard(cfg.divergence_factor),
        Checkpointer(run_dir),
        LogWriter(logger),
    ]
    hparams = {
        "model": cfg.model.name,
        "width": cfg.model.width,
        "negative_slope": model.negative_slope,
        "data": cfg.data.name,
        "n": n,
        "d": d,
        "optim": opt.name,
        "lr": lr,
        "lr_theory": eta,
        "batch_size": n if opt.name == "gd" else check_batch_size(opt.batch_size, n),
        "momentum": opt.momentum,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "ntk_method": tracker.method,
        "device": str(device),
        "dtype": cfg.dtype,
    }
    return Run(state, batches, logger, callbacks, tracker, hparams)


def summarize(run: Run, result: TrainResult) -> dict[str, Any]:
    last: dict[str, Any] = {}
    metrics_path = run.logger.metrics_path
    if metrics_path.exists():
        import json

        for line in metrics_path.read_text().splitlines():
            last.update(json.loads(line))
    return {
        "status": result.status,
        "message": result.message,
        "epochs_run": result.epochs_run,
        "final_loss": result.final_loss if result.final_loss == result.final_loss else None,
        "final": last,
        "ntk_method": run.tracker.method,
        "hparams": run.hparams,
        "wall_time_s": result.wall_time_s,
    }


def run_experiment(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Build, train and write summary.json; returns the summary."""
    t0 = time.perf_counter()
    run = build(cfg, run_dir)
    try:
        result = fit(run.state, run.batches, run.callbacks)
    finally:
        run.logger.close()
    summary = summarize(run, result)
    summary["total_time_s"] = time.perf_counter() - t0
    run.logger.write_summary(summary)
    return summary
