"""Shared fixtures: the real `ntklab` CLI in a subprocess, configs composed in-process, a small
training state, and readers of a run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from ntklab.config import register_configs
from ntklab.data import make_synthetic
from ntklab.models import OneHiddenLayer
from ntklab.rundir import RunFolder
from ntklab.train import TrainState

torch.set_num_threads(min(2, torch.get_num_threads()))
register_configs()


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, module: str = "ntklab"
) -> subprocess.CompletedProcess:
    """`python -m ntklab ARGS` in `cwd`, as a user would type it; output captured.
    One torch thread per run: test runs share the machine, and idle threads spin."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose_config(*overrides: str, name: str = "config") -> DictConfig:
    """The config `ntklab ARGS` would run, composed in-process by Hydra's compose API."""
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def read_metrics(run_dir: Path) -> list[dict]:
    return RunFolder(run_dir).records()


def read_summary(run_dir: Path) -> dict:
    return RunFolder(run_dir).read_summary()


@pytest.fixture
def small_run_args() -> list[str]:
    """A run that takes about a second: the defaults, made small."""
    return ["data.n=24", "data.d=5", "model.width=32", "epochs=6"]


@pytest.fixture
def make_state() -> Callable[..., TrainState]:
    """A small float64 training state: n = 12 points of the sphere in R⁴, a leaky-ReLU net
    (ε = 0.1) of width 20, constant step `lr`; keywords go to TrainState.create."""

    def make(*, n: int = 12, d: int = 4, width: int = 20, eps: float = 0.1, seed: int = 0, **kw):
        X, y = make_synthetic("sphere", n, d, seed=seed)
        model = OneHiddenLayer(d, width, "leaky_relu", eps, seed=seed + 1, dtype=torch.float64)
        kw.setdefault("epochs", 5)
        kw.setdefault("lr", 0.3)
        return TrainState.create(model, X, y, seed=seed + 2, **kw)

    return make
