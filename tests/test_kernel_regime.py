"""The kernel regime: the linearised model's predicted losses against a direct float64
recursion and against a linearised model trained with its explicit Jacobian, the linear net
(its own linearisation) against its prediction, and the linearisation gap against f_lin from
an explicit Jacobian."""

from __future__ import annotations

import pytest
import torch

from ntklab.autodiff import linear_part
from ntklab.data import make_synthetic
from ntklab.diagnostics import RateDiagnostics
from ntklab.kernel_regime import (
    HeldOutLoss,
    KernelFlow,
    KernelPrediction,
    LinearizationGap,
    linearization_gap,
    predicted_losses,
)
from ntklab.losses import mse
from ntklab.models import OneHiddenLayer
from ntklab.ntk import empirical_ntk
from ntklab.optim import ConstantLR, InverseStepLR, InverseTimeLR
from ntklab.train import Callback, TrainState, fit

from reference import F64, explicit_jacobian, explicit_ntk


def direct_recursion(K, r0, lrs, momentum=0.0, alpha=1.0):
    """r ← r − η B with B ← μ B + (2/(n α²)) K r: heavy-ball GD in function space, float64."""
    n = K.shape[0]
    r, B = r0.clone(), torch.zeros_like(r0)
    losses = [float(r @ r) / (n * alpha**2)]
    for lr in lrs:
        B = momentum * B + 2 / (n * alpha**2) * (K @ r)
        r = r - lr * B
        losses.append(float(r @ r) / (n * alpha**2))
    return losses


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_the_closed_form_is_the_recursion(momentum, alpha):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(20, 7, generator=g, dtype=F64)
    K = alpha**2 * (A @ A.T + 0.05 * torch.eye(20, dtype=F64))
    r0 = torch.randn(20, generator=g, dtype=F64)
    eta = 20 * alpha**2 / (2 * float(torch.linalg.eigvalsh(K)[-1]))  # the theory step
    lrs = [eta / (1 + t / 10) for t in range(60)]  # a varying step, as a schedule gives
    ours = predicted_losses(K, r0, lrs, momentum, alpha)
    ref = direct_recursion(K, r0, lrs, momentum, alpha)
    assert ours == pytest.approx(ref, rel=1e-10, abs=1e-300)


def test_directions_below_round_off_do_not_move():
    """A rank-deficient K: its null space is held fixed, not amplified by a λ of either sign."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(10, 3, generator=g, dtype=F64)
    K = A @ A.T  # rank 3: seven eigenvalues at round-off
    r0 = torch.randn(10, generator=g, dtype=F64)
    flow = KernelFlow(K, r0)
    assert int(flow.resolved.sum()) == 3
    for _ in range(500):
        flow.step(5 / float(torch.linalg.eigvalsh(K)[-1]))
    _, Q = torch.linalg.eigh(K)
    null = Q[:, :7].T @ r0
    assert flow.loss() == pytest.approx(float(null @ null) / 10, rel=1e-9)


def _state(width=30, eps=0.2, n=14, n_test=9, epochs=25, **kw):
    X, y = make_synthetic("sphere", n + n_test, 4, seed=3)
    activation = "linear" if eps == 1.0 else "leaky_relu"
    options = kw.pop("model", {})
    model = OneHiddenLayer(4, width, activation, eps, seed=4, dtype=F64, **options)
    state = TrainState.create(model, X[:n], y[:n], epochs=epochs, seed=5, **kw)
    return state, X[n:], y[n:]


def _run(state, X_test, y_test, K0=None):
    K0 = empirical_ntk(state.model, state.X) if K0 is None else K0
    prediction = KernelPrediction(K0, X_test, y_test)
    records = []

    class Keep(Callback):
        def on_epoch_end(self, s):
            records.append(dict(s.metrics))

    held_out = HeldOutLoss(X_test, y_test, mse)
    cbs = [RateDiagnostics(True), held_out, prediction, LinearizationGap(1)]
    fit(state, [*cbs, Keep()])
    return records


def test_the_prediction_is_the_linearised_model_trained_with_its_explicit_jacobian():
    """GD with momentum and a decaying step on θ ↦ f(θ_0) + J_0 (θ − θ_0), J_0 the explicit
    Jacobian, gives the logged train and held-out predictions at every epoch."""
    lr, momentum = 0.8, 0.5
    state, X_test, y_test = _state(lr=lr, momentum=momentum, schedule=InverseTimeLR(lr, 8.0))
    model, X, y, n = state.model, state.X, state.y, state.n
    J, J_test = explicit_jacobian(model, X), explicit_jacobian(model, X_test)  # (n, p)
    with torch.no_grad():
        f0, f0_test = model(X), model(X_test)
    records = _run(state, X_test, y_test)
    theta, buffer = torch.zeros(J.shape[1], dtype=F64), None
    for t, record in enumerate(records):
        r, r_test = f0 + J @ theta - y, f0_test + J_test @ theta - y_test
        assert record["loss/kernel_prediction"] == pytest.approx(float(r @ r) / n, rel=1e-9)
        expected = float(r_test @ r_test) / len(y_test)
        assert record["loss/test_kernel_prediction"] == pytest.approx(expected, rel=1e-9)
        grad = 2 / n * J.T @ r
        buffer = grad if buffer is None else momentum * buffer + grad
        theta = theta - lr / (1 + t / 8.0) * buffer


@pytest.mark.parametrize("schedule", [InverseTimeLR, InverseStepLR])
def test_on_the_linear_net_the_prediction_is_the_loss(schedule):
    """The linear net is linear in W: its own linearisation, so the prediction equals the loss
    (train and held-out) to round-off, with momentum and a schedule too, one that moves by
    epoch or one that moves with every update (the prediction takes the step each epoch's
    update used, which the record states as optim/lr)."""
    sched = schedule(0.4, 5.0)
    state, X_test, y_test = _state(eps=1.0, lr=0.4, momentum=0.7, schedule=sched, epochs=40)
    records = _run(state, X_test, y_test)
    assert [r["optim/lr"] for r in records[1:4]] == [0.4, 0.4 / 1.2, 0.4 / 1.4]
    for record in records:
        assert record["loss/kernel_prediction"] == pytest.approx(record["loss/train"], rel=1e-11)
        test = record["loss/test_kernel_prediction"]
        assert test == pytest.approx(record["loss/test"], rel=1e-11)
        assert record["loss/kernel_inf_prediction"] == pytest.approx(record["loss/train"])
    # the gap is round-off: flagged, not logged
    assert all(r["ntk/linearization_gap_resolved"] == 0 for r in records[1:])
    assert not any("ntk/linearization_gap" in r for r in records)


OPTIONS = [
    {},
    {"train_output": True},
    {"train_output": True, "parameterization": "standard"},
    {"alpha": 3.0, "center": True},
    {"alpha": 0.5, "train_output": True, "center": True},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("eps", [0.2, 0.0, 1.0])
def test_the_gap_is_f_lin_from_the_explicit_jacobian(options, eps):
    """The closed-form linear part of the one-hidden-layer net and the generic jvp both give
    f_lin = f(θ_0) + J_0 (θ − θ_0) with J_0 the explicit Jacobian, whatever the options."""
    alpha = options.get("alpha", 1.0)
    lr = (0.05 if options.get("parameterization") == "standard" else 1.0) / max(alpha, 1.0) ** 2
    state, X_test, y_test = _state(lr=lr, epochs=10, eps=eps, model=options)
    model, X = state.model, state.X
    params0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    J0 = explicit_jacobian(model, X)
    with torch.no_grad():
        f0 = model(X)
    fit(state, [])
    delta = torch.cat([(p.detach() - params0[k]).reshape(-1) for k, p in model.named_parameters()])
    with torch.no_grad():
        f = model(X)
    f_lin = f0 + J0 @ delta
    f0_closed, change_of = model.linearization(X, params0)
    for g0, change in ((f0_closed, change_of()), linear_part(model, X, params0)):
        assert torch.allclose(g0.reshape(-1), f0, rtol=1e-13, atol=1e-13)
        assert torch.allclose(change.reshape(-1), J0 @ delta, rtol=1e-11, atol=1e-13)
    gap, moved, err = linearization_gap(model, X, params0)
    assert moved == pytest.approx(float((f - f0).norm()), rel=1e-12)
    if eps == 1.0:  # linear net: f is linear in W (and bilinear in W, v)
        if not options.get("train_output"):
            assert gap <= 1e3 * err
        return
    assert gap == pytest.approx(float((f - f_lin).norm()), rel=1e-9)
    assert 0 < err < 1e-3 * gap


def test_a_wider_net_stays_closer_to_its_prediction():
    """Not a property of the code but a sanity check of the tags' plumbing: at width 4096 the
    network follows the prediction and its linearisation more closely than at width 16."""
    out = {}
    for width in (16, 4096):
        state, X_test, y_test = _state(width=width, lr=1.0, epochs=30)
        records = _run(state, X_test, y_test)
        dev = max(abs(r["loss/train"] / r["loss/kernel_prediction"] - 1) for r in records)
        out[width] = (dev, records[-1]["ntk/linearization_gap"])
    assert out[4096][0] < out[16][0] and out[4096][1] < out[16][1]


def test_the_infinite_width_prediction_uses_k_inf():
    from ntklab.kernels import infinite_width_ntk

    state, X_test, y_test = _state(lr=1.0, epochs=8)
    with torch.no_grad():
        r0 = state.model(state.X) - state.y
    K_inf = infinite_width_ntk(state.X, 0.2)
    expected = direct_recursion(K_inf, r0, [1.0] * 8)
    records = _run(state, X_test, y_test)
    got = [r["loss/kernel_inf_prediction"] for r in records]
    assert got == pytest.approx(expected, rel=1e-10)


def test_a_prediction_below_its_round_off_floor_is_flagged():
    """The linear net on 3 points in R⁴ fits them exactly: its loss falls to round-off, and the
    prediction, which would fall on below it, is flagged there and not logged."""
    state, X_test, y_test = _state(eps=1.0, lr=1.0, epochs=3000, n=3)
    lr = 3 / (2 * float(torch.linalg.eigvalsh(state.X @ state.X.T)[-1]))  # the theory step
    state.lr, state.schedule = lr, ConstantLR(lr)
    records = _run(state, X_test, y_test)
    assert records[0]["loss/kernel_prediction_resolved"] == 1
    last = records[-1]
    assert last["loss/kernel_prediction_resolved"] == 0
    assert "loss/kernel_prediction" not in last
    assert last["loss/train"] < 1e3 * last["loss/roundoff_floor"]


def test_the_cross_kernel_is_the_explicit_one():
    state, X_test, _ = _state(lr=1.0)
    K = empirical_ntk(state.model, X_test, state.X)
    assert torch.allclose(K, explicit_ntk(state.model, X_test, state.X), rtol=1e-12)


def test_the_prediction_reuses_the_infinite_width_kernel(monkeypatch):
    """K∞ is formed once per run: the prediction takes the InfiniteWidth callback's."""
    from ntklab import kernel_regime
    from ntklab.diagnostics import InfiniteWidth

    state, X_test, y_test = _state(epochs=3, lr=1.0)
    infinite = InfiniteWidth()
    prediction = KernelPrediction(empirical_ntk(state.model, state.X), infinite=infinite)

    def refuse(*args):
        raise AssertionError("K∞ computed a second time")

    monkeypatch.setattr(kernel_regime, "infinite_width_kernel", refuse)
    seen = []

    class Keep(Callback):
        def on_epoch_end(self, s):
            seen.append(s.metrics.get("loss/kernel_inf_prediction"))

    fit(state, [RateDiagnostics(True), infinite, prediction, Keep()])
    assert infinite.K_inf is not None and len(seen) == 4 and all(x is not None for x in seen)


def test_a_run_of_no_epochs_predicts_nothing(monkeypatch):
    """epochs=0: no step to predict, so no eigendecomposition and no prediction tags."""
    from ntklab import kernel_regime

    def refuse(*args, **kwargs):
        raise AssertionError("an eigendecomposition for a run with no steps")

    monkeypatch.setattr(kernel_regime, "KernelFlow", refuse)
    state, X_test, y_test = _state(epochs=0, lr=1.0)
    records = _run(state, X_test, y_test)
    assert len(records) == 1 and not any("kernel" in tag for tag in records[0])
