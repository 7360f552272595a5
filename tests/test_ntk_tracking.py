"""The NTK tracker through the real CLI: matrix-free vs dense, auto's choice, reported failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import compose_config, run_cli

SMALL = ["epochs=3", "data.n=60", "data.d=5", "model.width=90", "dtype=float64"]


def run(tmp_path: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli(*SMALL, *overrides, f"hydra.run.dir={tmp_path / name}")


def records(tmp_path: Path, name: str) -> tuple[list[dict], dict]:
    folder = tmp_path / name
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines], json.loads((folder / "summary.json").read_text())


@pytest.mark.slow
def test_matrix_free_tracking_agrees_with_dense(tmp_path: Path) -> None:
    assert run(tmp_path, "dense", "ntk=structured").returncode == 0
    proc = run(tmp_path, "free", "ntk=ntvp", "ntk.tol=1e-10")
    assert proc.returncode == 0, proc.stderr
    assert "ntk/rel_change" in proc.stderr  # the warning says what is not logged
    dense, _ = records(tmp_path, "dense")
    free, summary = records(tmp_path, "free")
    assert summary["ntk_method"] == "ntvp" and summary["hparams"]["ntk_method"] == "ntvp"
    for a, b in zip(dense, free, strict=True):
        for tag in ("ntk/lambda_min", "ntk/lambda_max", "pl/mu", "ntk/condition_number"):
            assert b[tag] == pytest.approx(a[tag], rel=1e-8)
        assert "ntk/rel_change" not in b and b["ntk/eig_converged"] == 1.0
        for end in ("min", "max"):  # each bound covers the distance to dense eigvalsh
            tag = f"ntk/lambda_{end}"
            assert 0 < b[f"{tag}_err"] <= 1e-10 * b[tag] + b["ntk/roundoff_floor"]
            assert abs(b[tag] - a[tag]) <= b[f"{tag}_err"] + a["ntk/roundoff_floor"]


@pytest.mark.slow
def test_auto_chooses_by_the_memory_budget(tmp_path: Path) -> None:
    assert run(tmp_path, "tiny", "ntk=auto", "ntk.memory_budget_mb=0.01").returncode == 0
    assert run(tmp_path, "ample", "ntk=auto").returncode == 0
    assert records(tmp_path, "tiny")[1]["ntk_method"] == "ntvp"
    assert records(tmp_path, "ample")[1]["ntk_method"] == "structured"


@pytest.mark.slow
def test_unconverged_eigenvalues_are_logged_and_warned(tmp_path: Path) -> None:
    proc = run(tmp_path, "cap", "ntk=ntvp", "ntk.max_iter=2", "ntk.tol=1e-12")
    assert proc.returncode == 0, proc.stderr
    assert "did not reach ntk.tol" in proc.stderr
    metrics, _ = records(tmp_path, "cap")
    assert all(r["ntk/eig_converged"] == 0.0 for r in metrics)
    # max_iter caps the iterations; the starting block and the two exact products that
    # certify each answer come on top (davidson's docstring)
    assert all(0 < r["ntk/eig_iterations"] <= 2 * (2 + 10) for r in metrics)
    assert all(r["ntk/lambda_min_err"] > 0 and r["ntk/lambda_max_err"] > 0 for r in metrics)


def test_a_run_computes_the_initial_kernel_once(tmp_path, monkeypatch):
    """The theory step's λ_max(K_0) and the epoch-0 record share one K_0, and it is the same
    kernel a fresh computation gives."""
    import torch

    from ntklab import ntk
    from ntklab.data import make_synthetic
    from ntklab.experiment import run_experiment
    from ntklab.kernels import model_ntk
    from ntklab.models import OneHiddenLayer

    cfg = compose_config("data.n=12", "data.d=4", "model.width=16", "epochs=3", "dtype=float64")
    calls = []
    monkeypatch.setattr(ntk, "model_ntk", lambda m, X: calls.append(1) or model_ntk(m, X))
    summary = run_experiment(cfg, tmp_path, progress=False)
    assert summary["status"] == "completed"
    assert len(calls) == 4  # K_0 once (theory step and epoch 0), then epochs 1, 2, 3
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    model = OneHiddenLayer(4, 16, "leaky_relu", 0.1, seed=1, dtype=torch.float64)
    X, _ = make_synthetic("sphere", 12, 4, seed=0)
    assert first["ntk/lambda_max"] == float(torch.linalg.eigvalsh(model_ntk(model, X))[-1])
