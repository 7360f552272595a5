"""The assembly layer: a typed config becomes the problem (device, data, net, K_0), the training
state, the callbacks in their firing order and the run folder's plan; then the run is trained
and its summary written. The CLI and `ntklab-lr-find` build on it; below it no code sees a
config object larger than the values it needs."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from ntklab.config import (
    Config,
    ConfigError,
    check_against_data,
    first_difference,
    load,
    run_settings,
)
from ntklab.control import (
    Checkpointer,
    CheckpointError,
    DivergenceGuard,
    LogWriter,
    load_checkpoint,
)
from ntklab.data import DataError, load_csv, make_synthetic
from ntklab.diagnostics import InfiniteWidth, KernelGeometry, RateDiagnostics
from ntklab.logger import RunLogger
from ntklab.measurements import (
    InitialKernel,
    NTKTracker,
    PatternChange,
    WeightMetrics,
    initial_kernel,
)
from ntklab.models import OneHiddenLayer, output_scale
from ntklab.ntk import Method, resolve_method
from ntklab.optim import SAMPLERS, full_batch, make_schedule
from ntklab.progress import ProgressBar
from ntklab.rundir import Plan, RunFolder, RunFolderError, Status
from ntklab.theory import theory_lr
from ntklab.train import Batches, Callback, TrainResult, TrainState, fit

log = logging.getLogger(__name__)

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


def load_data(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d), y (n,) in float64 on the CPU, from the `data` config group."""
    dat = cfg.data
    if dat.name == "csv":
        try:
            return load_csv(dat.path)
        except OSError as err:  # unreadable: permissions, a broken link, an I/O error
            raise DataError(f"data.path={dat.path}: cannot be read ({err.strerror})") from None
    return make_synthetic(
        dat.name,
        dat.n,
        dat.d,
        target=dat.target,
        teacher_width=dat.teacher_width,
        noise=dat.noise,
        seed=cfg.seed * 1000 + DATA_STREAM,
    )


@dataclass
class Problem:
    """What a run trains and measures, before any training state: the device, the data X (n, d)
    and y (n,) in the run's dtype on it, the net at W_0, the NTK method that runs, K_0 and the
    theory step n α² / (2 λ_max(K_0)) it gives."""

    device: torch.device
    X: torch.Tensor
    y: torch.Tensor
    model: nn.Module
    method: Method
    initial: InitialKernel
    lr_theory: float
    batch_size: int  # SGD's minibatch size (all n for GD), checked against the data

    @property
    def n(self) -> int:
        return self.X.shape[0]


def make_problem(cfg: Config) -> Problem:
    """Device, data, the net at W_0 and K_0, from a validated config."""
    if cfg.threads is not None:
        # Parallel sweep jobs share the cores: each job's torch gets its share, not all of them.
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    X, y = load_data(cfg)
    n, d = X.shape
    batch_size = check_against_data(cfg, n, d)
    dtype = DTYPES[cfg.dtype]
    X, y = X.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
    if not (torch.isfinite(X).all() and torch.isfinite(y).all()):
        raise DataError(
            f"dtype={cfg.dtype!r}: the data's values overflow {cfg.dtype}; "
            "rescale the data or use dtype=float64"
        )
    m = cfg.model
    model = OneHiddenLayer(
        d,
        m.width,
        m.name,
        m.negative_slope,
        seed=cfg.seed * 1000 + MODEL_STREAM,
        dtype=dtype,
        device=device,
        train_output=m.train_output,
        alpha=m.alpha,
        center=m.center,
        parameterization=m.parameterization,
    )
    ntk = cfg.ntk
    method = resolve_method(ntk.method, model, X, ntk.memory_budget_mb * 2**20)
    initial = initial_kernel(model, X, method, tol=ntk.tol, max_iter=ntk.max_iter)
    lr_theory = theory_lr(initial.lambda_max, n, output_scale(model))
    return Problem(device, X, y, model, method, initial, lr_theory, batch_size)


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
    )


def hparams(cfg: Config, problem: Problem, lr: float) -> dict[str, Any]:
    """The run's hyper-parameters, as summary.json and TensorBoard's HParams tab show them."""
    m, opt = cfg.model, cfg.optim
    return {
        "model": m.name,
        "width": m.width,
        "negative_slope": problem.model.negative_slope,
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


@dataclass
class Run:
    """Everything a run is made of, before training."""

    folder: RunFolder
    state: TrainState
    logger: RunLogger
    callbacks: list[Callback]
    guard: DivergenceGuard
    hparams: dict[str, Any]
    method: Method
    resumed: bool = False


def make_callbacks(
    cfg: Config, problem: Problem, logger: RunLogger, folder: RunFolder, progress: bool
) -> tuple[list[Callback], DivergenceGuard, Checkpointer]:
    """The callbacks in the order they fire, at every event:

    1. measurements of the state (weights, K_t and its spectrum, which put K_t on the state);
    2. diagnostics that read K_t from the state (bounds, kernel geometry, K∞), and the
       activation flips;
    3. control: the divergence guard (it may stop the run after this epoch), the progress bar,
       the log writer (the epoch's records, now complete), and the checkpointer last, so a
       checkpoint of epoch t never runs ahead of epoch t's records.

    The order of 1–2 is also the order of the tags in each metrics.jsonl record."""
    ntk = cfg.ntk
    tracker = NTKTracker(
        problem.method,
        ntk.every,
        tol=ntk.tol,
        max_iter=ntk.max_iter,
        initial=problem.initial if ntk.every > 0 else None,
        budget=ntk.budget,
    )
    full_batch_gd = cfg.optim.name == "gd" and cfg.optim.momentum == 0
    measuring: list[Callback] = [
        WeightMetrics(),
        tracker,
        RateDiagnostics(full_batch_gd),
        KernelGeometry(),
        PatternChange(),
        InfiniteWidth(),
    ]
    guard = DivergenceGuard(cfg.divergence_factor)
    checkpointer = Checkpointer(
        folder, cfg.checkpoint_every, others=[*measuring, guard], config=run_settings(cfg)
    )
    display = [ProgressBar()] if progress else []
    callbacks = [*measuring, guard, *display, LogWriter(logger), checkpointer]
    return callbacks, guard, checkpointer


def _resume_payload(folder: RunFolder, cfg: Config, device: torch.device) -> dict | None:
    """last.pt, checked against this command's config; None when the run never saved one."""
    if not folder.last_checkpoint.exists():
        return None
    try:
        payload = load_checkpoint(folder.last_checkpoint, device)
    except CheckpointError as err:
        raise RunFolderError(f"resume=true: {err}") from None
    diff = first_difference(payload.get("config", {}), run_settings(cfg))
    if diff:
        key, saved, now = diff
        raise ConfigError(
            f"{key}={now!r}: the run in {folder.path} was started with {key}={saved!r}; resume "
            "it with its own settings, or pass overwrite=true to start a new run there"
        )
    return payload


def build(cfg: Config, folder: RunFolder, resume: bool = False, progress: bool = False) -> Run:
    """Everything a run needs; with `resume`, continued from checkpoints/last.pt if present.
    `progress`: a progress bar on stderr when it is a terminal."""
    problem = make_problem(cfg)
    state = make_state(problem, cfg)
    run_hparams = hparams(cfg, problem, state.lr)
    payload = _resume_payload(folder, cfg, problem.device) if resume else None
    if resume and payload is None:
        log.warning("no checkpoint in %s: starting the run again from epoch 0", folder.path)
        folder.clear()
    resume_after = None if payload is None else int(payload["epoch"])
    logger = RunLogger(folder, resume_after=resume_after)
    callbacks, guard, checkpointer = make_callbacks(cfg, problem, logger, folder, progress)
    if payload is not None:
        try:
            checkpointer.restore(payload, state)
        except CheckpointError as err:
            logger.close()
            raise RunFolderError(f"resume=true: {err}") from None
        log.info("resuming %s from epoch %d", folder.path, resume_after)
    resumed = payload is not None
    return Run(folder, state, logger, callbacks, guard, run_hparams, problem.method, resumed)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarize(run: Run, result: TrainResult) -> dict[str, Any]:
    """summary.json: how the run ended, each tag's last logged value, its hyper-parameters."""
    last: dict[str, Any] = {}
    for record in run.folder.records():
        last.update(record)
    summary = {
        "status": result.status.value,
        "message": result.message,
        "epochs_run": result.epochs_run,
        "final_loss": _finite(result.final_loss),
        "final": last,
        "divergence": run.guard.report(),
        "ntk_method": run.method.value,
        "hparams": run.hparams,
        "wall_time_s": result.wall_time_s,
    }
    if result.signal is not None:
        summary["signal"] = result.signal
    return summary


def run_experiment(
    cfg: Config | DictConfig,
    run_dir: str | Path,
    *,
    resume_may_start: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build, train and write summary.json; returns the summary. `cfg` is a Config, or a
    composed DictConfig (turned into one here).

    A folder that already holds a run is refused unless `overwrite` (start again) or `resume`
    (continue from checkpoints/last.pt; a finished run is left as it is). `resume_may_start`
    lets resume=true start a run in an empty folder (a sweep's jobs that never ran).
    `progress`: a progress bar on stderr when it is a terminal (off inside sweep jobs)."""
    t0 = time.perf_counter()
    if isinstance(cfg, DictConfig):
        cfg = load(cfg)
    folder = RunFolder(run_dir)
    plan = folder.plan(
        resume=cfg.resume, overwrite=cfg.overwrite, resume_may_start=resume_may_start
    )
    if plan is Plan.FINISHED:
        log.info("%s already holds a finished run; nothing to resume", folder.path)
        return folder.read_summary()
    folder.remove_temp_files()
    run = build(cfg, folder, resume=plan is Plan.RESUME, progress=progress)
    if not run.resumed:  # a resumed run keeps the records its first start wrote
        run.logger.log_hparams(run.hparams)
    completed = False
    try:
        result = fit(run.state, run.callbacks, resume=run.resumed)
        completed = result.status is Status.COMPLETED
    finally:
        run.logger.end_hparams(completed)
        run.logger.close()
    summary = summarize(run, result)
    summary["total_time_s"] = time.perf_counter() - t0
    run.folder.write_summary(summary)
    return summary
