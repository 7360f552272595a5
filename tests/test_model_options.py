"""Model options beyond the lecture notes: trained output layer, output scale α, centering and
the parameterization; their forward pass, loss and gradients, their defaults against the plain
formulas bit for bit (their kernels are checked with every other in test_ntk.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ntklab.data import sphere_points
from ntklab.models import OneHiddenLayer
from ntklab.train import loss_and_grads, mse, trainable

from conftest import run_cli


def _data(n: int = 7, d: int = 4):
    g = torch.Generator().manual_seed(5)
    return sphere_points(n, d, g), torch.randn(n, generator=g, dtype=torch.float64)


def test_defaults_are_the_plain_model_bit_for_bit() -> None:
    X, y = _data()
    X32, y32 = X.float(), y.float()
    model = OneHiddenLayer(4, 33, "leaky_relu", 0.2, seed=1)
    Z = X32 @ model.W.T
    h = torch.where(Z >= 0, Z, 0.2 * Z) @ model.v
    assert torch.equal(model(X32), h)
    assert torch.equal(mse(model, X32, y32), (h - y32).pow(2).mean())
    assert [p is model.W for p in trainable(model)] == [True]
    assert not model.v.requires_grad


def test_parameterization_and_scale_leave_a_fixed_output_layer_alone() -> None:
    X, y = _data()
    base = OneHiddenLayer(4, 16, seed=2, dtype=torch.float64)
    std = OneHiddenLayer(4, 16, seed=2, dtype=torch.float64, parameterization="standard")
    assert torch.equal(base(X), std(X))
    assert torch.equal(loss_and_grads(base, X, y)[1][0], loss_and_grads(std, X, y)[1][0])


def test_trained_output_layer_in_each_parameterization() -> None:
    X, y = _data()
    m = 25
    ntk = OneHiddenLayer(4, m, seed=4, dtype=torch.float64, train_output=True)
    std = OneHiddenLayer(
        4, m, seed=4, dtype=torch.float64, train_output=True, parameterization="standard"
    )
    assert torch.allclose(ntk(X), std(X), atol=1e-15)  # the same function at init
    assert torch.allclose(ntk.v, std.v) and set(ntk.a.unique().tolist()) == {-1.0, 1.0}
    g_ntk, g_std = loss_and_grads(ntk, X, y)[1], loss_and_grads(std, X, y)[1]
    assert torch.allclose(g_ntk[0], g_std[0])  # W-gradients agree
    # ∂L/∂a = ∂L/∂v · ∂v/∂a = ∂L/∂v / √m
    assert torch.allclose(g_ntk[1], g_std[1] / math.sqrt(m))


def test_output_scale_divides_the_loss_and_centering_zeroes_the_start() -> None:
    X, y = _data()
    plain = OneHiddenLayer(4, 8, seed=6, dtype=torch.float64)
    scaled = OneHiddenLayer(4, 8, seed=6, dtype=torch.float64, alpha=4.0)
    assert torch.allclose(scaled(X), 4.0 * plain(X))
    assert torch.allclose(mse(scaled, X, y), (4.0 * plain(X) - y).pow(2).mean() / 16.0)
    centered = OneHiddenLayer(4, 8, seed=6, dtype=torch.float64, alpha=4.0, center=True)
    assert torch.equal(centered(X), torch.zeros(7, dtype=torch.float64))


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="parameterization"):
        OneHiddenLayer(3, 4, parameterization="mup")
    with pytest.raises(ValueError, match="alpha"):
        OneHiddenLayer(3, 4, alpha=0.0)


@pytest.mark.slow
def test_cli_trains_the_output_layer_with_a_scaled_output(tmp_path) -> None:
    proc = run_cli(
        f"hydra.run.dir={tmp_path}",
        "model.train_output=true",
        "model.alpha=2",
        "model.width=64",
        "dtype=float64",
        "epochs=5",
    )
    assert proc.returncode == 0, proc.stderr
    init = torch.load(tmp_path / "checkpoints/init.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert not torch.equal(init["v"], last["v"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # the PL inequality with α: ‖∇L‖²/L ≥ 4 λ_min(K) / (n α²), K the kernel of f = α h
    for r in rows:
        assert r["pl/ratio"] >= r["pl/mu"] * (1 - 1e-9)
        assert r["pl/mu"] == pytest.approx(4 * r["ntk/lambda_min"] / (128 * 4))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["hparams"]["train_output"] is True and summary["status"] == "completed"
    assert rows[-1]["loss/train"] < rows[0]["loss/train"]
