"""The nonconvex SGD bound's pieces (docs/theory.md): the per-example gradients 4 r_i² K_ii
against autograd, the descent-lemma bound at both step rules against its closed forms, and the
callback's tags against direct computations on a run."""

from __future__ import annotations

import math

import pytest
import torch

from ntklab.config import ConfigError, load
from ntklab.experiment import run_experiment
from ntklab.losses import mse
from ntklab.models import OneHiddenLayer
from ntklab.ntk import empirical_ntk
from ntklab.theory import (
    mean_example_grad_sq,
    sgd_descent_bound,
    sgd_grad_bound,
    sgd_nonconvex_lr,
    smoothness,
)

from conftest import compose_config, read_metrics

F64 = torch.float64


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_per_example_gradients_are_4_r2_Kii(alpha):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(9, 5, generator=g, dtype=F64)
    y = torch.randn(9, generator=g, dtype=F64)
    model = OneHiddenLayer(5, 30, "leaky_relu", 0.1, seed=1, dtype=F64, alpha=alpha)
    direct = []
    for i in range(9):
        loss = mse(model, X[i : i + 1], y[i : i + 1])  # ℓ_i = r_i² / α²
        (grad,) = torch.autograd.grad(loss, [model.W])
        direct.append(float(grad.pow(2).sum()))
    with torch.no_grad():
        r = model(X) - y
    K = empirical_ntk(model, X)
    assert mean_example_grad_sq(r, torch.diagonal(K), alpha) == pytest.approx(
        sum(direct) / 9, rel=1e-12
    )


def test_the_bound_at_both_step_rules():
    R, beta, L2, T = 0.7, 3.0, 5.0, 400
    root = math.sqrt(R * beta * L2 / T)
    assert sgd_grad_bound(R, beta, L2, T) == pytest.approx(2 * root)
    corrected = sgd_nonconvex_lr(R, beta, L2, T, "nonconvex")
    slide = sgd_nonconvex_lr(R, beta, L2, T, "nonconvex_slide")
    assert corrected == pytest.approx(math.sqrt(R / (beta * L2 * T)))
    assert slide == pytest.approx(R / (beta * L2 * T))
    # the descent lemma, R/(γT) + βγL²/2: 1.5 √(RβL²/T) at the corrected step, under the bound
    at_corrected = sgd_descent_bound(R, beta, L2, T * corrected, T * corrected**2)
    assert at_corrected == pytest.approx(1.5 * root)
    assert at_corrected <= sgd_grad_bound(R, beta, L2, T)
    # ... and βL² + R/(2T) at the notes' step: it does not shrink with T
    at_slide = sgd_descent_bound(R, beta, L2, T * slide, T * slide**2)
    assert at_slide == pytest.approx(beta * L2 + R / (2 * T))
    assert at_slide > sgd_grad_bound(R, beta, L2, T)


def _run(tmp_path, *overrides):
    cfg = load(
        compose_config(
            "optim=sgd",
            "optim.batch_size=1",
            "optim.sampling=replacement",
            "data.n=12",
            "data.d=4",
            "model.width=16",
            "dtype=float64",
            *overrides,
        )
    )
    run_experiment(cfg, tmp_path / "run", progress=False)
    return cfg, read_metrics(tmp_path / "run")


def test_the_tags_against_direct_computations(tmp_path):
    cfg, records = _run(tmp_path, "optim.lr=nonconvex", "epochs=6", "ntk.every=2")
    R, n = records[0]["loss/train"], 12
    betas = [smoothness(r["ntk/lambda_max"], n) for r in records if "ntk/lambda_max" in r]
    for t, rec in enumerate(records):
        assert rec["pl/sgd_beta"] == pytest.approx(max(betas[: t // 2 + 1]), rel=1e-12)
        grad_sq = [r["pl/ratio"] * r["loss/train"] for r in records[: t + 1]]
        assert rec["pl/sgd_min_grad_sq"] == pytest.approx(min(grad_sq), rel=1e-9)
    last = records[-1]
    T = last["optim/steps"]
    assert T == 6 * 12  # a pass of 12 one-example steps per epoch
    expected = 2 * math.sqrt(R * last["pl/sgd_beta"] * last["pl/sgd_grad_sq"] / T)
    assert last["pl/sgd_grad_bound"] == pytest.approx(expected, rel=1e-12)
    lr = last["optim/lr"]
    descent = R / (lr * T) + last["pl/sgd_beta"] * lr * last["pl/sgd_grad_sq"] / 2
    assert last["pl/sgd_descent_bound"] == pytest.approx(descent, rel=1e-12)
    # the step: √(R/(β_0 L_0² T)) from W_0, at T = epochs × steps per epoch
    L2_0, beta_0 = records[0]["pl/sgd_grad_sq"], records[0]["pl/sgd_beta"]
    assert lr == pytest.approx(math.sqrt(R / (beta_0 * L2_0 * T)), rel=1e-12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim=gd", "optim.lr=nonconvex"], "optim.lr='nonconvex': is a step rule of SGD"),
        (["optim=sgd", "optim.lr=nonconvex_slide", "loss=logistic"], "use loss=mse"),
        (["optim=sgd", "optim.lr=nonconvex", "ntk=ntvp"], "optim.lr=nonconvex needs K_0"),
        (["optim=sgd", "optim.lr=nonconvex", "optim.schedule=plateau"], "optim.schedule="),
    ],
)
def test_the_step_rules_are_refused_where_they_do_not_apply(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(compose_config(*overrides))


def test_a_run_at_a_nonconvex_step_cannot_be_extended(tmp_path):
    """Its step was computed for its own T: a longer run would keep the wrong one."""
    _run(tmp_path, "optim.lr=nonconvex", "epochs=2", "ntk.every=1")
    cfg = load(compose_config(
        "optim=sgd", "optim.batch_size=1", "optim.sampling=replacement", "data.n=12",
        "data.d=4", "model.width=16", "dtype=float64", "optim.lr=nonconvex", "epochs=4",
        "ntk.every=1", "resume=true",
    ))  # fmt: skip
    with pytest.raises(ConfigError, match="epochs=4: optim.lr=nonconvex is a step for T"):
        run_experiment(cfg, tmp_path / "run", progress=False)
