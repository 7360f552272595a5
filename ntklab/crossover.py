"""The lecture's SGD claims read off a sweep: on the cost axis (optim/grad_evals), the accuracy ε*
below which one series (GD) reaches a tag ≤ ε more cheaply than another (SGD), and a run's tail
exponent of a tag against its optimiser steps T."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ntklab.stats import Fit, loglog_fit
from ntklab.sweep import SEED, Job, Sweep

COST = "optim/grad_evals"  # the cost axis the crossover counts


def first_cost(job: Job, tag: str, eps: float, cost: str = COST) -> float | None:
    """The cost at the record from which on `tag` stays ≤ eps to the end of the run (a noisy
    run that dips below eps and comes back up has not reached it); None when it never does."""
    found = None
    for record in job.records:
        value, spent = record.get(tag), record.get(cost)
        if value is None or spent is None or not math.isfinite(value):
            continue
        if value > eps:
            found = None
        elif found is None:
            found = float(spent)
    return found


def eps_grid(jobs: Sequence[Job], tag: str, per_decade: int = 8) -> list[float]:
    """Accuracies ε from the smallest positive value of `tag` the jobs reach to the largest,
    `per_decade` per factor of 10, largest first."""
    values = [r[tag] for j in jobs for r in j.records if _finite_positive(r.get(tag))]
    if not values:
        return []
    lo, hi = math.log10(min(values)), math.log10(max(values))
    k = max(1, math.ceil((hi - lo) * per_decade))
    return [10 ** (hi - (hi - lo) * i / k) for i in range(k + 1)]


def _finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def crossover_eps(baseline: Job, other: Job, tag: str, grid: Sequence[float]) -> float | None:
    """ε*: the largest ε of `grid` such that at every ε' ≤ ε of the grid that the baseline
    reaches, it reaches tag ≤ ε' with strictly less cost than `other` (which counts as never
    reaching ε' when it does not get there within its run, as long as it ran at least as long as
    the baseline needed). None when the baseline is not cheaper even at the smallest ε."""
    budget = other.value(COST, "last") or 0.0
    found = None
    for eps in sorted(grid):
        mine = first_cost(baseline, tag, eps)
        if mine is None:
            continue
        theirs = first_cost(other, tag, eps)
        cheaper = mine < theirs if theirs is not None else mine <= budget
        if not cheaper:
            break
        found = eps
    return found


def crossovers(sweep: Sweep) -> dict[str, list[tuple[float, float | None]]]:
    """Per series other than the baseline: (x, ε*) for each of its completed runs whose x has
    a completed baseline run of the same seed (seeds are points of their own)."""
    spec = sweep.spec
    if spec.crossover is None or sweep.x is None:
        return {}
    points = sweep.points()
    base = {
        (p.x, repr(j.overrides.get(SEED))): j
        for p in points.get(spec.crossover_baseline, [])
        for j in p.jobs
    }
    out: dict[str, list[tuple[float, float | None]]] = {}
    for label, pts in points.items():
        if label == spec.crossover_baseline:
            continue
        for p in pts:
            for job in p.jobs:
                gd = base.get((p.x, repr(job.overrides.get(SEED))))
                if gd is not None:
                    grid = eps_grid([gd, job], spec.crossover)
                    out.setdefault(label, []).append(
                        (p.x, crossover_eps(gd, job, spec.crossover, grid))
                    )
    return out


def tail_fit(job: Job, tag: str, start: float = 0.5, steps: str = "optim/steps") -> Fit | None:
    """The power law tag ∝ T^a over the records with T ≥ start · the last T."""
    pairs = [(r.get(steps), r.get(tag)) for r in job.records]
    pairs = [(t, v) for t, v in pairs if _finite_positive(t) and v is not None]
    if not pairs:
        return None
    last = pairs[-1][0]
    tail = [(t, v) for t, v in pairs if t >= start * last]
    return loglog_fit([t for t, _ in tail], [v for _, v in tail])
