"""Runs an experiment in its run folder: takes the folder's lock, checks everything that could
refuse the command (the folder, the config against a run to continue, its data, its records
and checkpoint) before writing anything, then trains and writes a true summary.json however the
run ends. The CLI and the Python API (`run_experiment`) both come here."""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import ntklab
from ntklab.config import Config, ConfigError, first_difference, load, run_settings
from ntklab.control import (
    Checkpointer,
    CheckpointError,
    DivergenceGuard,
    LogWriter,
    load_checkpoint,
)
from ntklab.diagnostics import (
    InfiniteWidth,
    KernelGeometry,
    LinearOptimum,
    LogisticOptimum,
    RateDiagnostics,
    SGDBound,
)
from ntklab.kernel_regime import HeldOutLoss, KernelPrediction, LinearizationGap
from ntklab.logger import RunLogger
from ntklab.losses import LOSSES, PL_LOSSES
from ntklab.measurements import (
    Accuracy,
    FullKernel,
    KernelStep,
    NTKTracker,
    PatternChange,
    WeightMetrics,
)
from ntklab.problem import Problem, hparams, make_problem, make_state
from ntklab.progress import ProgressBar
from ntklab.rundir import Plan, RunFolder, RunFolderError, Status
from ntklab.train import Callback, TrainResult, TrainState, fit

log = logging.getLogger("ntklab")
NONCONVEX_STEPS = ("nonconvex", "nonconvex_slide")  # steps computed for the run's length


class RunError(RuntimeError):
    """A run that ended with an unexpected error; its summary.json says `failed` and why."""


def make_callbacks(
    cfg: Config, problem: Problem, folder: RunFolder, progress: bool
) -> tuple[list[Callback], DivergenceGuard, Checkpointer, LogWriter]:
    """The callbacks in the order they fire, at every event:

    1. measurements of the state (weights, K_t and its spectrum, which put K_t on the state);
    2. diagnostics that read K_t from the state (bounds, kernel geometry, K∞), and the
       activation flips; then the kernel regime (the held-out loss, the linearised model's
       predicted losses, the linearisation gap), which reads the loss's round-off floor;
    3. control: the divergence guard (it may stop the run after this epoch), the progress bar,
       the log writer (the epoch's records, now complete), and the checkpointer last, so a
       checkpoint of epoch t never runs ahead of epoch t's records.

    The order of 1–2 is also the order of the tags in each metrics.jsonl record."""
    # The PL tags are the MSE's own; an L2 term changes the inequality they measure.
    ntk, pl = cfg.ntk, cfg.loss in PL_LOSSES and cfg.optim.weight_decay == 0
    initial = problem.initial if ntk.every > 0 else None
    tracker = NTKTracker(
        problem.method,
        ntk.every,
        tol=ntk.tol,
        max_iter=ntk.max_iter,
        initial=initial,
        output=problem.output,
        pl=pl,
        budget=ntk.budget,
    )
    opt = cfg.optim
    full_batch_gd = opt.name == "gd" and opt.momentum == 0
    theory_step = full_batch_gd and opt.lr == "auto" and opt.schedule == "constant"
    logistic = cfg.loss == "logistic" and opt.weight_decay > 0
    outputs = [FullKernel(initial), Accuracy()] if problem.output == "full" else []
    infinite = InfiniteWidth(budget_bytes=ntk.memory_budget_mb * 2**20)
    measuring: list[Callback] = [
        WeightMetrics(pl),
        tracker,
        KernelStep(problem.method, ntk.every, problem.output, ntk.budget),
        *outputs,
        RateDiagnostics(full_batch_gd and pl, theory_step=theory_step, mse=pl),
        *([LinearOptimum()] if cfg.loss == "mse" and opt.weight_decay == 0 else []),
        *([LogisticOptimum(opt.weight_decay)] if logistic else []),
        *([SGDBound()] if pl and opt.name == "sgd" else []),
        KernelGeometry(),
        PatternChange(),
        infinite,
        *_kernel_regime(cfg, problem, pl and opt.name == "gd", infinite),
    ]
    guard = DivergenceGuard(cfg.divergence_factor)
    extra = {"config": run_settings(cfg), "data": problem.data}
    others = [*measuring, guard]
    checkpointer = Checkpointer(folder, cfg.checkpoint_every, others, extra, ntk.every)
    writer = LogWriter()
    display = [ProgressBar()] if progress else []
    return [*measuring, guard, *display, writer, checkpointer], guard, checkpointer, writer


def _kernel_regime(
    cfg: Config, problem: Problem, predict: bool, infinite: InfiniteWidth
) -> list[Callback]:
    """loss/test with a held-out set; the linearised model's predictions for full-batch GD on
    the MSE (`predict`: the closed form is GD's on the MSE), with the K∞ that `infinite`
    computed; the linearisation gap."""
    X_test, y_test = problem.X_test, problem.y_test
    out: list[Callback] = [] if X_test is None else [HeldOutLoss(X_test, y_test, LOSSES[cfg.loss])]
    if predict:
        K0 = problem.initial.K
        budget = cfg.ntk.memory_budget_mb * 2**20
        out.append(KernelPrediction(K0, X_test, y_test, budget_bytes=budget, infinite=infinite))
    return [*out, LinearizationGap(cfg.ntk.every)]


@dataclass
class Run:
    """A run ready to train: its folder, state and callbacks; `resume_after` is the epoch its
    checkpoint restored (None: from W_0); `clear`: the folder's old records go first."""

    cfg: Config
    folder: RunFolder
    problem: Problem
    state: TrainState
    callbacks: list[Callback]
    guard: DivergenceGuard
    checkpointer: Checkpointer
    writer: LogWriter
    hparams: dict[str, Any]
    resume_after: int | None = None
    clear: bool = False


def _refuse_changes(cfg: Config, folder: RunFolder, saved: dict, data: dict) -> None:
    """The command must ask for the run it continues: every setting but `epochs` the same (a
    run may be trained longer, never shorter), on the same data."""
    now = run_settings(cfg)
    diff = first_difference({**saved.get("config", {}), "epochs": None}, {**now, "epochs": None})
    if diff:
        key, before, after = diff
        raise ConfigError(
            f"{key}={after!r}: the run in {folder.path} was started with {key}={before!r}; "
            "resume it with its own settings, or pass overwrite=true to start a new run there"
        )
    epochs = saved.get("config", {}).get("epochs")
    if epochs is not None and cfg.epochs < epochs:
        raise ConfigError(
            f"epochs={cfg.epochs}: the run in {folder.path} is a run of {epochs} epochs; a run "
            "can be continued or trained longer, not shortened (or pass overwrite=true)"
        )
    if epochs is not None and cfg.epochs != epochs and cfg.optim.lr in NONCONVEX_STEPS:
        raise ConfigError(
            f"epochs={cfg.epochs}: optim.lr={cfg.optim.lr} is a step for T = epochs × steps per "
            f"epoch, and the run in {folder.path} took it for epochs={epochs}; a longer run needs "
            "its own step: start it afresh (overwrite=true)"
        )
    known = saved.get("data")
    if known and known != data:
        _refuse_data(cfg, folder, known, data)


def _refuse_data(cfg: Config, folder: RunFolder, known: dict, data: dict) -> None:
    """Data whose fingerprint differs from the one the run was started with, training or
    held-out: refused, naming the key that points at them and the first hash that differs."""
    changed = next(k for k in sorted({*known, *data}) if known.get(k) != data.get(k))
    csv = cfg.data.name == "csv"
    if "test" in changed:
        what = f"data.test_path={cfg.data.test_path}" if csv else f"data.n_test={cfg.data.n_test}"
        which = "held-out data"
    else:
        what = f"data.path={cfg.data.path}" if csv else f"data={cfg.data.name}"
        which = "data"
    before, now = str(known.get(changed, "none")), str(data.get(changed, "none"))
    raise ConfigError(
        f"{what}: these {which} differ from those the run in {folder.path} was trained on "
        f"({changed} {before[:12]}…, now {now[:12]}…); restore them, or pass overwrite=true to "
        "start a new run there"
    )


def _load(path: Path, problem: Problem) -> dict | None:
    """A checkpoint of the run, or None where there is none; unreadable ones are refused."""
    if not path.exists():
        return None
    try:
        payload = load_checkpoint(path, problem.device)
    except CheckpointError as err:
        raise RunFolderError(f"resume=true: {err}") from None
    kinds = {"epoch": int, "config": dict, "callbacks": dict}
    wrong = [key for key, kind in kinds.items() if not isinstance(payload.get(key), kind)]
    if wrong:
        raise RunFolderError(
            f"resume=true: {path} is not a checkpoint of an ntklab run (no valid "
            f"{', '.join(wrong)}); start the run afresh with overwrite=true"
        )
    return payload


def prepare(cfg: Config, folder: RunFolder, plan: Plan, progress: bool) -> Run | None:
    """The run this command asks for, built and checked without writing anything; None when a
    finished run is asked for again with nothing to add."""
    problem = make_problem(cfg)
    state = make_state(problem, cfg)
    run_hparams = hparams(cfg, problem, state.lr)
    callbacks, guard, checkpointer, writer = make_callbacks(cfg, problem, folder, progress)
    run = Run(cfg, folder, problem, state, callbacks, guard, checkpointer, writer, run_hparams)
    if plan in (Plan.FRESH, Plan.OVERWRITE):
        run.clear = plan is Plan.OVERWRITE
        return run
    last = _load(folder.last_checkpoint, problem)
    if last is not None:
        _refuse_changes(cfg, folder, last, problem.data)
    if plan is Plan.FINISHED:
        return _extension(run, folder.read_summary() or {}, last)
    if last is None:
        log.warning("no checkpoint in %s: starting the run again from epoch 0", folder.path)
        run.clear = True
        return run
    return _continue(run, folder.last_checkpoint, last)


def _continue(run: Run, source: Path, payload: dict) -> Run:
    """Restore the state and callbacks from `payload`, after checking its records."""
    epoch = payload.get("epoch")
    if not isinstance(epoch, int):
        raise RunFolderError(f"resume=true: {source} holds no epoch; pass overwrite=true")
    gap = run.folder.record_gap(epoch)
    if gap:
        raise RunFolderError(
            f"resume=true: {gap}, so the continued run's record would be incomplete; "
            "pass overwrite=true to run it again from the start"
        )
    try:
        run.checkpointer.restore(payload, run.state, source)
    except CheckpointError as err:
        raise RunFolderError(f"resume=true: {err}") from None
    run.resume_after = epoch
    return run


def _extension(run: Run, summary: dict, last: dict | None) -> Run | None:
    """A finished run asked for again: nothing to do at the same epochs (after checking its
    records are whole), else a completed run continued to the larger `epochs` from a state its
    longer run also passes (last.pt, else extend.pt, else W_0: the run again, to the new end)."""
    done = int(summary.get("epochs_run", -1))
    gap = run.folder.record_gap(done)
    if gap:
        raise RunFolderError(
            f"resume=true: the run in {run.folder.path} reports {done} epochs but {gap}; "
            "pass overwrite=true to run it again"
        )
    if run.cfg.epochs == summary.get("hparams", {}).get("epochs"):
        return None
    if summary.get("status") != Status.COMPLETED.value:
        raise ConfigError(
            f"epochs={run.cfg.epochs}: the run in {run.folder.path} {summary.get('status')} at "
            f"epoch {done} and cannot be trained further; start a new run (overwrite=true)"
        )
    if last is not None and last.get("extendable", False):
        return _continue(run, run.folder.last_checkpoint, last)
    extend = _load(run.folder.extend_checkpoint, run.problem)
    if extend is not None:
        return _continue(run, run.folder.extend_checkpoint, extend)
    run.clear = True
    return run


def default_record(cfg: Config) -> dict[str, str]:
    """.hydra/config.yaml for a run started from Python (the CLI records Hydra's own files)."""
    return {"config.yaml": OmegaConf.to_yaml(OmegaConf.structured(cfg))}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def finals(folder: RunFolder) -> dict[str, Any]:
    """Each tag's last logged value (`final`) and the step it was logged at (`final_step`): tags
    logged on tracked epochs only end earlier than the loss when the last epoch is not one, and
    a value is never set beside another epoch's as if they were one record. Also the versions
    the run ran with."""
    values: dict[str, Any] = {}
    steps: dict[str, int] = {}
    for record in folder.records():
        step = record.get("step")
        values.update(record)
        steps.update({tag: step for tag in record if tag != "step"})
    versions = {"ntklab": ntklab.__version__, "torch": torch.__version__}
    return {"final": values, "final_step": steps, "versions": versions}


def summarize(run: Run, result: TrainResult) -> dict[str, Any]:
    """summary.json: how the run ended, each tag's last logged value, its hyper-parameters."""
    summary = {
        "status": result.status.value,
        "message": result.message,
        "epochs_run": result.epochs_run,
        "final_loss": _finite(result.final_loss),
        **finals(run.folder),
        "divergence": run.guard.report(),
        "ntk_method": run.problem.method.value,
        "hparams": run.hparams,
        "data": run.problem.data,
        "wall_time_s": result.wall_time_s,
    }
    if result.signal is not None:
        summary["signal"] = result.signal
    return summary


def _failed(run: Run, err: BaseException, t0: float) -> RunError:
    """The summary of a run an unexpected error stopped, with its traceback in ntklab.log."""
    message = f"{type(err).__name__}: {err}".splitlines()[0]
    try:  # the file only: the command prints its own one line
        with open(run.folder.log, "a", encoding="utf-8") as f:
            f.write(f"the run failed at epoch {run.state.epoch}:\n{traceback.format_exc()}")
    except OSError:
        pass
    run.folder.remove_temp_files()
    summary = {
        "status": Status.FAILED.value,
        "message": message,
        "error": type(err).__name__,
        "epochs_run": run.state.epoch,
        **finals(run.folder),
        "hparams": run.hparams,
        "data": run.problem.data,
        "total_time_s": time.perf_counter() - t0,
    }
    try:
        run.folder.write_summary(summary)
    except OSError as write_err:  # a full disk: the log line on stderr is all that is left
        log.error("summary.json could not be written: %s", write_err)
    return RunError(f"{message} (traceback in {run.folder.log})")


def _interrupted(run: Run, err: BaseException, t0: float) -> None:
    """The summary of a run stopped by a signal before or after training's own handling."""
    run.folder.remove_temp_files()
    summary = {
        "status": Status.INTERRUPTED.value,
        "message": f"interrupted by {type(err).__name__} at epoch {run.state.epoch}",
        "epochs_run": run.state.epoch,
        **finals(run.folder),
        "hparams": run.hparams,
        "data": run.problem.data,
        "signal": str(err) or "SIGINT",
        "total_time_s": time.perf_counter() - t0,
    }
    run.folder.write_summary(summary)


class _FolderLog:
    """The run's log file, ntklab.log, for as long as the run holds its folder: ntklab's log
    messages, and the run's start and end (those only in the file)."""

    def __init__(self, folder: RunFolder) -> None:
        self.handler = logging.FileHandler(folder.log, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def note(self, message: str) -> None:
        self.handler.emit(logging.LogRecord("ntklab", logging.INFO, "", 0, message, None, None))

    def __enter__(self) -> _FolderLog:
        logging.getLogger("ntklab").addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("ntklab").removeHandler(self.handler)
        self.handler.close()


def _train(run: Run, record: dict[str, str], t0: float) -> dict[str, Any]:
    folder = run.folder
    folder.adopt(record)
    if run.clear:
        folder.clear()
    folder.remove_temp_files()
    with _FolderLog(folder) as folder_log:
        if run.resume_after is not None:
            log.info("resuming %s from epoch %d", folder.path, run.resume_after)
        else:
            folder_log.note(f"run started: {run.cfg.epochs} epochs")
        logger = RunLogger(folder, resume_after=run.resume_after)
        run.writer.logger = logger
        completed = False
        try:
            if run.resume_after is None:  # a resumed run keeps the records its start wrote
                logger.log_hparams(run.hparams)
            result = fit(run.state, run.callbacks, resume=run.resume_after is not None)
            completed = result.status is Status.COMPLETED
        except Exception as err:
            raise _failed(run, err, t0) from err
        except BaseException as err:  # a signal outside training's own handling of it
            _interrupted(run, err, t0)
            raise
        finally:
            logger.end_hparams(completed)
            logger.close()
        summary = summarize(run, result)
        summary["total_time_s"] = time.perf_counter() - t0
        folder.write_summary(summary)
        folder_log.note(f"run {summary['status']} after {summary['epochs_run']} epochs")
    return summary


def run_experiment(
    cfg: Config | DictConfig,
    run_dir: str | Path,
    *,
    record: dict[str, str] | None = None,
    resume_may_start: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `cfg` (a Config, or a composed DictConfig) in `run_dir` and return its summary.

    The run holds the folder's lock throughout. A folder that holds a run is refused unless
    `overwrite` (replace it) or `resume` (continue it from checkpoints/last.pt; a finished run is
    left as it is, or trained longer when `epochs` grew); a folder ntklab did not create is never
    written into. `record`: the files of .hydra/ (name → text) the CLI keeps of the command.
    `resume_may_start` lets resume=true start a run in an empty folder (a sweep's new jobs).
    `progress`: a progress bar on stderr when it is a terminal (off inside sweep jobs).
    Raises ConfigError, DataError or RunFolderError, having written nothing, when the command
    is refused; RunError when the run ended with an unexpected error (its summary says so)."""
    t0 = time.perf_counter()
    if isinstance(cfg, DictConfig):
        cfg = load(cfg)
    folder = RunFolder(run_dir)
    created = not folder.path.exists()
    folder.path.mkdir(parents=True, exist_ok=True)
    try:
        with folder.lock():
            plan = folder.plan(
                resume=cfg.resume, overwrite=cfg.overwrite, resume_may_start=resume_may_start
            )
            run = prepare(cfg, folder, plan, progress)
            if run is None:
                log.info("%s already holds this finished run; nothing to resume", folder.path)
                return folder.read_summary()
            return _train(run, record if record is not None else default_record(cfg), t0)
    except BaseException:
        if created and folder.path.is_dir() and not any(folder.path.iterdir()):
            folder.path.rmdir()  # the folder this call made, for a command that wrote nothing
        raise
