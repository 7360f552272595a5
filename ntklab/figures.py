"""The sweep report's PNG figures, drawn with matplotlib's Agg canvas (no display, no pyplot).
Points are means over seeds with their 95% intervals as error bars; fitted power laws are drawn
with the theory's exponent beside them where the report spec names one."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ntklab.stats import loglog_fit
from ntklab.sweep import COLUMNS, FIGURES, Job, Sweep

TITLES = {
    "lambda_min": "λ_min(K) at init, at the end, and of K∞",
    "max_neuron_dist": "max_k ‖w_k(T) − w_k(0)‖",
    "rel_change": "‖K_T − K_0‖_F / ‖K_0‖_F",
    "kernel_distance": "kernel distance 1 − cos(K_T, K_0)",
    "rel_dist_from_init": "‖W_T − W_0‖_F / ‖W_0‖_F",
    "excess_loss": "final excess loss L_T − L*",
    "loss_final": "final training loss",
}


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


def _means(sweep: Sweep, column: str) -> list[tuple[str, list[float], list[float], list[float]]]:
    """Per series: x, the column's mean over seeds and its 95% half-width (0 from one seed)."""
    out = []
    for label, points in sweep.points().items():
        rows = [(p.x, p.mean(column)) for p in points]
        rows = [(x, m) for x, m in rows if m is not None]
        if rows:
            half = [0.0 if math.isnan(m.half) else m.half for _, m in rows]
            out.append((label, [x for x, _ in rows], [m.value for _, m in rows], half))
    return out


def metric_figure(sweep: Sweep, folder: Path, name: str, title: str, cols) -> str:
    """Columns against x, each series' means with error bars."""
    fig, ax = _new(
        title, sweep.x or "job", ", ".join(dict.fromkeys(COLUMNS[c][0] for c, _ in cols))
    )
    many = len(sweep.groups()) > 1
    for col, style in cols:
        for label, xs, ys, half in _means(sweep, col):
            ax.errorbar(xs, ys, yerr=half, fmt=style, capsize=3,
                        label=f"{col} ({label})" if many else col)  # fmt: skip
    _x_axis(ax, sweep)
    _log_y_if_positive(ax)
    return _save(fig, ax, folder, name)


def fit_figure(sweep: Sweep, folder: Path, column: str) -> str:
    """A column against x in log-log: means with error bars, the power law fitted to every
    run (its exponent and 95% interval in the legend) and the theory's exponent beside it."""
    ref = sweep.spec.reference_slope
    title = f"{TITLES.get(column, column)} (log-log, fitted)"
    fig, ax = _new(title, sweep.x or "job", COLUMNS[column][0])
    for label, xs, ys, half in _means(sweep, column):
        done = [j for j in sweep.groups()[label] if j.completed]
        fit = loglog_fit([sweep.position(j) for j in done], [j.column(column) for j in done])
        name = label if len(sweep.groups()) > 1 else column
        if fit is not None:
            interval = "" if math.isnan(fit.interval) else f" ± {fit.interval:.3f}"
            name += f", slope {fit.slope:.3f}{interval}"
        bars = ax.errorbar(xs, ys, yerr=half, fmt="o", capsize=3, label=name)
        positive = [x for x in xs if x > 0]
        if fit is not None and positive:
            ends = [min(positive), max(positive)]
            color = bars.lines[0].get_color()
            ax.plot(ends, [fit(x) for x in ends], "-", color=color, lw=1)
            if ref is not None:  # the theory's exponent through the first mean
                anchor = (xs[0], ys[0])
                line = [anchor[1] * (x / anchor[0]) ** ref for x in ends]
                ax.plot(ends, line, ":", color="grey", label=f"theory, slope {ref:g}")
    _x_axis(ax, sweep)
    if sweep.x is not None:
        ax.set_yscale("log")
    return _save(fig, ax, folder, f"{column}.png")


def _colours(sweep: Sweep) -> Callable[[Job], tuple]:
    """A colour per job: by its x on a colour scale when each x has one job, else one colour
    per series (seeds of one point share it)."""
    xs = [sweep.position(j) for j in sweep.jobs]
    if len(set(xs)) == len(xs) and sweep.x is not None:
        positive = all(x > 0 for x in xs) and len(set(xs)) > 1
        norm = (LogNorm if positive else Normalize)(min(xs), max(xs))
        return lambda job: colormaps["viridis"](norm(sweep.position(job)))
    keys = sorted({(sweep.label(j), sweep.position(j)) for j in sweep.jobs})
    palette = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return lambda job: palette(keys.index((sweep.label(job), sweep.position(job))) % palette.N)


def curves(sweep: Sweep, folder: Path, tag: str, name: str, title: str) -> str:
    """`tag` against epoch, one line per job; unfinished runs dashed."""
    fig, ax = _new(f"{title} (dashed: not completed)", "epoch", tag)
    colour = _colours(sweep)
    for job in sweep.jobs:
        steps, values = job.curve(tag)
        if steps:
            style = "-" if job.completed else "--"
            label = sweep.name(job) + ("" if job.completed else f" ({job.status})")
            ax.plot(steps, values, style, color=colour(job), label=label, lw=1.2)
    _log_y_if_positive(ax)
    xs = [sweep.position(j) for j in sweep.jobs]
    if sweep.x is not None and len(set(xs)) == len(xs) and len(xs) > 1:
        positive = all(x > 0 for x in xs)
        norm = (LogNorm if positive else Normalize)(min(xs), max(xs))
        fig.colorbar(ScalarMappable(norm=norm, cmap=colormaps["viridis"]), ax=ax, label=sweep.x)
    return _save(fig, ax, folder, name)


def _figure(sweep: Sweep, folder: Path, which: str) -> list[str]:
    if which == "lambda_min":
        cols = [("lambda_min_init", "o--"), ("lambda_min_final", "s-"), ("lambda_min_inf", "k:")]
        return [metric_figure(sweep, folder, "lambda_min.png", TITLES["lambda_min"], cols)]
    if which == "fits":
        return [fit_figure(sweep, folder, column) for column in sweep.spec.fit]
    if which == "loss_curves":
        return [curves(sweep, folder, "loss/train", "loss_curves.png", "Training loss")]
    if which == "excess_loss":
        return [curves(sweep, folder, "loss/excess", "excess_loss.png", "Excess loss L_t − L*")]
    cols = [("loss_final", "o-")]
    return [metric_figure(sweep, folder, "final_loss.png", TITLES["loss_final"], cols)]


def draw_all(sweep: Sweep, folder: Path, figures: Sequence[str] | None = None) -> list[str]:
    """The figures the report spec names (sweep.FIGURES), written into `folder`; their files."""
    names = [f for f in (figures or sweep.spec.figures) if f in FIGURES]
    return [path for which in names for path in _figure(sweep, folder, which)]
