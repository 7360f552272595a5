"""The run folder: its layout, atomic writes, its records and summary, the statuses a run ends
with, and whether a command may start, continue or replace the run a folder holds.

    <run folder>/
    ├── .hydra/          Hydra's record of the command (Hydra writes it, ntklab never deletes it)
    ├── tb/              TensorBoard events
    ├── metrics.jsonl    one JSON object per logged epoch
    ├── summary.json     how the run ended
    └── checkpoints/     init.pt, last.pt
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

import torch

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TB = "tb"
CHECKPOINTS = "checkpoints"
INIT_CHECKPOINT = "init.pt"
LAST_CHECKPOINT = "last.pt"
# What a run writes into its folder; .hydra/ and Hydra's log belong to Hydra.
RECORDS = (METRICS, SUMMARY, TB, CHECKPOINTS)


class Status(str, Enum):
    """How a run ended, as summary.json's `status` says (and what a reader infers without one)."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # the loss became NaN/inf or exceeded divergence_factor × L_0
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: stopped after an epoch, checkpoint saved
    FAILED = "failed"  # a sweep job that could not run (bad setting, bad data, an exception)
    UNFINISHED = "unfinished"  # records but no summary: killed, or still running
    UNREADABLE = "unreadable"  # a summary.json that is not JSON

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """The run reached its end: nothing is left to resume."""
        return self in (Status.COMPLETED, Status.DIVERGED)


class Plan(Enum):
    """What a command does with its run folder."""

    FRESH = "fresh"  # start a run (the folder is empty, or its run was cleared)
    RESUME = "resume"  # continue the run from checkpoints/last.pt
    FINISHED = "finished"  # resume=true on a finished run: leave it as it is


class RunFolderError(ValueError):
    """A folder a command may not use as asked; the message names the key and the fix."""


def temp_path(path: Path) -> Path:
    """Where an atomic write of `path` stages its bytes (a hidden file beside it)."""
    return path.with_name(f".{path.name}.tmp")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write the whole file to a temp file, fsync it, then rename it over `path`: a reader, or
    a process killed at any instant, sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text via a temporary file and rename, so a reader never sees half a file."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save via a temporary file and rename: a killed write leaves the old file intact."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; a line cut short (a run still writing, or killed
    mid-write) is skipped. A missing file has no records."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and everything ntklab reads and writes in it."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def tb(self) -> Path:
        return self.path / TB

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def init_checkpoint(self) -> Path:
        return self.checkpoints / INIT_CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    def records(self) -> list[dict[str, Any]]:
        """metrics.jsonl, one dict per logged epoch."""
        return read_jsonl(self.metrics)

    def keep_records_until(self, last_step: int) -> None:
        """Drop the records of steps after `last_step` (and a torn last line)."""
        if self.metrics.exists():
            kept = [r for r in self.records() if r.get("step", last_step + 1) <= last_step]
            atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json; None when there is none, {"status": "unreadable", …} when it is not
        JSON."""
        if not self.summary.exists():
            return None
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return {"status": Status.UNREADABLE.value, "message": "summary.json is not valid JSON"}

    def write_summary(self, summary: dict[str, Any]) -> Path:
        atomic_write_text(self.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return self.summary

    def write_failed(self, message: str) -> Path:
        """summary.json for a job that raised before writing its own: status `failed` and why,
        so a sweep report lists it (a run's own summary is never overwritten)."""
        if not self.summary.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            failed = {"status": Status.FAILED.value, "message": message, "final": {}, "hparams": {}}
            self.write_summary(failed)
        return self.summary

    def status(self) -> Status | None:
        """The status of the run in the folder (UNFINISHED when it stopped without a summary);
        None when the folder holds no run."""
        if not any((self.path / name).exists() for name in RECORDS):
            return None
        summary = self.read_summary() or {}
        try:
            return Status(summary["status"])
        except (KeyError, TypeError, ValueError):
            return Status.UNFINISHED

    def clear(self) -> None:
        """Remove a previous run's records (not Hydra's .hydra/ of this launch)."""
        for name in RECORDS:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def remove_temp_files(self) -> None:
        """Temp files of writes killed before their rename (the files they replace are whole)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink()

    def plan(self, *, resume: bool, overwrite: bool, resume_may_start: bool) -> Plan:
        """Fresh, resume or finished, after refusing a folder that holds a run unless told to
        overwrite (its records are cleared here) or to resume it. `resume_may_start`: resume
        may start a run in an empty folder (a sweep's jobs that never ran)."""
        prior = self.status()
        if prior is None:
            if resume and not resume_may_start:
                raise RunFolderError(
                    f"resume=true: {self.path} holds no run to continue; name the stopped run's "
                    "folder with hydra.run.dir=PATH, or drop resume=true to start a new run"
                )
            return Plan.FRESH
        if overwrite:
            self.clear()
            return Plan.FRESH
        if not resume:
            raise RunFolderError(
                f"resume=false: the run folder {self.path} already holds a run (status {prior}); "
                "pass resume=true to continue it, overwrite=true to replace it, or choose "
                "another folder"
            )
        return Plan.FINISHED if prior.finished else Plan.RESUME
