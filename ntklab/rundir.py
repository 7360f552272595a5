"""The run folder: its layout, its lock and marker, atomic writes, its records and summary, the
statuses a run ends with, and whether a command may start, continue or replace the run in it.

    <run folder>/
    ├── .ntklab          the marker: ntklab created this run folder (only then does it delete)
    ├── .hydra/          the command's config, Hydra overrides and Hydra config (never deleted)
    ├── tb/              TensorBoard events
    ├── metrics.jsonl    one JSON object per logged epoch
    ├── summary.json     how the run ended
    ├── ntklab.log       the run's log (and the traceback of a run that failed)
    └── checkpoints/     init.pt, last.pt (and extend.pt, where a longer run continues from)

A run holds its folder's lock (flock on the folder itself) for its whole life, and nothing is
written into a folder before every check that could refuse the command has passed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

MARKER = ".ntklab"
HYDRA = ".hydra"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOG = "ntklab.log"
TB = "tb"
CHECKPOINTS = "checkpoints"
INIT_CHECKPOINT = "init.pt"
LAST_CHECKPOINT = "last.pt"
EXTEND_CHECKPOINT = "extend.pt"
EVENTS_PREFIX = "events.out.tfevents."
# A run's records: a folder holding any of them holds a run.
RECORDS = (METRICS, SUMMARY, TB, CHECKPOINTS)


class Status(str, Enum):
    """How a run ended, as summary.json's `status` says (and what a reader infers without one)."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # the loss became NaN/inf or exceeded divergence_factor × L_0
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: stopped after an epoch, checkpoint saved
    FAILED = "failed"  # a sweep job that could not run (bad setting, bad data, an exception)
    UNFINISHED = "unfinished"  # records but no summary: killed, or still running
    UNREADABLE = "unreadable"  # a summary.json that is not JSON
    REFUSED = "refused"  # a sweep job this launch did not run (its folder was left untouched)

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """The run reached its end: nothing is left to resume."""
        return self in (Status.COMPLETED, Status.DIVERGED)


class Plan(Enum):
    """What a command does with its run folder."""

    FRESH = "fresh"  # start a run in an empty folder
    OVERWRITE = "overwrite"  # clear the run ntklab left here, then start a new one
    RESUME = "resume"  # continue the run from checkpoints/last.pt
    FINISHED = "finished"  # resume=true on a finished run: nothing to do, or train it longer


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
    import torch  # here, not at the top: the command answers start-up signals before torch

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


def _holder_pid(path: Path) -> int | None:
    """The process holding a flock on `path`, from /proc/locks (Linux); None where unknown."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == dev:
            return int(fields[4])
    return None


class FolderLock:
    """An exclusive flock on the run folder itself (no lock file: taking it writes nothing).
    The kernel drops it when the process ends, however it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _holder_pid(self.path)
            holder = f"process {pid}" if pid is not None else "another process"
            raise RunFolderError(
                f"hydra.run.dir={self.path}: {holder} is running in this folder (it holds its "
                "lock); wait until it ends, or choose another folder"
            ) from None
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _is_ntklab_file(rel: Path) -> bool:
    """A path (relative to a run folder) ntklab writes: its records, checkpoints, event files,
    log, marker, and the temp files of their atomic writes."""
    name = rel.name[1:-4] if rel.name.startswith(".") and rel.name.endswith(".tmp") else rel.name
    if len(rel.parts) == 1:
        return name in (MARKER, METRICS, SUMMARY, LOG)
    if rel.parts[0] == CHECKPOINTS and len(rel.parts) == 2:
        return name in (INIT_CHECKPOINT, LAST_CHECKPOINT, EXTEND_CHECKPOINT)
    return rel.parts[0] == TB and len(rel.parts) == 2 and name.startswith(EVENTS_PREFIX)


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

    @property
    def extend_checkpoint(self) -> Path:
        return self.checkpoints / EXTEND_CHECKPOINT

    @property
    def log(self) -> Path:
        return self.path / LOG

    def records(self) -> list[dict[str, Any]]:
        """metrics.jsonl, one dict per logged epoch."""
        return read_jsonl(self.metrics)

    def keep_records_until(self, last_step: int) -> None:
        """Drop the records of steps after `last_step` (and a torn last line)."""
        if self.metrics.exists():
            kept = [r for r in self.records() if r.get("step", last_step + 1) <= last_step]
            atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def record_gap(self, last_step: int) -> str | None:
        """None when metrics.jsonl holds steps 0 … last_step, each once and in order (records
        after last_step are a resume's to drop); else what is wrong with it."""
        steps = [r.get("step") for r in self.records()]
        steps = [s for s in steps if isinstance(s, int) and s <= last_step]
        if steps == list(range(last_step + 1)):
            return None
        if not self.metrics.exists():
            return f"{self.metrics} is missing"
        if not steps:
            return f"{self.metrics} holds no records up to step {last_step}"
        missing = sorted(set(range(last_step + 1)) - set(steps))
        if missing:
            return f"{self.metrics} lacks the records of {len(missing)} steps (from {missing[0]})"
        return f"{self.metrics} repeats or reorders steps"

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

    @property
    def owned(self) -> bool:
        """ntklab created this run folder (its marker is there)."""
        return (self.path / MARKER).exists()

    def lock(self) -> FolderLock:
        """The folder's lock, for the whole life of a run in it (RunFolderError when held)."""
        return FolderLock(self.path)

    def files(self) -> list[Path]:
        """Every file below the folder except Hydra's (.hydra/ and job logs), relative to it."""
        if not self.path.is_dir():
            return []
        found = []
        for path in sorted(self.path.rglob("*")):
            rel = path.relative_to(self.path)
            hydras = rel.parts[0] == HYDRA or (len(rel.parts) == 1 and rel.suffix == ".log")
            if (path.is_file() or path.is_symlink()) and (not hydras or rel.name == LOG):
                found.append(rel)
        return found

    def foreign(self) -> list[Path]:
        """Files ntklab did not write, in a folder it did not create; [] for its own folders,
        whose foreign files (if any) it leaves alone."""
        return [] if self.owned else [rel for rel in self.files() if not _is_ntklab_file(rel)]

    def adopt(self, record: dict[str, str]) -> None:
        """Make the folder a run's: the marker (where missing) and the command's record, each
        `record` item a file of .hydra/ and its text. Called once every check has passed."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.owned:
            stamp = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname()}
            atomic_write_text(self.path / MARKER, json.dumps(stamp) + "\n")
        if record:
            (self.path / HYDRA).mkdir(exist_ok=True)
            for name, text in record.items():
                atomic_write_text(self.path / HYDRA / name, text)

    def clear(self) -> None:
        """Remove a previous run's records: only the files ntklab writes, only in a folder it
        created, and the tb/ and checkpoints/ folders when that leaves them empty."""
        if not self.owned:
            return
        for rel in self.files():
            if _is_ntklab_file(rel) and rel.name != MARKER:
                (self.path / rel).unlink()
        for name in (TB, CHECKPOINTS):
            folder = self.path / name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def remove_temp_files(self) -> None:
        """Temp files of writes killed before their rename (the files they replace are whole)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink()

    def plan(self, *, resume: bool, overwrite: bool, resume_may_start: bool) -> Plan:
        """What a command asking for `resume`/`overwrite` may do here, or RunFolderError; it
        writes nothing. Only a folder ntklab created is resumed or overwritten: a folder with
        files and no marker is refused whatever is asked, so nothing foreign is ever deleted.
        `resume_may_start`: resume may start a run in an empty folder (a sweep's new jobs)."""
        files = self.files()
        if files and not self.owned:
            shown = ", ".join(str(f) for f in files[:3]) + (", …" if len(files) > 3 else "")
            raise RunFolderError(
                f"hydra.run.dir={self.path}: holds files ({shown}) in a folder ntklab did not "
                f"create (no {MARKER} marker), which it will neither mix with a run nor delete; "
                f"choose an empty folder (a run of an older ntklab: `touch {self.path / MARKER}`)"
            )
        prior = self.status()
        if prior is None:
            if resume and not resume_may_start:
                raise RunFolderError(
                    f"resume=true: {self.path} holds no run to continue; name the stopped run's "
                    "folder with hydra.run.dir=PATH, or drop resume=true to start a new run"
                )
            return Plan.FRESH
        if overwrite:
            return Plan.OVERWRITE
        if not resume:
            raise RunFolderError(
                f"resume=false: the run folder {self.path} already holds a run (status {prior}); "
                "pass resume=true to continue it, overwrite=true to replace it, or choose "
                "another folder"
            )
        return Plan.FINISHED if prior.finished else Plan.RESUME
