"""Hydra callback for sweeps: refuses jobs that would share a folder, reports when a sweep ends."""

from __future__ import annotations

import itertools
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ntklab.launch import console, stopping, sweep_interrupted, sweep_started
from ntklab.rundir import MARKER, RunFolder, Status
from ntklab.sweep import override_key

# Job folders are checked only when they are named after the overrides (conf/config.yaml),
# and only for Hydra's basic sweeper, whose jobs are every combination of the listed values.
OVERRIDE_SUBDIR = "${hydra.job.override_dirname}"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_PROGRESS: list[Any] = []  # the running sweep's jobs-done bar (progress.SweepProgress)


def sweep_jobs(arguments: list[str]) -> list[list[str]]:
    """Each job's overrides ("key=value"), as the basic sweeper expands a command line: every
    combination of the listed values, a key given twice taking its last value."""
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def planned_folders(config: DictConfig) -> list[str] | None:
    """The job folder names the basic sweeper will use, in order (None: not predictable here)."""
    hydra = config.hydra
    subdir = OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir")
    if subdir != OVERRIDE_SUBDIR or hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(hydra.overrides.task)
    dirname = hydra.job.config.override_dirname
    exclude = set(dirname.exclude_keys)
    folders = []
    for job in sweep_jobs(args):
        lines = sorted(line for line in job if override_key(line) not in exclude)
        folders.append(dirname.item_sep.join(lines).replace("=", dirname.kv_sep))
    return folders


def shared_folders(folders: list[str]) -> list[tuple[str, str]]:
    """Pairs of jobs whose folders are the same, or one inside the other (a '/' in a value)."""
    clashes = []
    ordered = sorted(folders)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a == b or b.startswith(a.rstrip("/") + "/"):
            clashes.append((a, b))
    return clashes


def escaping_folders(sweep_dir: Path, folders: list[str]) -> list[str]:
    """Job folders that would lie outside the sweep folder (a value holding `..` or `/`)."""
    root = sweep_dir.resolve()
    return [f for f in folders if not (root / f).resolve().is_relative_to(root)]


def held_jobs(sweep_dir: Path) -> list[str]:
    """The job folders under `sweep_dir` that hold a run (a rerun must continue or replace)."""
    if not sweep_dir.is_dir():
        return []
    found = []
    for marker in sorted(sweep_dir.rglob(MARKER)):
        folder = RunFolder(marker.parent)
        if ".submitit" not in marker.parts and folder.status() is not None:
            found.append(marker.parent.relative_to(sweep_dir).as_posix())
    return found


def _refuse(message: str) -> None:
    console(f"error: {message}", logging.ERROR)
    sys.exit(2)


def _signal_of(job_dir: Path) -> str:
    """The signal that interrupted a job (its summary says; SIGINT when it never started)."""
    signal_name = (RunFolder(job_dir).read_summary() or {}).get("signal")
    return signal_name if signal_name in signal.Signals.__members__ else "SIGINT"


def _exit_status(config: DictConfig, sweep_dir: Path, path: Path | None) -> None:
    """After the report: 128 + the signal that stopped the sweep; 1 when a job failed, was
    refused or was killed; `divergence_exit_code` when one diverged; else 0."""
    from ntklab.sweep import find_jobs

    jobs = find_jobs(sweep_dir) if path is not None else []
    interrupted = [job for job in jobs if job.status is Status.INTERRUPTED]
    stopped = stopping() or (_signal_of(sweep_dir / interrupted[0].name) if interrupted else None)
    if stopped:
        sweep_interrupted(sweep_dir, path, stopped)
        sys.exit(128 + signal.Signals[stopped].value)
    bad = [job for job in jobs if job.status in (Status.FAILED, Status.REFUSED, Status.UNFINISHED)]
    if bad:
        kinds = sorted({job.status.value for job in bad})
        console(
            f"{len(bad)} of {len(jobs)} jobs {' or '.join(kinds)}: "
            + ", ".join(job.name for job in bad)
            + f" (why: {path.name} and their job folders)"
        )
        sys.exit(1)
    diverged = [job.name for job in jobs if job.status is Status.DIVERGED]
    code = int(config.get("divergence_exit_code", 0) or 0)
    if diverged and code:
        console(f"{len(diverged)} jobs diverged: " + ", ".join(diverged))
        sys.exit(code)


class SweepReport(Callback):
    """At the start of a multirun: refuse a sweep whose jobs would share a folder or leave the
    sweep folder, or that would rerun a sweep folder holding runs without resume=true or
    overwrite=true, before anything is written. At its end: write the sweep report and exit
    non-zero if a job failed, was refused, was killed or the sweep was interrupted."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        folders = planned_folders(config) or []
        clashes = shared_folders(folders)
        if clashes:
            a, b = clashes[0]
            where = f"'{a}' twice" if a == b else f"'{b}' inside '{a}'"
            _refuse(
                f"two jobs of this sweep would write into one folder ({where}); "
                "remove the repeated override value, or keep the key out of "
                "hydra.job.config.override_dirname.exclude_keys"
            )
        outside = escaping_folders(sweep_dir, folders)
        if outside:
            _refuse(
                f"the job folder '{outside[0]}' would lie outside the sweep folder {sweep_dir}; "
                "add the key whose value holds '..' or '/' to "
                "hydra.job.config.override_dirname.exclude_keys"
            )
        held = held_jobs(sweep_dir)
        if held and not (config.get("resume") or config.get("overwrite")):
            _refuse(
                f"hydra.sweep.dir={sweep_dir}: already holds a sweep ({len(held)} job folders "
                "with runs); pass resume=true to continue it, overwrite=true to replace its "
                "runs, or choose another folder"
            )
        sweep_started(sweep_dir)
        from ntklab.progress import SweepProgress  # a jobs-done bar on a terminal

        # Kept in this module, not on the callback: launchers pickle the callbacks for their
        # workers, and a bar's thread and lock cannot be pickled.
        _PROGRESS[:] = [SweepProgress(sweep_dir, folders).start()]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        while _PROGRESS:
            _PROGRESS.pop().stop()
        from ntklab.report import write_sweep_report  # matplotlib only when a report is drawn

        path = write_sweep_report(sweep_dir)
        if path is not None:
            console(f"sweep report → {path}")
        _exit_status(config, sweep_dir, path)
