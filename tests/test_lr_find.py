"""ntklab-lr-find on a quadratic whose stability limit is known exactly: GD on the linear net
diverges iff lr > n / λ_max(X Xᵀ)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from ntklab.config import ConfigError, LRFindConfig, load
from ntklab.data import make_synthetic
from ntklab.lr_find import find_lr, format_report, geometric_grid

from conftest import compose_config, run_cli


def test_geometric_grid() -> None:
    assert geometric_grid(1e-3, 1e1, 1) == pytest.approx([1e-3, 1e-2, 1e-1, 1, 10])
    grid = geometric_grid(0.1, 10, 2)
    assert grid == pytest.approx([0.1, 0.1 * 10**0.5, 1, 10**0.5, 10])


def _compose(*overrides: str) -> LRFindConfig:
    return load(compose_config(*overrides, name="lr_find"), LRFindConfig)


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
    proc = run_cli(
        f"hydra.run.dir={tmp_path}",
        "model=linear",
        "data.n=16",
        "data.d=24",
        "lr_find.lr_min=0.1",
        "lr_find.lr_max=1000",
        "lr_find.epochs=10",
        module="ntklab.lr_find",
    )
    assert proc.returncode == 0, proc.stderr
    assert "largest stable step" in proc.stdout
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert [t["lr"] for t in found["trials"]] == pytest.approx([0.1, 1, 10, 100, 1000])
    assert found["lr_stable"] < found["lr_limit_theory"]


def test_ntklab_itself_refuses_the_lr_find_keys() -> None:
    """The grid belongs to ntklab-lr-find's own schema: `ntklab` has no such keys."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Could not override 'lr_find.lr_min'"):
        compose_config("lr_find.lr_min=0.1")
    assert _compose("lr_find.lr_min=0.1").lr_find.lr_min == 0.1


@pytest.mark.parametrize(
    "override,message",
    [
        ("lr_find.lr_min=0", "lr_find.lr_min=0.0: must be a positive number"),
        ("lr_find.lr_max=1e-6", "lr_find.lr_max=1e-06: must be a number above lr_find.lr_min"),
    ],
)
def test_a_bad_grid_is_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _compose(override)


@pytest.mark.slow
def test_cli_refuses_a_bad_grid_in_one_line(tmp_path) -> None:
    proc = run_cli(f"hydra.run.dir={tmp_path}", "lr_find.lr_min=0", module="ntklab.lr_find")
    assert proc.returncode == 2
    assert proc.stderr == "ntklab-lr-find: error: lr_find.lr_min=0.0: must be a positive number\n"
