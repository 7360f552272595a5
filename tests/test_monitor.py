"""NTKMonitor in a user's own loop: the CLI's tags and dashboard layout in TensorBoard, the kernel
on its `every` grid, k outputs with cross-entropy, a BatchNorm model in training mode, the
argument errors; and the examples/ script, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from ntklab.data import make_synthetic
from ntklab.models import MLP, OneHiddenLayer
from ntklab.monitor import NTKMonitor
from ntklab.ntk import empirical_ntk

ROOT = Path(__file__).resolve().parents[1]


def sequential(k: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, k)).double()


def train(model: nn.Module, monitor: NTKMonitor, X, y, epochs: int, loss) -> list[dict]:
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    out = [monitor.step(0)]
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        loss(model(X), y).backward()
        opt.step()
        out.append(monitor.step(epoch))
    return out


def test_the_cli_tags_in_tensorboard(tmp_path: Path) -> None:
    X, y = make_synthetic("sphere", 20, 4, seed=0)
    model = sequential()
    writer = SummaryWriter(str(tmp_path))
    monitor = NTKMonitor(model, X, y, every=2, writer=writer)
    records = train(model, monitor, X, y, 5, lambda f, t: (f.squeeze(-1) - t).pow(2).mean())
    kernel_steps = [r["step"] for r in monitor.history if "ntk/lambda_min" in r]
    assert kernel_steps == [0, 2, 4] and len(records) == 6
    last = records[4]
    for tag in ("loss/train", "weights/dist_from_init", "weights/max_neuron_dist", "pl/ratio",
                "pl/mu", "ntk/lambda_max", "ntk/kernel_distance", "ntk/alignment", "ntk/velocity",
                "ntk/rel_change", "loss/contraction"):  # fmt: skip
        assert tag in last, tag
    assert all(r["pl/ratio"] >= r["pl/mu"] * (1 - 1e-9) for r in records if "pl/mu" in r)
    K = empirical_ntk(model, X)  # the last step measured the model as it is now
    monitor.step(6, force=True)
    assert monitor.history[-1]["ntk/lambda_max"] == float(torch.linalg.eigvalsh(K)[-1])
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tb = {e.step: e.value for e in acc.Scalars("ntk/lambda_min")}
    assert sorted(tb) == [0, 2, 4, 6]
    assert tb[2] == pytest.approx(records[2]["ntk/lambda_min"], rel=1e-6)
    assert "custom_scalars__config__" in acc.Tags()["tensors"]  # the CLI's dashboard layout
    assert sorted(e.step for e in acc.Histograms("ntk/log10_spectrum")) == [0, 2, 4, 6]


def test_the_closed_forms_and_infinite_width(tmp_path: Path) -> None:
    """Our nets take the closed form and get λ_min(K∞) and the activation flips."""
    X, y = make_synthetic("sphere", 12, 4, seed=1)
    F64 = torch.float64
    for model in (MLP(4, 32, 2, "relu", dtype=F64), OneHiddenLayer(4, 32, seed=1, dtype=F64)):
        first = NTKMonitor(model, X, y, loss=None).step(0)
        assert {"ntk/lambda_min_inf", "ntk/dist_to_inf", "activations/pattern_change"} <= set(first)
        assert "loss/train" not in first and "pl/mu" not in first


def test_cross_entropy_logs_the_k_output_kernel() -> None:
    X, _ = make_synthetic("sphere", 15, 4, seed=2)
    labels = torch.arange(15) % 3
    model = MLP(4, 24, 2, seed=1, dtype=torch.float64, outputs=3)
    monitor = NTKMonitor(model, X, labels, loss="cross_entropy")
    records = train(model, monitor, X, labels, 3, nn.functional.cross_entropy)
    first = records[0]
    assert {"ntk/full_lambda_min", "ntk/full_lambda_max", "accuracy/train"} <= set(first)
    assert not any(tag.startswith("pl/") for r in records for tag in r)  # MSE-only
    assert first["ntk/lambda_min_inf"] > 0  # the trace kernel's limit: 3 K∞


def test_a_batchnorm_model_is_measured_in_eval_mode() -> None:
    X, y = make_synthetic("sphere", 16, 4, seed=3)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).double()
    monitor = NTKMonitor(model, X, y)
    assert "ntk/lambda_max" in monitor.step(0)
    assert model.training and model[1].training  # its own mode back


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every=0 must be a positive integer"),
        ({"loss": "hinge"}, "loss='hinge' is unknown"),
        ({"y": None}, "loss='mse' needs the targets y"),
        ({"y": torch.zeros(3)}, r"y has shape \(3,\); it must be \(n,\) = \(5,\)"),
        ({"y": torch.zeros(5, dtype=torch.long)}, "pass loss='cross_entropy'"),
        ({"method": "magic"}, "method='magic' is unknown; choose one of structured"),
        ({"method": "structured"}, "not of Sequential; use method='auto' or 'jacobian'"),
    ],
)
def test_errors_name_the_argument(kwargs, message) -> None:
    args = {"y": torch.zeros(5, dtype=torch.float64), **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        NTKMonitor(sequential(), torch.zeros(5, 4, dtype=torch.float64), **args)


@pytest.mark.slow
def test_the_example_script_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "examples/own_loop.py", "--logdir", str(tmp_path / "tb"),
         "--epochs", "12", "--width", "32", "--every", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["epoch", "loss"] and [ln.split()[0] for ln in lines[1:5]] == [
        "0",
        "4",
        "8",
        "12",
    ]
    assert "pl/ratio ≥ pl/mu at every tracked epoch: True" in done.stdout
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
