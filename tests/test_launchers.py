"""Real multiruns with each launcher into tmp_path, each followed by its sweep report."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from conftest import run_cli

TINY = ["epochs=3", "data.n=8", "data.d=4"]


def sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli("-m", *overrides, *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=240)


def last_values(job: Path) -> dict:
    last: dict = {}
    for line in (job / "metrics.jsonl").read_text().splitlines():
        last.update(json.loads(line))
    return last


def check_report(root: Path, widths: list[int]) -> list[dict[str, str]]:
    """One CSV row per job with that job's own values; every job wrote only its own folder."""
    with open(root / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["model.width"]) for r in rows) == sorted(widths)
    for row in rows:
        job = root / row["job"]
        width = int(row["model.width"])
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"model.width={width}" in overrides
        if row["status"] != "completed":
            continue
        summary = json.loads((job / "summary.json").read_text())
        assert summary["hparams"]["width"] == width
        steps = [json.loads(x)["step"] for x in (job / "metrics.jsonl").read_text().splitlines()]
        assert steps == [0, 1, 2, 3]  # one run's records, not two interleaved
        last = last_values(job)
        assert float(row["loss_final"]) == pytest.approx(last["loss/train"], rel=1e-12)
        assert float(row["max_neuron_dist"]) == pytest.approx(
            last["weights/max_neuron_dist"], rel=1e-12
        )
        assert float(row["lambda_min_final"]) == pytest.approx(last["ntk/lambda_min"], rel=1e-12)
    for png in ["lambda_min", "max_neuron_dist", "rel_change", "loss_curves", "final_loss"]:
        assert (root / f"{png}.png").stat().st_size > 1000
    return rows


@pytest.mark.slow
def test_joblib_sweep_with_a_failing_job_goes_on_and_reports_it(tmp_path):
    proc = sweep(tmp_path, "launcher=joblib", "hydra.launcher.n_jobs=2", "model.width=8,16,-1,32")
    root = tmp_path / "sweep"
    assert proc.returncode == 1, proc.stderr
    assert "1 of 4 jobs failed: data.d=4,data.n=8,epochs=3,model.width=-1 (why" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = check_report(root, [8, 16, -1, 32])
    status = {int(r["model.width"]): r["status"] for r in rows}
    assert status == {8: "completed", 16: "completed", 32: "completed", -1: "failed"}
    assert "model.width=-1: must be a positive integer" in (root / "report.md").read_text()
    # The preset gives every job one torch thread; the launcher's name does not name folders.
    assert (
        json.loads((root / rows[-1]["job"] / "summary.json").read_text())["hparams"]["threads"] == 1
    )
    assert not any("launcher" in r["job"] for r in rows)


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    proc = sweep(tmp_path, "launcher=submitit_local", "model.width=8,32")
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "sweep"
    rows = check_report(root, [8, 32])
    assert all(r["status"] == "completed" for r in rows)
    assert (root / ".submitit").is_dir()  # submitit's own logs, kept out of the report
    assert "sweep report →" in proc.stderr


@pytest.mark.slow
def test_a_job_with_bad_data_is_recorded_and_the_basic_sweep_goes_on(tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("1,2\n3\n")  # ragged rows: the data loader refuses it
    proc = sweep(tmp_path, "data=sphere,csv", f"data.path={bad_csv}", "model.width=8")
    assert proc.returncode == 1
    with open(tmp_path / "sweep" / "sweep.csv", newline="") as f:
        status = {r["data"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"sphere": "completed", "csv": "failed"}
    assert "Error executing job" not in proc.stderr  # Hydra's abort did not happen


def test_jobs_that_would_share_a_folder_are_refused_before_any_runs(tmp_path):
    unnamed_seed = "hydra.job.config.override_dirname.exclude_keys=[seed]"
    for overrides in (["model.width=8,8"], ["seed=0,1", unnamed_seed]):
        proc = sweep(tmp_path, *overrides)
        assert proc.returncode == 2
        assert "two jobs of this sweep would write into one folder" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "preset, keys",
    [
        ("joblib", {"n_jobs": -1}),
        ("submitit_local", {"cpus_per_task": 1, "timeout_min": 60}),
        (
            "submitit_slurm",
            {"partition": None, "gpus_per_node": 1, "timeout_min": 120, "array_parallelism": 16},
        ),  # fmt: skip
    ],
)
def test_launcher_presets_compose(preset, keys):
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"launcher={preset}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert preset.split("_")[-1].lower() in launcher._target_.lower()
    for key, value in keys.items():
        assert launcher[key] == value
