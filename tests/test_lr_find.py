"""ntklab-lr-find on a quadratic whose stability limit is known exactly: GD on the linear net
diverges iff lr > n / λ_max(X Xᵀ)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module

from ntklab.config import register_configs
from ntklab.data import make_synthetic
from ntklab.lr_find import find_lr, format_report, geometric_grid

register_configs()


def test_geometric_grid() -> None:
    assert geometric_grid(1e-3, 1e1, 1) == pytest.approx([1e-3, 1e-2, 1e-1, 1, 10])
    grid = geometric_grid(0.1, 10, 2)
    assert grid == pytest.approx([0.1, 0.1 * 10**0.5, 1, 10**0.5, 10])


def _compose(*overrides: str):
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        return compose(config_name="lr_find", overrides=list(overrides))


@pytest.mark.slow
def test_lr_find_separates_stable_from_divergent_steps_at_the_exact_limit() -> None:
    n, d = 16, 24
    cfg = _compose(
        "model=linear",
        f"data.n={n}",
        f"data.d={d}",
        "data.target=random",
        "model.width=8",
        "dtype=float64",
        "device=cpu",
        "lr_find.lr_min=0.01",
        "lr_find.lr_max=1000",
        "lr_find.per_decade=4",
        "lr_find.epochs=50",
    )
    X, _ = make_synthetic("sphere", n, d, target="random", seed=0)
    limit = n / float(torch.linalg.eigvalsh(X @ X.T)[-1])  # K = X Xᵀ for the linear net
    found = find_lr(cfg)
    assert found["lr_limit_theory"] == pytest.approx(limit, rel=1e-9)
    checked = 0
    for t in found["trials"]:
        if abs(math.log(t["lr"] / limit)) > math.log(1.15):  # away from the knife's edge
            assert t["stable"] == (t["lr"] < limit), t
            checked += 1
    assert checked >= len(found["trials"]) - 1
    assert found["lr_stable"] < limit < found["lr_stable"] * 10**0.25 * 1.15
    assert found["ratio"] == pytest.approx(found["lr_stable"] / limit)
    report = format_report(found)
    assert "largest stable step" in report and "theory limit" in report


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_json(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ntklab.lr_find",
            f"hydra.run.dir={tmp_path}",
            "model=linear",
            "data.n=16",
            "data.d=24",
            "lr_find.lr_min=0.1",
            "lr_find.lr_max=1000",
            "lr_find.epochs=10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "largest stable step" in proc.stdout
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert [t["lr"] for t in found["trials"]] == pytest.approx([0.1, 1, 10, 100, 1000])
    assert found["lr_stable"] < found["lr_limit_theory"]


@pytest.mark.parametrize(
    "override,key",
    [("lr_find.lr_min=0", "lr_find.lr_min"), ("lr_find.lr_max=1e-6", "lr_find.lr_max")],
)
def test_cli_names_a_bad_grid(tmp_path, override: str, key: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ntklab.lr_find", f"hydra.run.dir={tmp_path}", override],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert key in proc.stderr and "Traceback" not in proc.stderr
