"""Sweep reports: reads every job folder of a multirun, writes report.md, sweep.csv and figures."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
}
# The preferred x axis: a width sweep plots against the width; otherwise the first numeric key.
PREFERRED_X = "model.width"


class ReportError(ValueError):
    """A sweep folder that cannot be reported on; the message says why and what to pass."""


@dataclass
class Job:
    """One job folder of a sweep: its overrides, status and the metrics it logged."""

    name: str  # folder relative to the sweep folder, e.g. "model.width=64"
    overrides: dict[str, Any]
    status: str  # completed, diverged, failed, interrupted… or unfinished (no summary.json)
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float | None = None

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

    def curve(self, tag: str) -> tuple[list[int], list[float]]:
        pairs = [(r["step"], r[tag]) for r in self.records if r.get(tag) is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]


def parse_value(text: str) -> Any:
    """An override's value as Hydra's command line wrote it: int, float, or the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_overrides(path: Path) -> dict[str, Any]:
    """`.hydra/overrides.yaml` (a list of "key=value") as a dict; `+key`/`++key` lose the plus."""
    items = yaml.safe_load(path.read_text()) or []
    pairs = (str(item).split("=", 1) for item in items if "=" in str(item))
    return {key.lstrip("+~"): parse_value(value) for key, value in pairs}


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl, skipping a line cut short by a run still writing or killed mid-write."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_job(sweep_dir: Path, job_dir: Path) -> Job:
    summary_path = job_dir / "summary.json"
    summary: dict[str, Any] = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            summary = {"status": "unreadable", "message": "summary.json is not valid JSON"}
    return Job(
        name=job_dir.relative_to(sweep_dir).as_posix(),
        overrides=read_overrides(job_dir / ".hydra" / "overrides.yaml"),
        status=str(summary.get("status", "unfinished")),
        message=str(summary.get("message") or ""),
        records=read_records(job_dir / "metrics.jsonl"),
        wall_time_s=summary.get("wall_time_s"),
    )


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job folder under the sweep folder (any folder holding .hydra/overrides.yaml)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ReportError(f"SWEEP_DIR={str(root)!r}: no such folder; pass a multirun folder")
    found = sorted(p.parent.parent for p in root.rglob(".hydra/overrides.yaml"))
    jobs = [read_job(root, d) for d in found if ".submitit" not in d.relative_to(root).parts]
    if not jobs:
        raise ReportError(
            f"SWEEP_DIR={str(root)!r}: holds no job folders (.hydra/overrides.yaml); "
            "pass the folder a multirun wrote, e.g. runs/multirun/<date>/<time>"
        )
    return jobs


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


@dataclass
class Sweep:
    """Jobs grouped by the swept keys: `x` is the key on the figures' x axis (None when no swept
    key is numeric), `series` the other swept keys (one line per combination of their values)."""

    jobs: list[Job]
    swept: list[str]
    fixed: dict[str, Any]
    x: str | None
    series: list[str]

    def name(self, job: Job) -> str:
        """The job by its swept values alone, e.g. "model.width=64" (the folder when none)."""
        return ", ".join(f"{k}={job.overrides.get(k)}" for k in self.swept) or job.name

    def label(self, job: Job) -> str:
        """The job's series: its values of the swept keys other than x."""
        return ", ".join(f"{k}={job.overrides.get(k)}" for k in self.series) or "all runs"

    def groups(self) -> dict[str, list[Job]]:
        """Jobs per series, each sorted along x."""
        out: dict[str, list[Job]] = {}
        for job in self.jobs:
            out.setdefault(self.label(job), []).append(job)
        key = self.x
        for jobs in out.values():
            jobs.sort(key=lambda j: _sort_key(j.overrides.get(key)) if key else (0, j.name))
        return out


def group(jobs: Sequence[Job]) -> Sweep:
    """Swept keys are those whose value is not the same in every job."""
    keys = sorted({k for job in jobs for k in job.overrides})
    swept, fixed = [], {}
    for key in keys:
        values = {repr(job.overrides.get(key)) for job in jobs}
        if len(values) > 1:
            swept.append(key)
        else:
            fixed[key] = jobs[0].overrides.get(key)
    numeric = [k for k in swept if all(isinstance(j.overrides.get(k), (int, float)) for j in jobs)]
    x = PREFERRED_X if PREFERRED_X in numeric else (numeric[0] if numeric else None)
    series = [k for k in swept if k != x]
    ordered = sorted(jobs, key=lambda j: [_sort_key(j.overrides.get(k)) for k in swept])
    return Sweep(list(ordered), swept, fixed, x, series)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x over the positive finite pairs (≥ 2 x values)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if _positive(x) and _positive(y)]
    if len({x for x, _ in pairs}) < 2:
        return None
    lx = [math.log(x) for x, _ in pairs]
    ly = [math.log(y) for _, y in pairs]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job, in the sweep's order: swept keys, status, the COLUMNS values."""
    out = []
    for job in sweep.jobs:
        row: dict[str, Any] = {"job": job.name}
        row.update({k: job.overrides.get(k) for k in sweep.swept})
        row.update({"status": job.status, "last_step": job.last_step})
        row.update({col: job.value(tag, which) for col, (tag, which) in COLUMNS.items()})
        row.update({"wall_time_s": job.wall_time_s, "message": job.message})
        out.append(row)
    return out


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in table)


def slopes(sweep: Sweep) -> list[tuple[str, str, float]]:
    """(tag, series, slope of log tag against log x) for the completed runs of each series."""
    if sweep.x is None:
        return []
    out = []
    for tag_col in ("max_neuron_dist", "rel_change"):
        tag, which = COLUMNS[tag_col]
        for label, jobs in sweep.groups().items():
            done = [j for j in jobs if j.status == "completed"]
            xs = [j.overrides[sweep.x] for j in done]
            slope = loglog_slope(xs, [j.value(tag, which) for j in done])
            if slope is not None:
                out.append((tag, label, slope))
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown(sweep_dir: Path, sweep: Sweep, table: list[dict[str, Any]], figures: list[str]) -> str:
    counts: dict[str, int] = {}
    for job in sweep.jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    lines = [f"# Sweep report: {sweep_dir}", ""]
    lines.append(f"{len(sweep.jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    lines.append(
        f"Swept: {', '.join(sweep.swept) or '(nothing: every job has the same overrides)'}"
    )
    if sweep.fixed:
        lines.append("Fixed: " + ", ".join(f"{k}={v}" for k, v in sweep.fixed.items()))
    lines.append("")
    bad = [j for j in sweep.jobs if j.status != "completed"]
    if bad:
        lines += ["## Not completed (left out of every fit and of the plots against x)", ""]
        lines += [
            f"- `{j.name}`: **{j.status}**" + (f": {j.message}" if j.message else "") for j in bad
        ]
        lines.append("")
    fitted = slopes(sweep)
    if fitted:
        lines += [f"## Log-log slopes against {sweep.x} (completed runs)", ""]
        lines += [f"- {tag} ∝ {sweep.x}^{s:.3f}  ({label})" for tag, label, s in fitted]
        lines.append("")
    cols = [c for c in table[0] if c != "message"]
    lines += ["## Runs", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in table]
    lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def write_report(sweep_dir: str | Path, sweep: Sweep | None = None) -> Path:
    """Read every job of the sweep, write report.md, sweep.csv and the PNG figures beside them."""
    from ntklab.figures import draw_all  # matplotlib only when a report is drawn

    root = Path(sweep_dir)
    sweep = sweep or group(find_jobs(root))
    table = rows(sweep)
    write_csv(root / "sweep.csv", table)
    figures = draw_all(sweep, root)
    path = root / "report.md"
    path.write_text(markdown(root, sweep, table, figures), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ntklab-report", description="Plots and a table for an ntklab sweep folder."
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a multirun folder")
    args = parser.parse_args(argv)
    try:
        sweep = group(find_jobs(args.sweep_dir))
    except ReportError as err:
        print(f"ntklab-report: error: {err}", file=sys.stderr)
        return 2
    path = write_report(args.sweep_dir, sweep)
    for tag, label, slope in slopes(sweep):
        print(f"{tag} ∝ {sweep.x}^{slope:.3f}  ({label})")
    bad = [j for j in sweep.jobs if j.status != "completed"]
    for job in bad:
        print(f"{job.name}: {job.status}" + (f": {job.message}" if job.message else ""))
    print(f"ntklab-report: {len(sweep.jobs)} jobs ({len(bad)} not completed) → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
