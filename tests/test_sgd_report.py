"""The sweep report's SGD claims: ε* (the accuracy below which GD is the cheaper one) and its
fit against n, the tail exponent of L − L* against T, the nonconvex bound's table, curves on
the cost axis, and the report keys' validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ntklab.config import ConfigError, load
from ntklab.crossover import COST, crossover_eps, crossovers, first_cost, tail_fit
from ntklab.report import write_report
from ntklab.sweep import read_sweep

from conftest import compose_config

SPEC = (
    "report:\n  x: data.n\n  fit: []\n  figures: [cost_curves]\n  curve_x: optim/grad_evals\n"
    "  crossover: loss/excess\n"
)


def job_folder(root: Path, overrides: dict, records: list[dict], spec: str = SPEC) -> Path:
    name = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {k}={v}\n" for k, v in overrides.items())
    )
    (job / ".hydra" / "config.yaml").write_text(spec)
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (job / "summary.json").write_text(json.dumps({"status": "completed", "wall_time_s": 1.0}))
    return job


def gd_records(n: int, passes: int = 40) -> list[dict]:
    """GD: L − L* = 2^−k after k steps of n gradients each."""
    return [{"step": k, COST: n * k, "loss/excess": 0.5**k} for k in range(passes + 1)]


def sgd_records(n: int, passes: int = 40) -> list[dict]:
    """SGD at O(1/T): L − L* = 1/T after T = n k one-example steps (1 at T = 0)."""
    return [{"step": k, COST: n * k, "loss/excess": 1.0 / max(n * k, 1)} for k in range(passes + 1)]


def crossover_sweep(root: Path) -> None:
    for n in (100, 400, 1600, 6400):
        job_folder(root, {"data.n": n, "optim": "gd"}, gd_records(n))
        job_folder(root, {"data.n": n, "optim": "sgd"}, sgd_records(n))


def test_a_run_reaches_eps_where_it_stays_below_it():
    sweep_records = [1.0, 0.1, 0.5, 0.05, 0.04]
    from ntklab.sweep import Job, Status

    job = Job("j", {}, Status.COMPLETED, records=[
        {"step": k, COST: 10 * k, "loss/excess": v} for k, v in enumerate(sweep_records)
    ])  # fmt: skip
    assert first_cost(job, "loss/excess", 0.2) == 30  # the dip at 10 came back up
    assert first_cost(job, "loss/excess", 0.6) == 10
    assert first_cost(job, "loss/excess", 0.01) is None


def test_eps_star_is_where_gd_becomes_the_cheaper_one(tmp_path):
    crossover_sweep(tmp_path)
    sweep = read_sweep(tmp_path)
    found = dict(crossovers(sweep)["optim=sgd"])
    for n, eps in found.items():
        # GD reaches ε after ⌈log2(1/ε)⌉ passes, SGD after ⌈1/(nε)⌉ / n passes: GD is cheaper
        # below ε*, SGD at the grid's next ε above it
        gd, sgd = math.ceil(math.log2(1 / eps)), math.ceil(math.ceil(1 / eps) / n)
        assert gd < sgd or (1 / eps) > 40 * n, (n, eps)
        above = eps * 10 ** (1 / 8) * 1.001
        assert math.ceil(math.log2(1 / above)) >= math.ceil(math.ceil(1 / above) / n)
    report = write_report(tmp_path).read_text()
    assert "## GD against SGD at equal cost" in report
    assert "ε* ∝ data.n^-1." in report or "ε* ∝ data.n^-0.9" in report
    assert "the lecture: ε* ∝ data.n^-1" in report
    assert (tmp_path / "loss_excess_vs_cost.png").exists()


def test_no_crossover_when_the_baseline_never_wins():
    from ntklab.sweep import Job, Status

    slow = Job("gd", {}, Status.COMPLETED, records=gd_records(100))
    fast = Job("sgd", {}, Status.COMPLETED, records=[
        {"step": k, COST: 100 * k, "loss/excess": 1e-20 if k else 1.0} for k in range(41)
    ])  # fmt: skip
    assert crossover_eps(slow, fast, "loss/excess", [1e-3, 1e-2, 1e-1]) is None


def test_the_tail_exponent():
    from ntklab.sweep import Job, Status

    records = [{"step": t, "optim/steps": 10 * t, "loss/excess": 0.1 + t} for t in range(50)]
    records += [{"step": t, "optim/steps": 10 * t, "loss/excess": 3.0 / t} for t in range(50, 201)]
    fit = tail_fit(Job("j", {}, Status.COMPLETED, records=records), "loss/excess", 0.5)
    assert fit.slope == pytest.approx(-1.0, abs=1e-12)  # the head (t < 100) is left out
    assert fit.points == 101


def test_the_bound_table_says_which_run_stays_under(tmp_path):
    spec = "report:\n  x: null\n  fit: []\n  figures: []\n"
    for rule, bound, seen in (("nonconvex", 0.2, 0.05), ("nonconvex_slide", 0.1, 0.3)):
        records = [
            {"step": 0, "loss/train": 2.0, "optim/lr": 0.1, "optim/steps": 0},
            {"step": 1, "loss/train": 1.0, "optim/lr": 0.1, "optim/steps": 100,
             "pl/sgd_beta": 0.5, "pl/sgd_grad_sq": 4.0, "pl/sgd_grad_bound": bound,
             "pl/sgd_descent_bound": 0.15, "pl/sgd_min_grad_sq": seen},
        ]  # fmt: skip
        job_folder(tmp_path, {"optim.lr": rule}, records, spec)
    report = write_report(tmp_path).read_text()
    assert "## The nonconvex SGD bound" in report
    assert "| optim.lr=nonconvex | 0.1 | 100 | 2 | 0.5 | 4 | 0.2 | 0.15 | 0.05 |" in report
    assert "optim.lr=nonconvex: min ‖∇L‖² = 0.05 stays under 2√(RβL²/T) = 0.2" in report
    assert "optim.lr=nonconvex_slide: min ‖∇L‖² = 0.3 does NOT stay under" in report


@pytest.mark.parametrize(
    "override, message",
    [
        ("report.tail_from=1.5", "report.tail_from=1.5: must lie in (0, 1)"),
        ("report.crossover_baseline=gd", "report.crossover_baseline='gd': must name a series"),
        ("report.curve_x=grad_evals", "report.curve_x='grad_evals': must name a logged tag"),
        ("report.crossover=excess", "report.crossover='excess': must name a logged tag"),
    ],
)
def test_report_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(compose_config(override))
