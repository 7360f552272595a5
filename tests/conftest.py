"""Shared helpers: run the real `ntklab` CLI in a subprocess, read a run folder back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


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


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def small_run_args() -> list[str]:
    """A run that takes about a second: the defaults, made small."""
    return ["data.n=24", "data.d=5", "model.width=32", "epochs=6"]
