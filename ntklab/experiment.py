"""Assembles a run from a validated config (data, model, optimiser, callbacks), trains it."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ntklab.callbacks import (
    Checkpointer,
    CheckpointError,
    DivergenceGuard,
    LogWriter,
    NTKTracker,
    WeightMetrics,
)
from ntklab.config import (
    ConfigError,
    check_batch_size,
    first_difference,
    parse_lr,
    run_config,
    validate,
)
from ntklab.data import DataError, load_csv, make_synthetic
from ntklab.diagnostics import diagnostics
from ntklab.logger import RunLogger
from ntklab.models import build_model
from ntklab.optim import SAMPLERS, SCHEDULES, HeavyBall, full_batch
from ntklab.progress import ProgressBar
from ntklab.theory import theory_lr
from ntklab.train import TrainResult, TrainState, fit, trainable

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


def load_data(cfg: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d), y (n,) in float64 on the CPU, from the `data` config group."""
    if cfg.name == "csv":
        try:
            X, y = load_csv(cfg.path)
        except OSError as err:  # unreadable: permissions, a broken link, an I/O error
            raise DataError(f"data.path={cfg.path}: cannot be read ({err.strerror})") from None
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
    guard: DivergenceGuard
    hparams: dict[str, Any]
    resumed: bool = False


def initial_lr(
    cfg: Any, model: torch.nn.Module, X: torch.Tensor, tracker: NTKTracker
) -> tuple[float, float]:
    """The step size to use and the theory step n / (2 λ_max(K_0)) it is compared with."""
    lam_max = tracker.lambda_max(model, X)
    eta = theory_lr(lam_max, X.shape[0], getattr(model, "alpha", 1.0))
    lr = parse_lr(cfg.optim.lr)
    return (eta if lr == "auto" else float(lr)), eta


def _to_run_device(X: torch.Tensor, y: torch.Tensor, cfg: Any, device: torch.device):
    X, y = (
        X.to(device=device, dtype=DTYPES[cfg.dtype]),
        y.to(device=device, dtype=DTYPES[cfg.dtype]),
    )
    if not (torch.isfinite(X).all() and torch.isfinite(y).all()):
        raise DataError(
            f"dtype={cfg.dtype!r}: the data's values overflow {cfg.dtype}; "
            "rescale the data or use dtype=float64"
        )
    return X, y


def _make_state(cfg: Any, device: torch.device) -> tuple[TrainState, Any, NTKTracker, dict]:
    """The loop's starting state, its minibatch rule, the NTK tracker (it already gave the
    theory step) and the run's hyper-parameters."""
    X, y = _to_run_device(*load_data(cfg.data, cfg.seed), cfg, device)
    n, d = X.shape
    model = build_model(
        cfg.model.name,
        d,
        cfg.model.width,
        cfg.model.negative_slope,
        seed=cfg.seed * 1000 + MODEL_STREAM,
        dtype=DTYPES[cfg.dtype],
        device=device,
        train_output=cfg.model.train_output,
        alpha=cfg.model.alpha,
        center=cfg.model.center,
        parameterization=cfg.model.parameterization,
    )
    ntk = cfg.ntk
    tracker = NTKTracker(ntk.method, ntk.every, ntk.memory_budget_mb, ntk.tol, ntk.max_iter)
    lr, eta = initial_lr(cfg, model, X, tracker)
    opt = cfg.optim
    batch_size = n if opt.name == "gd" else check_batch_size(opt.batch_size, n)
    if opt.name == "gd":
        batches = full_batch
    else:
        sampler = SAMPLERS[opt.sampling]

        def batches(n: int, g: torch.Generator) -> list[torch.Tensor]:
            return sampler(n, batch_size, g)

    schedule = SCHEDULES[opt.schedule](
        lr, patience=opt.patience, factor=opt.factor, decay_epochs=opt.decay_epochs
    )
    state = TrainState(
        model=model,
        X=X,
        y=y,
        epochs=cfg.epochs,
        optimizer=HeavyBall(trainable(model), momentum=opt.momentum),
        schedule=schedule,
        generator=torch.Generator().manual_seed(cfg.seed * 1000 + BATCH_STREAM),
        lr=lr,
    )
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
        "batch_size": batch_size,
        "momentum": opt.momentum,
        "schedule": opt.schedule,
        "train_output": cfg.model.train_output,
        "alpha": cfg.model.alpha,
        "center": cfg.model.center,
        "parameterization": cfg.model.parameterization,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "ntk_method": tracker.method,
        "device": str(device),
        "dtype": cfg.dtype,
        "threads": torch.get_num_threads(),
    }
    return state, batches, tracker, hparams


def _resume_payload(checkpointer: Checkpointer, cfg: Any, device: torch.device) -> dict | None:
    """last.pt, checked against this command's config; None when the run never saved one."""
    if not checkpointer.last_path.exists():
        return None
    payload = checkpointer.load(device)
    diff = first_difference(payload.get("config", {}), checkpointer.config)
    if diff:
        key, saved, now = diff
        raise ConfigError(
            f"{key}={now!r}: the run in {checkpointer.dir.parent} was started with "
            f"{key}={saved!r}; resume it with its own settings, or pass overwrite=true to "
            "start a new run there"
        )
    return payload


def build(cfg: Any, run_dir: str | Path, resume: bool = False, progress: bool = False) -> Run:
    """Everything a run needs; with `resume`, continued from checkpoints/last.pt if present.
    `progress`: a progress bar on stderr when it is a terminal."""
    validate(cfg)
    if cfg.threads is not None:
        # Parallel sweep jobs share the cores: each job's torch gets its share, not all of them.
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    state, batches, tracker, hparams = _make_state(cfg, device)
    checkpointer = Checkpointer(run_dir, cfg.checkpoint_every, config=run_config(cfg))
    payload = _resume_payload(checkpointer, cfg, device) if resume else None
    if resume and payload is None:
        log.warning("no checkpoint in %s: starting the run again from epoch 0", checkpointer.dir)
        clear_records(run_dir)
    resume_after = None if payload is None else int(payload["epoch"])
    logger = RunLogger(run_dir, resume_after=resume_after)
    guard = DivergenceGuard(cfg.divergence_factor)
    full_batch_gd = cfg.optim.name == "gd" and cfg.optim.momentum == 0
    callbacks = [
        WeightMetrics(),
        tracker,
        *diagnostics(logger, full_batch_gd=full_batch_gd),
        guard,
        *([ProgressBar()] if progress else []),
        LogWriter(logger),
    ]
    # Last, after the LogWriter: a checkpoint of epoch t never runs ahead of its records.
    callbacks.append(checkpointer)
    checkpointer.callbacks = callbacks
    if payload is not None:
        checkpointer.restore(payload, state)
        log.info("resuming %s from epoch %d", run_dir, resume_after)
    return Run(state, batches, logger, callbacks, tracker, guard, hparams, payload is not None)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarize(run: Run, result: TrainResult) -> dict[str, Any]:
    last: dict[str, Any] = {}
    metrics_path = run.logger.metrics_path
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            last.update(json.loads(line))
    summary = {
        "status": result.status,
        "message": result.message,
        "epochs_run": result.epochs_run,
        "final_loss": _finite(result.final_loss),
        "final": last,
        "divergence": run.guard.report(),
        "ntk_method": run.tracker.method,
        "hparams": run.hparams,
        "wall_time_s": result.wall_time_s,
    }
    if result.status == "interrupted":
        summary["signal"] = result.signal
    return summary


# What a run writes into its folder; .hydra/ and Hydra's log belong to Hydra.
RECORDS = ("metrics.jsonl", "summary.json", "tb", "checkpoints")
FINISHED = ("completed", "diverged")


def prior_status(run_dir: str | Path) -> str | None:
    """The status of a run already in the folder ("completed", "interrupted", … or
    "unfinished" when it stopped without a summary); None when the folder holds no run."""
    run_dir = Path(run_dir)
    if not any((run_dir / name).exists() for name in RECORDS):
        return None
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unfinished"


def clear_records(run_dir: str | Path) -> None:
    """Remove a previous run's records (not Hydra's .hydra/ of this launch)."""
    for name in RECORDS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _plan(cfg: Any, run_dir: Path, resume_may_start: bool) -> str:
    """ "fresh", "resume" or "finished" (resume=true on a run that already ended), after
    refusing to touch a folder that holds a run unless told to overwrite or resume it."""
    prior = prior_status(run_dir)
    if prior is None:
        if cfg.resume and not resume_may_start:
            raise ConfigError(
                f"resume=true: {run_dir} holds no run to continue; name the stopped run's "
                "folder with hydra.run.dir=PATH, or drop resume=true to start a new run"
            )
        return "fresh"
    if cfg.overwrite:
        clear_records(run_dir)
        return "fresh"
    if not cfg.resume:
        raise ConfigError(
            f"resume=false: the run folder {run_dir} already holds a run (status {prior}); "
            "pass resume=true to continue it, overwrite=true to replace it, or choose "
            "another folder"
        )
    return "finished" if prior in FINISHED else "resume"


def run_experiment(
    cfg: Any, run_dir: str | Path, *, resume_may_start: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Build, train and write summary.json; returns the summary.

    A folder that already holds a run is refused unless `overwrite` (start again) or `resume`
    (continue from checkpoints/last.pt; a finished run is left as it is). `resume_may_start`
    lets resume=true start a run in an empty folder (a sweep's jobs that never ran).
    `progress`: a progress bar on stderr when it is a terminal (off inside sweep jobs)."""
    t0 = time.perf_counter()
    validate(cfg)
    run_dir = Path(run_dir)
    plan = _plan(cfg, run_dir, resume_may_start)
    if plan == "finished":
        log.info("%s already holds a finished run; nothing to resume", run_dir)
        return json.loads((run_dir / "summary.json").read_text())
    for folder in (run_dir, run_dir / "checkpoints"):
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink()  # a write killed before its rename; the file it replaced is intact
    try:
        run = build(cfg, run_dir, resume=plan == "resume", progress=progress)
    except CheckpointError as err:
        raise ConfigError(f"resume=true: {err}") from None
    if not run.resumed:  # a resumed run keeps the records its first start wrote
        run.logger.log_hparams(run.hparams)
    status = "failed"
    try:
        result = fit(run.state, run.batches, run.callbacks, resume=run.resumed)
        status = result.status
    finally:
        run.logger.end_hparams(status)
        run.logger.close()
    summary = summarize(run, result)
    summary["total_time_s"] = time.perf_counter() - t0
    run.logger.write_summary(summary)
    return summary
