"""Sweep reports on hand-made sweep folders whose values follow known power laws."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from ntklab.report import main, write_report
from ntklab.stats import loglog_fit, mean_interval, t975
from ntklab.sweep import find_jobs, group, read_sweep

from conftest import run_cli

WIDTHS = [16, 64, 256, 1024]


def make_job(root: Path, overrides: dict, status: str | None, epochs: int = 3, **final) -> Path:
    """A job folder as a run writes it: .hydra/overrides.yaml, metrics.jsonl, summary.json."""
    name = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    lines = "".join(f"- {k}={v}\n" for k, v in overrides.items())
    (job / ".hydra" / "overrides.yaml").write_text(lines)
    records = []  # epochs=0: a job that failed before its first record
    for step in range(epochs + 1 if epochs else 0):
        t = step / epochs
        record = {"step": step, "loss/train": 1.0 / (1 + step), "ntk/lambda_min": 0.1 + 0.01 * t}
        record.update({tag: value * t for tag, value in final.items()})
        records.append(record)
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if status is not None:
        summary = {"status": status, "message": f"{status} on purpose", "wall_time_s": 1.5}
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def power_sweep(root: Path) -> None:
    """max_neuron_dist = 3 m^-1/2, rel_change = 2 m^-3/4, plus three runs that did not complete
    whose values would spoil both slopes if they were fitted."""
    for m in WIDTHS:
        make_job(
            root,
            {"model.width": m, "epochs": 3},
            "completed",
            **{
                "weights/max_neuron_dist": 3 * m**-0.5,
                "ntk/rel_change": 2 * m**-0.75,
                "ntk/lambda_min_inf": 0.2,
            },  # fmt: skip
        )
    outlier = {"weights/max_neuron_dist": 50.0, "ntk/rel_change": 50.0}
    make_job(root, {"model.width": 4096, "epochs": 3}, "diverged", **outlier)
    make_job(root, {"model.width": 8, "epochs": 3}, None, **outlier)  # unfinished: no summary
    make_job(root, {"model.width": 2048, "epochs": 3}, "failed", epochs=0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_loglog_fit_recovers_a_power_law_and_its_standard_error():
    xs = [2.0, 8.0, 32.0]
    exact = loglog_fit(xs, [5 * x**-0.75 for x in xs])
    assert exact.slope == pytest.approx(-0.75, abs=1e-12)
    assert exact.intercept == pytest.approx(math.log(5), abs=1e-12)
    assert exact(10.0) == pytest.approx(5 * 10**-0.75) and exact.stderr < 1e-12
    assert loglog_fit([4.0, 4.0], [1.0, 2.0]) is None  # one x value: no slope
    assert loglog_fit([1.0, 2.0, 3.0], [0.0, -1.0, math.nan]) is None
    # against ordinary least squares in matrix form: Var(β) = σ² (AᵀA)⁻¹, σ² = RSS / (k − 2)
    noisy = [16, 64, 256, 1024, 4096]
    noise = [0.1, -0.05, 0.02, -0.12, 0.07]
    fit = loglog_fit(noisy, [2 * x**0.5 * math.exp(e) for x, e in zip(noisy, noise, strict=True)])
    A = torch.tensor([[1.0, math.log(x)] for x in noisy], dtype=torch.float64)
    b = torch.tensor(
        [math.log(2 * x**0.5) + e for x, e in zip(noisy, noise, strict=True)], dtype=torch.float64
    )
    beta = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    sigma2 = float(((A @ beta - b) ** 2).sum()) / 3
    cov = sigma2 * torch.linalg.inv(A.T @ A)
    assert (fit.intercept, fit.slope) == pytest.approx(beta.tolist(), rel=1e-10)
    assert fit.stderr == pytest.approx(math.sqrt(float(cov[1, 1])), rel=1e-10)
    assert fit.points == 5


def test_report_lists_every_job_and_fits_only_completed_runs(tmp_path):
    power_sweep(tmp_path)
    path = write_report(tmp_path)
    rows = read_csv(tmp_path / "sweep.csv")
    assert len(rows) == len(WIDTHS) + 3
    status = {int(r["model.width"]): r["status"] for r in rows}
    assert status == {16: "completed", 64: "completed", 256: "completed", 1024: "completed",
                      4096: "diverged", 8: "unfinished", 2048: "failed"}  # fmt: skip
    by_width = {int(r["model.width"]): r for r in rows}
    assert float(by_width[64]["max_neuron_dist"]) == pytest.approx(3 * 64**-0.5)
    assert float(by_width[64]["lambda_min_init"]) == pytest.approx(0.1)
    assert float(by_width[64]["lambda_min_final"]) == pytest.approx(0.11)
    assert float(by_width[64]["lambda_min_inf"]) == pytest.approx(0.2)
    assert by_width[64]["last_step"] == "3"
    assert by_width[2048]["message"] == "failed on purpose"
    report = path.read_text()
    assert (
        "weights/max_neuron_dist ∝ model.width^-0.500 ± 0.000 (95% CI, 4 runs; all runs)" in report
    )
    assert "local slopes 16→64: -0.500, 64→256: -0.500, 256→1024: -0.500" in report
    assert "The theory's exponent, drawn beside each fit: -0.5." in report
    assert "ntk/rel_change ∝ model.width^-0.750" in report
    assert "Swept: model.width" in report and "Fixed: epochs=3" in report
    for name, why in [("model.width=4096", "diverged"), ("model.width=8", "unfinished")]:
        assert f"`epochs=3,{name}`: **{why}**" in report
    for png in ["lambda_min", "max_neuron_dist", "rel_change", "loss_curves", "final_loss"]:
        assert (tmp_path / f"{png}.png").stat().st_size > 1000
        assert f"]({png}.png)" in report


def test_two_swept_keys_give_one_series_per_value_of_the_other(tmp_path):
    for lr in (0.1, 0.5):
        for m in WIDTHS:
            scale = 1.0 if lr == 0.1 else 4.0
            make_job(tmp_path, {"model.width": m, "optim.lr": lr}, "completed",
                     **{"weights/max_neuron_dist": scale * m**-0.5,
                        "ntk/rel_change": scale * m ** (-1.0 if lr == 0.1 else -0.5)})  # fmt: skip
    sweep = group(find_jobs(tmp_path))
    assert (sweep.x, sweep.series, sweep.swept) == ("model.width", ["optim.lr"], sweep.swept)
    assert set(sweep.groups()) == {"optim.lr=0.1", "optim.lr=0.5"}
    report = write_report(tmp_path).read_text()
    assert "ntk/rel_change ∝ model.width^-1.000 ± 0.000 (95% CI, 4 runs; optim.lr=0.1)" in report
    assert "ntk/rel_change ∝ model.width^-0.500 ± 0.000 (95% CI, 4 runs; optim.lr=0.5)" in report


def test_a_sweep_over_something_else_than_width(tmp_path):
    for lr in (0.01, 0.1, 1.0):
        make_job(tmp_path, {"optim.lr": lr, "model.width": 64}, "completed",
                 **{"weights/max_neuron_dist": lr**2, "ntk/rel_change": lr})  # fmt: skip
    sweep = group(find_jobs(tmp_path))
    assert sweep.x == "optim.lr" and sweep.fixed == {"model.width": 64}
    assert "weights/max_neuron_dist ∝ optim.lr^2.000" in write_report(tmp_path).read_text()


def test_a_sweep_over_names_still_draws_every_figure(tmp_path):
    for data in ("sphere", "gaussian"):
        make_job(tmp_path, {"data": data}, "completed", **{"weights/max_neuron_dist": 1.0})
    sweep = group(find_jobs(tmp_path))
    assert sweep.x is None and sweep.swept == ["data"]
    write_report(tmp_path)
    assert len(read_csv(tmp_path / "sweep.csv")) == 2
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000


def test_a_half_written_last_line_is_skipped(tmp_path):
    job = make_job(tmp_path, {"model.width": 8}, None)
    with open(job / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss/tr')
    (only,) = find_jobs(tmp_path)
    assert only.last_step == 3 and only.status == "unfinished"


def test_cli_prints_slopes_and_rejects_a_folder_without_jobs(tmp_path, capsys):
    power_sweep(tmp_path / "sweep")
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "weights/max_neuron_dist ∝ model.width^-0.500" in out
    assert "epochs=3,model.width=4096: diverged: diverged on purpose" in out
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        proc = run_cli(str(folder), module="ntklab.report")
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"ntklab-report: error: SWEEP_DIR='{folder}'")
        assert "Traceback" not in proc.stderr


def test_a_torn_overrides_file_is_listed_not_fatal(tmp_path, capsys):
    power_sweep(tmp_path)
    torn = make_job(tmp_path, {"model.width": 512, "epochs": 3}, "completed")
    (torn / ".hydra" / "overrides.yaml").write_text("- model.width=512\n- [epochs")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "model.width=512: unreadable" in out and "overrides.yaml cannot be read" in out


def test_seeds_are_replicates_with_intervals(tmp_path):
    """seed=0,1,2 at each width: one point per width (the mean over seeds, with its 95%
    interval), the exponent fitted to every run with its interval, figures with error bars."""
    noise = {0: 1.1, 1: 0.9, 2: 1.0}
    for m in WIDTHS:
        for seed, factor in noise.items():
            make_job(tmp_path, {"model.width": m, "seed": seed}, "completed",
                     **{"weights/max_neuron_dist": factor * 3 * m**-0.5,
                        "ntk/rel_change": factor * 2 * m**-0.75})  # fmt: skip
    sweep = read_sweep(tmp_path)
    assert sweep.replicated and sweep.x == "model.width" and sweep.series == []
    (points,) = sweep.points().values()
    assert [p.x for p in points] == WIDTHS and all(len(p.jobs) == 3 for p in points)
    m = points[0].mean("max_neuron_dist")
    values = [f * 3 * 16**-0.5 for f in noise.values()]
    assert m.value == pytest.approx(sum(values) / 3)
    sd = (sum((v - m.value) ** 2 for v in values) / 2) ** 0.5
    assert m.half == pytest.approx(4.3027 * sd / 3**0.5) and m.count == 3
    report = write_report(tmp_path).read_text()
    assert "each seed a point of its own" not in report  # the section's wording
    assert "(each seed a point; the interval covers their spread)" in report
    assert "weights/max_neuron_dist ∝ model.width^-0.500 ± 0.0" in report
    assert "12 runs; all runs" in report
    assert "## Means over seeds" in report and "| all runs | 16 | 3 |" in report


def test_a_preset_says_what_its_report_shows(tmp_path):
    """The report spec recorded in a job's config chooses the x axis, the fits, the theory's
    exponent and the figures."""
    for alpha in (0.3, 1.0, 3.0):
        job = make_job(tmp_path, {"model.alpha": alpha, "model.width": 64}, "completed",
                       **{"ntk/kernel_distance": 0.01 / alpha**2,
                          "weights/rel_dist_from_init": 0.1 / alpha})  # fmt: skip
        (job / ".hydra" / "config.yaml").write_text(
            "report:\n  x: model.alpha\n  fit: [kernel_distance, rel_dist_from_init]\n"
            "  reference_slope: -1.0\n  figures: [fits, loss_curves]\n"
        )
    report = write_report(tmp_path).read_text()
    assert "ntk/kernel_distance ∝ model.alpha^-2.000" in report
    assert "weights/rel_dist_from_init ∝ model.alpha^-1.000" in report
    assert "The theory's exponent, drawn beside each fit: -1." in report
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["kernel_distance.png", "loss_curves.png", "rel_dist_from_init.png"]


def test_t_quantiles_and_intervals():
    assert t975(1) == pytest.approx(12.706, abs=1e-3) and t975(20) == pytest.approx(2.086, abs=1e-3)
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    assert mean_interval([1.0]).half != mean_interval([1.0]).half  # NaN from one value
    assert mean_interval([None, math.nan]) is None
