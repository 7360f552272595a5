"""`ntklab-report`: a sweep's report.md, sweep.csv (one row per job) and figures."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ntklab.crossover import crossovers, tail_fit
from ntklab.figures import draw_all
from ntklab.stats import Fit, local_slopes, loglog_fit
from ntklab.sweep import COLUMNS, Sweep, SweepError, column_label, fits, read_sweep


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
    by_tag = {column_label(c): c for c in sweep.spec.fit}
    lines = []
    for tag, label, fit in fits(sweep, sweep.spec.fit):
        lines.append(fit_line(tag, sweep.x, label, fit))
        local = _slopes_line(sweep, by_tag[tag], label)
        if local:
            lines.append(f"  {local.strip()}")
    return lines


def crossover_lines(sweep: Sweep) -> list[str]:
    """For each series against the baseline: ε* per x, and ε* fitted ∝ x^a beside the
    lecture's ε ≥ 1/n (a = −1)."""
    spec, lines = sweep.spec, []
    for label, points in crossovers(sweep).items():
        cells = ", ".join(f"{x:g}: " + ("–" if e is None else f"{e:.3g}") for x, e in points)
        lines.append(
            f"ε* ({spec.crossover} ≤ ε reached with fewer {'optim/grad_evals'} by "
            f"{spec.crossover_baseline} than by {label}), by {sweep.x}: {cells}"
        )
        fit = loglog_fit([x for x, _ in points], [e for _, e in points])
        if fit is not None:
            line = fit_line("ε*", sweep.x, label, fit)
            lines.append(f"  {line}; the lecture: ε* ∝ {sweep.x}^-1 (SGD cheaper while ε ≥ 1/n)")
    return lines


def tail_lines(sweep: Sweep) -> list[str]:
    """Each completed run's tail exponent a of tag ∝ T^a (the lecture's O(1/T): a = −1)."""
    spec = sweep.spec
    if spec.tail_fit is None:
        return []
    lines = []
    for job in (j for j in sweep.jobs if j.completed):
        fit = tail_fit(job, spec.tail_fit, spec.tail_from)
        if fit is not None:
            lines.append(
                f"{spec.tail_fit} ∝ T^{fit.slope:.3f} ± {fit.interval:.3f} (95% CI, {fit.points} "
                f"records with T ≥ {spec.tail_from:g} T_end; {sweep.name(job)}); the lecture: −1"
            )
    return lines


SGD_BOUND_TAGS = ("pl/sgd_grad_bound", "pl/sgd_min_grad_sq")


def _bound_runs(sweep: Sweep) -> list:
    return [j for j in sweep.jobs if j.completed and j.value(SGD_BOUND_TAGS[0], "last")]


def bound_table(sweep: Sweep) -> list[str]:
    """The nonconvex SGD bound's pieces for every run that logged it, as a markdown table."""
    done = _bound_runs(sweep)
    if not done:
        return []
    head = "| run | lr | T | R = L(W_0) | β (est.) | L² | 2√(RβL²/T) | descent bound | min ‖∇L‖² |"
    lines = [head, "|" + " --- |" * 9]
    tags = ("optim/lr", "optim/steps", "pl/sgd_beta", "pl/sgd_grad_sq", "pl/sgd_grad_bound")
    for job in done:
        cells = [job.value(t, "last") for t in tags]
        cells.insert(2, job.value("loss/train", "first"))
        cells += [job.value(t, "last") for t in ("pl/sgd_descent_bound", "pl/sgd_min_grad_sq")]
        lines.append(f"| {sweep.name(job)} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return lines


def bound_verdicts(sweep: Sweep) -> list[str]:
    """Per run: whether min_k ‖∇L(W_k)‖² stays under 2 √(R β L² / T)."""
    lines = []
    for job in _bound_runs(sweep):
        bound, seen = job.value(SGD_BOUND_TAGS[0], "last"), job.value(SGD_BOUND_TAGS[1], "last")
        verdict = "stays under" if seen <= bound else "does NOT stay under"
        lines.append(
            f"{sweep.name(job)}: min ‖∇L‖² = {seen:.4g} {verdict} 2√(RβL²/T) = {bound:.4g}"
        )
    return lines


def _claims_section(sweep: Sweep) -> list[str]:
    """The lecture's SGD claims a sweep's report spec asks for."""
    out = []
    crossing = crossover_lines(sweep)
    if crossing:
        out += ["## GD against SGD at equal cost", ""]
        out += [f"- {line}" if line[0] != " " else line for line in crossing] + [""]
    tails = tail_lines(sweep)
    if tails:
        out += ["## Tail exponents (L − L* ∝ T^a)", ""] + [f"- {line}" for line in tails] + [""]
    table = bound_table(sweep)
    if table:
        verdicts = [f"- {line}" for line in bound_verdicts(sweep)]
        out += ["## The nonconvex SGD bound", "", *table, "", *verdicts, ""]
    return out


def claim_lines(sweep: Sweep) -> list[str]:
    """What `ntklab-report` prints of the claims sections."""
    return [*crossover_lines(sweep), *tail_lines(sweep), *bound_verdicts(sweep)]


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
    lines += _claims_section(sweep)
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
    for line in [*fit_lines(sweep), *claim_lines(sweep)]:
        print(line)
    bad = [j for j in sweep.jobs if not j.completed]
    for job in bad:
        print(f"{job.name}: {job.status}" + (f": {job.message}" if job.message else ""))
    print(f"ntklab-report: {len(sweep.jobs)} jobs ({len(bad)} not completed) → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
