"""The sweep report's PNG figures, drawn with matplotlib's Agg canvas (no display, no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ntklab.sweep import COLUMNS, Sweep, loglog_fit


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _new(title: str, xlabel: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _x_axis(ax, sweep: Sweep) -> None:
    if sweep.x is None:
        ax.set_xticks(range(len(sweep.jobs)), [sweep.name(j) for j in sweep.jobs], rotation=30)
    elif all(sweep.position(j) > 0 for j in sweep.jobs if j.completed):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap


def _log_y_if_positive(ax) -> None:
    ys = [y for line in ax.get_lines() for y in line.get_ydata()]
    if ys and all(y > 0 for y in ys):
        ax.set_yscale("log")


def _save(fig: Figure, ax, folder: Path, name: str) -> str:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.savefig(folder / name, dpi=110)
    return name


def _against_x(sweep: Sweep, tags: Sequence[tuple[str, str]], fit: bool) -> list[tuple]:
    """For each series and column: (label, xs, ys, style, fit) over the series' completed runs."""
    out = []
    for label, jobs in sweep.groups().items():
        done = [j for j in jobs if j.completed]
        for col, style in tags:
            pairs = [(sweep.position(j), j.column(col)) for j in done]
            pairs = [(x, y) for x, y in pairs if _finite(y)]
            if not pairs:
                continue
            xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
            name = f"{col} ({label})" if len(sweep.groups()) > 1 else col
            power = loglog_fit(xs, ys) if fit and sweep.x else None
            if power is not None:
                name += f", slope {power.slope:.3f}"
            out.append((name, xs, ys, style, power))
    return out


def metric_figure(sweep: Sweep, folder: Path, name: str, title: str, cols, fit: bool) -> str:
    xlabel = sweep.x or "job"
    fig, ax = _new(title, xlabel, ", ".join(dict.fromkeys(COLUMNS[c][0] for c, _ in cols)))
    for label, xs, ys, style, power in _against_x(sweep, cols, fit):
        (line,) = ax.plot(xs, ys, style, label=label)
        if power is not None:  # the fitted power law across the fitted points
            ends = [min(x for x in xs if x > 0), max(xs)]
            ax.plot(ends, [power(x) for x in ends], ":", color=line.get_color())
    _x_axis(ax, sweep)
    if fit and sweep.x:
        ax.set_yscale("log")
    else:
        _log_y_if_positive(ax)
    return _save(fig, ax, folder, name)


def loss_curves(sweep: Sweep, folder: Path) -> str:
    """loss/train against epoch, one line per job coloured by x; unfinished runs dashed."""
    fig, ax = _new("Training loss (dashed: not completed)", "epoch", "loss/train")
    xs = [sweep.position(j) for j in sweep.jobs]
    drawn = [x for x, job in zip(xs, sweep.jobs, strict=True) if job.records] or xs
    positive = sweep.x is not None and all(x > 0 for x in drawn) and len(set(drawn)) > 1
    norm = (LogNorm if positive else Normalize)(min(drawn), max(drawn))
    cmap = colormaps["viridis"]
    for x, job in zip(xs, sweep.jobs, strict=True):
        steps, losses = job.curve("loss/train")
        if steps:
            style = "-" if job.completed else "--"
            label = sweep.name(job) + ("" if job.completed else f" ({job.status})")
            ax.plot(steps, losses, style, color=cmap(norm(x)), label=label, lw=1.2)
    _log_y_if_positive(ax)
    if sweep.x is not None:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=sweep.x)
    return _save(fig, ax, folder, "loss_curves.png")


def draw_all(sweep: Sweep, folder: Path) -> list[str]:
    """Every figure of the report, written into `folder`; returns their file names."""
    return [
        metric_figure(
            sweep,
            folder,
            "lambda_min.png",
            "λ_min(K) at init, at the end, and of K∞",
            [("lambda_min_init", "o--"), ("lambda_min_final", "s-"), ("lambda_min_inf", "k:")],
            fit=False,
        ),
        metric_figure(
            sweep,
            folder,
            "max_neuron_dist.png",
            "max_k ‖w_k(T) − w_k(0)‖ (log-log, fitted slope)",
            [("max_neuron_dist", "o-")],
            fit=True,
        ),
        metric_figure(
            sweep,
            folder,
            "rel_change.png",
            "‖K_T − K_0‖_F / ‖K_0‖_F (log-log, fitted slope)",
            [("rel_change", "o-")],
            fit=True,
        ),
        loss_curves(sweep, folder),
        metric_figure(
            sweep,
            folder,
            "final_loss.png",
            "Final training loss",
            [("loss_final", "o-")],
            fit=False,
        ),
    ]
