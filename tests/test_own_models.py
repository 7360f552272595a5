"""Deep MLPs, the user's own module and data, and cross-entropy in the lab: through the real CLI
on real files, and in-process (the digits, an exact resume from `state_dict` checkpoints)."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest
import torch

from ntklab import experiment
from ntklab.config import load
from ntklab.experiment import run_experiment
from ntklab.models import MLP
from ntklab.train import Callback

from conftest import compose_config, read_metrics, read_summary, run_cli

MODULE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d, hidden=8, classes=1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def forward(self, X):
        return self.body(X)


def blobs(size=30, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(size) % classes
    X = torch.randn(size, 4, generator=g) + 2.0 * nn.functional.one_hot(y, 4)
    return X, y
"""


def test_mlp_through_the_cli(tmp_path: Path) -> None:
    args = ["model=mlp", "model.depth=2", "model.width=16", "model.activation=leaky_relu"]
    done = run_cli(*args, "data.n=12", "data.d=3", "epochs=3", "hydra.run.dir=out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary, records = read_summary(tmp_path / "out"), read_metrics(tmp_path / "out")
    assert summary["status"] == "completed" and summary["ntk_method"] == "structured"
    assert summary["hparams"]["depth"] == 2 and summary["hparams"]["activation"] == "leaky_relu"
    for tag in ("ntk/lambda_min", "ntk/lambda_min_inf", "pl/mu", "activations/pattern_change"):
        assert tag in records[-1], tag
    assert all(r["pl/ratio"] >= r["pl/mu"] * (1 - 1e-6) for r in records)
    last = torch.load(tmp_path / "out/checkpoints/last.pt", weights_only=True)
    mlp = MLP(3, 16, 2, "leaky_relu", seed=1)
    mlp.load_state_dict(last["state_dict"])  # the checkpoint holds the model's state_dict
    init = torch.load(tmp_path / "out/checkpoints/init.pt", weights_only=True)["state_dict"]
    assert torch.equal(init["hidden.0"], MLP(3, 16, 2, "leaky_relu", seed=1).hidden[0].detach())


def test_own_module_and_data_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(MODULE)
    done = run_cli(
        "model=custom", "model._target_=mine.Net", "+model.hidden=12", "+model.classes=3",
        "data=custom", "data._target_=mine.blobs", "+data.size=24", "loss=cross_entropy",
        "epochs=4", "hydra.run.dir=out", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary, records = read_summary(tmp_path / "out"), read_metrics(tmp_path / "out")
    assert summary["ntk_method"] == "jacobian" and summary["hparams"]["n"] == 24
    first = records[0]
    for tag in ("ntk/full_lambda_min", "ntk/full_lambda_max", "accuracy/train", "ntk/alignment"):
        assert tag in first, tag
    assert not any(tag.startswith("pl/") for r in records for tag in r)  # the MSE's only
    assert "ntk/lambda_min_inf" not in first  # no closed form for a module of one's own
    assert records[-1]["loss/train"] < records[0]["loss/train"]
    state = torch.load(tmp_path / "out/checkpoints/last.pt", weights_only=True)["state_dict"]
    assert state["body.0.weight"].shape == (12, 4) and state["body.2.weight"].shape == (3, 12)


@pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="needs scikit-learn (pip install 'ntklab[digits]'), which ships the digits",
)
def test_digits_with_cross_entropy(tmp_path: Path) -> None:
    cfg = compose_config(
        "data=digits", "data.n=40", "model=mlp", "model.width=24", "model.depth=1",
        "loss=cross_entropy", "epochs=3", "dtype=float64",
    )  # fmt: skip
    summary = run_experiment(cfg, tmp_path, progress=False)
    records = read_metrics(tmp_path)
    assert summary["status"] == "completed" and summary["hparams"]["d"] == 64
    lr, full_max = summary["hparams"]["lr_theory"], records[0]["ntk/full_lambda_max"]
    assert lr == pytest.approx(2 * 40 / full_max, rel=1e-12)  # 1/β, β = λ_max(K_full)/(2n)
    # the trace over 10 outputs, against its limit 10 K∞; its spectrum holds the full one's
    assert records[0]["ntk/lambda_min_inf"] > 0
    assert records[0]["ntk/lambda_max"] >= records[0]["ntk/full_lambda_max"]
    assert records[-1]["accuracy/train"] >= records[0]["accuracy/train"]


class StopAt(Callback):
    """Sends SIGTERM to this process at one epoch: the run stops there, as if interrupted."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch:
            signal.raise_signal(signal.SIGTERM)


def test_an_mlp_run_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    run = ["model=mlp", "model.depth=2", "model.width=12", "data.n=10", "data.d=3", "epochs=8"]
    run += ["optim=sgd", "optim.batch_size=4", "optim.momentum=0.9", "optim.lr=0.2"]
    run += ["ntk.every=3", "checkpoint_every=2", "dtype=float64"]
    whole = run_experiment(load(compose_config(*run)), tmp_path / "whole", progress=False)
    make = experiment.make_callbacks

    def stopping(*args, **kwargs):
        callbacks, *rest = make(*args, **kwargs)
        return [StopAt(5), *callbacks], *rest

    monkeypatch.setattr(experiment, "make_callbacks", stopping)
    first = run_experiment(load(compose_config(*run)), tmp_path / "cut", progress=False)
    assert first["status"] == "interrupted" and first["epochs_run"] == 5
    monkeypatch.setattr(experiment, "make_callbacks", make)
    resumed = run_experiment(load(compose_config(*run, "resume=true")), tmp_path / "cut")
    assert resumed["status"] == "completed" and whole["status"] == "completed"
    cut, ref = (tmp_path / name / "metrics.jsonl" for name in ("cut", "whole"))
    assert cut.read_bytes() == ref.read_bytes()
