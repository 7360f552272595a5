"""A sweep as data: its job folders, each job's overrides, status and records, the keys the
jobs differ in, and the log-log fits of a quantity against the swept key. The sweep report
(report.py) and its figures (figures.py) both read a sweep through this module."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ntklab.rundir import RunFolder, Status, read_jsonl
from ntklab.stats import Fit, Mean, loglog_fit, mean_interval

# What a job's row reports: column name → (tag in metrics.jsonl, which record: first or last).
COLUMNS = {
    "loss_init": ("loss/train", "first"),
    "loss_final": ("loss/train", "last"),
    "lambda_min_init": ("ntk/lambda_min", "first"),
    "lambda_min_final": ("ntk/lambda_min", "last"),
    "lambda_min_inf": ("ntk/lambda_min_inf", "last"),
    "max_neuron_dist": ("weights/max_neuron_dist", "last"),
    "rel_change": ("ntk/rel_change", "last"),
    "rel_dist_from_init": ("weights/rel_dist_from_init", "last"),
    "kernel_distance": ("ntk/kernel_distance", "last"),
    "excess_loss": ("loss/excess", "last"),
    "loss_optimum": ("loss/optimum", "last"),
}
# The figures a report may draw (figures.py draws them).
FIGURES = ("lambda_min", "fits", "loss_curves", "final_loss", "excess_loss")
# A report's defaults, which suit a width sweep.
FIT = ("max_neuron_dist", "rel_change")
SHOWN = ("lambda_min", "fits", "loss_curves", "final_loss")
# The preferred x axis: a width sweep plots against the width; otherwise the first numeric key.
PREFERRED_X = "model.width"
# Where a sweep's job folders keep the command's overrides and config.
OVERRIDES_FILE = ".hydra/overrides.yaml"
CONFIG_FILE = ".hydra/config.yaml"
# The key whose values make replicates of one point rather than points of their own.
SEED = "seed"
# In a sweep folder: how each job of the last launch ended (refused, failed, interrupted), one
# JSON object per line, written by the jobs; started afresh by each launch.
LAUNCH_LOG = ".ntklab-launch.jsonl"
# Overrides that change how jobs are launched or continued, not what they compute.
NOT_SETTINGS = ("resume", "overwrite", "launcher")


class SweepError(ValueError):
    """A sweep folder that cannot be read; the message says why and what to pass."""


def override_key(override: str) -> str:
    """The key of a command-line override: `+key=v`, `++key=v` and `~key` name `key`."""
    return override.split("=", 1)[0].lstrip("+~")


def parse_value(text: str) -> Any:
    """An override's value as Hydra's command line wrote it: int, float, or the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def overrides_dict(items: list) -> dict[str, Any]:
    """Overrides ("key=value") as a dict of setting → value (NOT_SETTINGS left out)."""
    pairs = (str(item).split("=", 1) for item in items if "=" in str(item))
    out = {override_key(key): parse_value(value) for key, value in pairs}
    return {k: v for k, v in out.items() if k not in NOT_SETTINGS}


def read_overrides(path: Path) -> dict[str, Any]:
    """`.hydra/overrides.yaml` (a list of "key=value") as a dict; SweepError when unreadable."""
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"{path} cannot be read ({type(err).__name__})") from None
    if not isinstance(items, list):
        raise SweepError(f"{path} is not a list of overrides")
    return overrides_dict(items)


def launch_outcomes(sweep_dir: Path) -> dict[str, dict]:
    """How the jobs of the sweep's last launch ended where it was not a run's own end (refused,
    failed before running, interrupted), by job folder name."""
    out = {}
    for record in read_jsonl(Path(sweep_dir) / LAUNCH_LOG):
        if isinstance(record, dict) and "job" in record:
            out[str(record["job"])] = record
    return out


@dataclass
class Job:
    """One job folder of a sweep: its overrides, status and the metrics it logged."""

    name: str  # folder relative to the sweep folder, e.g. "model.width=64"
    overrides: dict[str, Any]
    status: Status
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float | None = None

    @property
    def completed(self) -> bool:
        return self.status is Status.COMPLETED

    @property
    def last_step(self) -> int | None:
        return self.records[-1]["step"] if self.records else None

    def value(self, tag: str, which: str) -> float | None:
        """The tag's value in the first or last record that holds a finite value of it."""
        records = self.records if which == "first" else reversed(self.records)
        for record in records:
            value = record.get(tag)
            if value is not None and math.isfinite(value):
                return float(value)
        return None

    def column(self, name: str) -> float | None:
        """A COLUMNS value of this job."""
        tag, which = COLUMNS[name]
        return self.value(tag, which)

    def curve(self, tag: str) -> tuple[list[int], list[float]]:
        pairs = [(r["step"], r[tag]) for r in self.records if r.get(tag) is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]


def read_job(sweep_dir: Path, job_dir: Path, outcome: dict | None = None) -> Job:
    """A job from its folder; this launch's `outcome` where the job was refused (its folder,
    holding an earlier run, was left as it was) or never got to write its own status."""
    folder = RunFolder(job_dir)
    summary = folder.read_summary() or {}
    status, message = folder.status() or Status.UNFINISHED, str(summary.get("message") or "")
    try:
        overrides = read_overrides(job_dir / OVERRIDES_FILE)
    except SweepError as err:
        overrides, status, message = {}, Status.UNREADABLE, str(err)
    if outcome and (outcome["status"] == Status.REFUSED.value or status is Status.UNFINISHED):
        status, message = Status(outcome["status"]), str(outcome.get("message", ""))
    return Job(
        name=job_dir.relative_to(sweep_dir).as_posix(),
        overrides=overrides or overrides_dict((outcome or {}).get("overrides", [])),
        status=status,
        message=message,
        records=folder.records(),
        wall_time_s=summary.get("wall_time_s"),
    )


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job of the sweep: each folder holding .hydra/overrides.yaml, and the jobs of the
    last launch that have no such folder (refused before they could write one)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise SweepError(f"SWEEP_DIR={str(root)!r}: no such folder; pass a multirun folder")
    outcomes = launch_outcomes(root)
    found = sorted(p.parent.parent for p in root.rglob(OVERRIDES_FILE))
    found = [d for d in found if ".submitit" not in d.relative_to(root).parts]
    names = {d.relative_to(root).as_posix() for d in found}
    jobs = [read_job(root, d, outcomes.get(d.relative_to(root).as_posix())) for d in found]
    unseen = [name for name in outcomes if name not in names]
    jobs += [read_job(root, root / name, outcomes[name]) for name in unseen]
    if not jobs:
        raise SweepError(
            f"SWEEP_DIR={str(root)!r}: holds no job folders ({OVERRIDES_FILE}); "
            "pass the folder a multirun wrote, e.g. runs/multirun/<date>/<time>"
        )
    return jobs


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


@dataclass
class ReportSpec:
    """What a sweep's report shows; a preset declares it in its `report:` node (the defaults
    suit a width sweep). The keys are settings of the report only: they do not change a run."""

    x: Optional[str] = None  # the x axis (a numeric swept key; null: model.width, or the first)
    fit: list[str] = field(default_factory=lambda: list(FIT))  # sweep.csv columns to fit
    reference_slope: Optional[float] = -0.5  # the theory's exponent, drawn beside each fit
    figures: list[str] = field(default_factory=lambda: list(SHOWN))  # what to draw


def read_spec(job: Path) -> ReportSpec:
    """The report node of a job's recorded config (.hydra/config.yaml); the defaults without."""
    try:
        node = (yaml.safe_load((job / CONFIG_FILE).read_text()) or {}).get("report") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        node = {}
    known = {f.name for f in dataclasses.fields(ReportSpec)}
    return ReportSpec(**{k: v for k, v in node.items() if k in known})


@dataclass
class Point:
    """One point of a series: the completed jobs at one x, replicates that differ only in their
    seed."""

    x: float
    label: str
    jobs: list[Job]

    def mean(self, column: str) -> Mean | None:
        """The column's mean over the replicates, with its 95% interval."""
        return mean_interval([job.column(column) for job in self.jobs])


@dataclass
class Sweep:
    """Jobs grouped by the swept keys: `x` is the key on the figures' x axis (None when no swept
    key is numeric), `series` the other swept keys (one line per combination of their values),
    the seed (when swept) makes replicates of each point. `spec`: what the report shows."""

    jobs: list[Job]
    swept: list[str]
    fixed: dict[str, Any]
    x: str | None
    series: list[str]
    spec: ReportSpec = field(default_factory=ReportSpec)

    @property
    def replicated(self) -> bool:
        return SEED in self.swept

    def name(self, job: Job) -> str:
        """The job by its swept values alone, e.g. "model.width=64" (the folder when none)."""
        return ", ".join(f"{k}={job.overrides.get(k)}" for k in self.swept) or job.name

    def label(self, job: Job) -> str:
        """The job's series: its values of the swept keys other than x and the seed."""
        return ", ".join(f"{k}={job.overrides.get(k)}" for k in self.series) or "all runs"

    def position(self, job: Job) -> float:
        """x of a job: its swept value, or its index in the sweep when no swept key is numeric."""
        return float(self.jobs.index(job) if self.x is None else job.overrides[self.x])

    def groups(self) -> dict[str, list[Job]]:
        """Jobs per series, each sorted along x."""
        out: dict[str, list[Job]] = {}
        for job in self.jobs:
            out.setdefault(self.label(job), []).append(job)
        key = self.x
        for jobs in out.values():
            jobs.sort(key=lambda j: _sort_key(j.overrides.get(key)) if key else (0, j.name))
        return out

    def points(self) -> dict[str, list[Point]]:
        """Per series, its completed jobs gathered by x (the seeds of one point together)."""
        out: dict[str, list[Point]] = {}
        for label, jobs in self.groups().items():
            by_x: dict[float, list[Job]] = {}
            for job in (j for j in jobs if j.completed):
                by_x.setdefault(self.position(job), []).append(job)
            out[label] = [Point(x, label, js) for x, js in sorted(by_x.items())]
        return out


def group(jobs: Sequence[Job], spec: ReportSpec | None = None) -> Sweep:
    """Swept keys are those whose value is not the same in every job; the seed is a replicate,
    never the x axis or a series. `spec.x` chooses the x axis when it is a numeric swept key."""
    spec = spec or ReportSpec()
    keys = sorted({k for job in jobs for k in job.overrides})
    swept, fixed = [], {}
    for key in keys:
        values = {repr(job.overrides.get(key)) for job in jobs}
        if len(values) > 1:
            swept.append(key)
        else:
            fixed[key] = jobs[0].overrides.get(key)
    numeric = [
        k
        for k in swept
        if k != SEED and all(isinstance(j.overrides.get(k), (int, float)) for j in jobs)
    ]
    preferred = [k for k in (spec.x, PREFERRED_X) if k in numeric]
    x = preferred[0] if preferred else (numeric[0] if numeric else None)
    series = [k for k in swept if k not in (x, SEED)]
    ordered = sorted(jobs, key=lambda j: [_sort_key(j.overrides.get(k)) for k in swept])
    return Sweep(list(ordered), swept, fixed, x, series, spec)


def read_sweep(sweep_dir: str | Path) -> Sweep:
    """The sweep in `sweep_dir`, grouped as its report spec (from its first job) says."""
    jobs = find_jobs(sweep_dir)
    spec = read_spec(Path(sweep_dir) / jobs[0].name)
    return group(jobs, spec)


def fits(sweep: Sweep, columns: Sequence[str]) -> list[tuple[str, str, Fit]]:
    """(tag, series, fit of log tag against log x) over each series' completed runs, every
    seed a point of its own (the interval then covers the seeds' spread)."""
    if sweep.x is None:
        return []
    out = []
    for col in columns:
        for label, jobs in sweep.groups().items():
            done = [j for j in jobs if j.completed]
            fit = loglog_fit([sweep.position(j) for j in done], [j.column(col) for j in done])
            if fit is not None:
                out.append((COLUMNS[col][0], label, fit))
    return out
