"""The experiment presets compose, and shortened versions run and show their claims."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from ntklab.config import load
from ntklab.sweep import loglog_fit

from conftest import compose_config, run_cli

PRESETS = [
    "pl_linear",
    "width_sweep",
    "sgd_floor",
    "lazy_vs_rich",
    "gd_vs_sgd",
    "sgd_tail",
    "sgd_nonconvex",
    "kernel_regime",
]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_validates(preset: str) -> None:
    load(compose_config(f"experiment={preset}"))


def test_pl_linear_is_a_linear_net_in_float64_on_wide_data() -> None:
    cfg = load(compose_config("experiment=pl_linear"))
    assert cfg.model.name == "linear" and cfg.dtype == "float64" and cfg.optim.name == "gd"
    assert cfg.data.d >= cfg.data.n


def _ntklab(*args: str) -> subprocess.CompletedProcess:
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _job(sweep: Path, override: str) -> Path:
    """The job folder of a sweep whose name (its overrides, comma-separated) holds `override`."""
    (job,) = [p for p in sweep.iterdir() if override in p.name.split(",")]
    return job


def _final(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["final"]


@pytest.mark.slow
def test_pl_linear_short(tmp_path) -> None:
    _ntklab("experiment=pl_linear", "epochs=200", f"hydra.run.dir={tmp_path}")
    rows = _rows(tmp_path)
    assert all(r["ntk/rel_change"] == 0.0 for r in rows)  # K = X Xᵀ, exactly, throughout
    assert all(r["pl/ratio"] >= r["pl/mu"] * (1 - 1e-9) for r in rows)
    steps = rows[1:]
    assert all(r["loss/contraction"] <= r["pl/rate_bound"] * (1 + 1e-9) for r in steps)
    # the slowest mode takes over and the notes' 1 − μ/β is violated
    assert any(r["loss/contraction"] > r["pl/rate_slide"] for r in steps)


@pytest.mark.slow
def test_width_sweep_short(tmp_path) -> None:
    _ntklab(
        "-m",
        "experiment=width_sweep",
        "model.width=16,256",
        "epochs=20",
        f"hydra.sweep.dir={tmp_path}",
    )
    jobs = [_job(tmp_path, "model.width=16"), _job(tmp_path, "model.width=256")]
    first = [_rows(p)[0] for p in jobs]
    # λ_min(K_0) approaches λ_min(K∞) as m grows
    gaps = [abs(r["ntk/lambda_min"] - r["ntk/lambda_min_inf"]) for r in first]
    assert gaps[1] < gaps[0]
    widths = [16, 256]
    fit = loglog_fit(widths, [_final(p)["weights/max_neuron_dist"] for p in jobs])
    assert fit.slope < -0.2  # Du et al.: m^(-1/2); two short runs only roughly


@pytest.mark.slow
def test_sgd_floor_short(tmp_path) -> None:
    _ntklab(
        "-m",
        "experiment=sgd_floor",
        "data.d=8",
        "data.noise=0.5",
        "data.n=64",
        "optim.patience=2",
        "epochs=30",
        "ntk.every=0",
        f"hydra.sweep.dir={tmp_path}",
    )
    constant = _final(_job(tmp_path, "optim.schedule=constant"))
    plateau = _final(_job(tmp_path, "optim.schedule=plateau"))
    assert plateau["optim/lr"] < constant["optim/lr"]
    assert plateau["loss/train"] < constant["loss/train"]


@pytest.mark.slow
def test_lazy_vs_rich_short(tmp_path) -> None:
    _ntklab(
        "-m",
        "experiment=lazy_vs_rich",
        "model.alpha=0.3,10",
        "model.width=64",
        "epochs=40",
        f"hydra.sweep.dir={tmp_path}",
    )
    rich, lazy = _final(_job(tmp_path, "model.alpha=0.3")), _final(_job(tmp_path, "model.alpha=10"))
    assert lazy["ntk/kernel_distance"] < rich["ntk/kernel_distance"] / 10
    assert lazy["weights/rel_dist_from_init"] < rich["weights/rel_dist_from_init"]


def test_the_sgd_presets_ask_for_what_the_lecture_assumes() -> None:
    cfg = load(compose_config("experiment=gd_vs_sgd"))
    assert (cfg.model.name, cfg.loss, cfg.optim.weight_decay) == ("plain_linear", "logistic", 0.1)
    assert cfg.report.crossover == "loss/excess" and cfg.report.curve_x == "optim/grad_evals"
    decay = load(compose_config("experiment=gd_vs_sgd", "optim=sgd_decay"))
    assert decay.optim.schedule == "inverse_step" and decay.optim.batch_size == 1
    tail = load(compose_config("experiment=sgd_tail"))
    assert tail.report.tail_fit == "loss/excess"
    bound = load(compose_config("experiment=sgd_nonconvex"))
    # one one-example step per epoch: every iterate is recorded
    assert bound.optim.pass_fraction * bound.data.n == bound.optim.batch_size == 1


@pytest.mark.slow
def test_gd_vs_sgd_short(tmp_path) -> None:
    _ntklab(
        "-m", "experiment=gd_vs_sgd", "data.n=32,128", "epochs=12", f"hydra.sweep.dir={tmp_path}"
    )
    report = (tmp_path / "report.md").read_text()
    assert "## GD against SGD at equal cost" in report
    assert "ε* ∝ data.n^" in report and "the lecture: ε* ∝ data.n^-1" in report
    assert (tmp_path / "loss_excess_vs_cost.png").exists()
    for optim in ("gd", "sgd", "sgd_decay"):  # the same budget: 12 passes of n = 32
        last = _rows(tmp_path / f"data.n=32,epochs=12,optim={optim}")[-1]
        assert last["optim/grad_evals"] == 12 * 32


@pytest.mark.slow
def test_sgd_nonconvex_short(tmp_path) -> None:
    _ntklab("-m", "experiment=sgd_nonconvex", "epochs=60", "ntk.every=20",
            f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    assert "## The nonconvex SGD bound" in report
    rows = _rows(_job(tmp_path, "optim.lr=nonconvex"))
    assert [r["optim/steps"] for r in rows] == list(range(61))
    assert all(
        r["pl/sgd_min_grad_sq"] <= r["pl/ratio"] * r["loss/train"] * (1 + 1e-5) for r in rows
    )  # float32 gradients: pl/ratio and the float64 minimum round apart


@pytest.mark.slow
def test_sgd_tail_short(tmp_path) -> None:
    _ntklab("-m", "experiment=sgd_tail", "data.n=64", "epochs=20", f"hydra.sweep.dir={tmp_path}")
    report = (tmp_path / "report.md").read_text()
    assert "## Tail exponents (L − L* ∝ T^a)" in report
    assert report.count("records with T ≥ 0.2 T_end") == 2
    constant = _final(_job(tmp_path, "optim.schedule=constant"))
    decaying = _final(_job(tmp_path, "optim.schedule=inverse_time"))
    assert decaying["optim/lr"] < constant["optim/lr"]


@pytest.mark.slow
def test_kernel_regime_short(tmp_path) -> None:
    """Two widths, one seed, 40 epochs: the wide net follows its kernel prediction more closely
    and stays closer to its linearisation, and the report fits the columns it names."""
    _ntklab(
        "-m",
        "experiment=kernel_regime",
        "model.width=32,2048",
        "seed=0",
        "epochs=40",
        f"hydra.sweep.dir={tmp_path}",
    )
    rows = {int(r["model.width"]): r for r in csv.DictReader(open(tmp_path / "sweep.csv"))}
    for column in ("kernel_deviation", "linearization_gap", "test_kernel_deviation"):
        assert float(rows[2048][column]) < float(rows[32][column]), column
    assert "loss/kernel_prediction" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "kernel_prediction.png").exists()
