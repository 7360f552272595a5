"""`ntklab-report`: a sweep's report.md, sweep.csv (one row per job) and figures."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ntklab.figures import draw_all
from ntklab.stats import Fit, local_slopes
from ntklab.sweep import COLUMNS, Sweep, SweepError, fits, read_sweep


def rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job, in the sweep's order: swept keys, status, the COLUMNS values."""
    out = []
    for job in sweep.jobs:
        row: dict[str, Any] = {"job": job.name}
        row.update({k: job.overrides.get(k) for k in sweep.swept})
        row.update({"status": job.status.value, "last_step": job.last_step})
        row.update({col: job.column(col) for col in COLUMNS})
        row.update({"wall_time_s": job.wall_time_s, "message": job.message})
        out.append(row)
    return out


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in table)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def fit_line(tag: str, x: str, label: str, fit: Fit) -> str:
    """e.g. `weights/max_neuron_dist ∝ model.width^-0.500 ± 0.012 (95% CI, 12 runs; all runs)`."""
    if math.isnan(fit.interval):
        return f"{tag} ∝ {x}^{fit.slope:.3f} (no interval from 2 runs; {label})"
    return f"{tag} ∝ {x}^{fit.slope:.3f} ± {fit.interval:.3f} (95% CI, {fit.points} runs; {label})"


def _slopes_line(sweep: Sweep, column: str, label: str) -> str:
    points = sweep.points()[label]
    means = [(p.x, p.mean(column)) for p in points]
    xs = [x for x, m in means if m is not None]
    ys = [m.value for _, m in means if m is not None]
    parts = [f"{a:g}→{b:g}: {slope:.3f}" for a, b, slope in local_slopes(xs, ys)]
    return "  local slopes " + ", ".join(parts) if parts else ""


def _fit_section(sweep: Sweep) -> list[str]:
    fitted = fits(sweep, sweep.spec.fit)
    if not fitted:
        return []
    seeds = " (each seed a point; the interval covers their spread)" if sweep.replicated else ""
    lines = [f"## Log-log slopes against {sweep.x} (completed runs){seeds}", ""]
    if sweep.spec.reference_slope is not None:
        lines += [
            f"The theory's exponent, drawn beside each fit: {sweep.spec.reference_slope:g}.",
            "",
        ]
    lines += [f"- {line}" if line[0] != " " else line for line in fit_lines(sweep)]
    return [*lines, ""]


def fit_lines(sweep: Sweep) -> list[str]:
    """Each fitted exponent of the report spec, each followed by its local slopes."""
    by_tag = {COLUMNS[c][0]: c for c in sweep.spec.fit}
    lines = []
    for tag, label, fit in fits(sweep, sweep.spec.fit):
        lines.append(fit_line(tag, sweep.x, label, fit))
        local = _slopes_line(sweep, by_tag[tag], label)
        if local:
            lines.append(f"  {local.strip()}")
    return lines


def _means_section(sweep: Sweep) -> list[str]:
    """Mean ± 95% half-width over the seeds of each point, for the report's columns."""
    if not sweep.replicated:
        return []
    cols = list(dict.fromkeys([*sweep.spec.fit, "loss_final", "lambda_min_init"]))
    head = ["series", sweep.x or "job", "seeds", *cols]
    lines = ["## Means over seeds (± half-width of the 95% interval)", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, points in sweep.points().items():
        for p in points:
            cells = []
            for col in cols:
                m = p.mean(col)
                cells.append("–" if m is None else f"{m.value:.4g} ± {m.half:.2g}")
            lines.append(f"| {label} | {p.x:g} | {len(p.jobs)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(sweep_dir: Path, sweep: Sweep, table: list[dict[str, Any]], figures: list[str]) -> str:
    counts: dict[str, int] = {}
    for job in sweep.jobs:
        counts[job.status.value] = counts.get(job.status.value, 0) + 1
    lines = [f"# Sweep report: {sweep_dir}", ""]
    lines.append(f"{len(sweep.jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    lines.append(
        f"Swept: {', '.join(sweep.swept) or '(nothing: every job has the same overrides)'}"
    )
    if sweep.fixed:
        lines.append("Fixed: " + ", ".join(f"{k}={v}" for k, v in sweep.fixed.items()))
    lines.append("")
    bad = [j for j in sweep.jobs if not j.completed]
    if bad:
        lines += ["## Not completed (left out of every fit and of the plots against x)", ""]
        lines += [
            f"- `{j.name}`: **{j.status}**" + (f": {j.message}" if j.message else "") for j in bad
        ]
        lines.append("")
    lines += _fit_section(sweep)
    lines += _means_section(sweep)
    cols = [c for c in table[0] if c != "message"]
    lines += ["## Runs", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in table]
    lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def write_report(sweep_dir: str | Path, sweep: Sweep | None = None) -> Path:
    """Read every job of the sweep, write report.md, sweep.csv and the PNG figures beside them."""
    root = Path(sweep_dir)
    sweep = sweep or read_sweep(root)
    table = rows(sweep)
    write_csv(root / "sweep.csv", table)
    figures = draw_all(sweep, root)
    path = root / "report.md"
    path.write_text(markdown(root, sweep, table, figures), encoding="utf-8")
    return path


def write_sweep_report(sweep_dir: Path, quiet: bool = False) -> Path | None:
    """report.md, sweep.csv and the figures of the sweep (with this launch's job outcomes)."""
    try:
        sweep = read_sweep(sweep_dir)
    except SweepError as err:
        if not quiet:
            print(f"ntklab: no sweep report: {err}", file=sys.stderr)
        return None
    return write_report(sweep_dir, sweep)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ntklab-report", description="Plots and a table for an ntklab sweep folder."
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a multirun folder")
    args = parser.parse_args(argv)
    try:
        sweep = read_sweep(args.sweep_dir)
    except SweepError as err:
        print(f"ntklab-report: error: {err}", file=sys.stderr)
        return 2
    path = write_report(args.sweep_dir, sweep)
    for line in fit_lines(sweep):
        print(line)
    bad = [j for j in sweep.jobs if not j.completed]
    for job in bad:
        print(f"{job.name}: {job.status}" + (f": {job.message}" if job.message else ""))
    print(f"ntklab-report: {len(sweep.jobs)} jobs ({len(bad)} not completed) → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
