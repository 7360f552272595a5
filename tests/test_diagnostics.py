"""Each diagnostic of diagnostics.py against an independent computation on a small case."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ntklab import ntk
from ntklab.data import make_synthetic
from ntklab.diagnostics import (
    InfiniteWidth,
    KernelGeometry,
    LinearOptimum,
    RateDiagnostics,
    alignment,
    kernel_distance,
)
from ntklab.kernels import infinite_width_ntk
from ntklab.measurements import KernelStep, NTKTracker, PatternChange
from ntklab.models import OneHiddenLayer
from ntklab.ntk import Method
from ntklab.optim import full_batch, reshuffled
from ntklab.train import Callback, TrainState, fit

from conftest import run_cli


def test_kernel_distance_and_alignment_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = A @ A.T
    B = A + 0.1 * torch.eye(5, dtype=torch.float64)
    cos = float((A * B).sum() / (A.norm() * B.norm()))
    assert kernel_distance(A, B) == pytest.approx(1 - cos, rel=1e-10)
    assert kernel_distance(A, 3 * A) == pytest.approx(0.0, abs=1e-15)
    y = torch.randn(5, generator=g, dtype=torch.float64)
    direct = sum(y[i] * A[i, j] * y[j] for i in range(5) for j in range(5))
    assert alignment(A, y) == pytest.approx(float(direct / (A.norm() * (y * y).sum())))


class Recorder(Callback):
    """Keeps every epoch's metrics and W_t (the independent side of the checks)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.W: list[torch.Tensor] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.rows.append({"step": state.epoch, **state.metrics})
        self.W.append(state.model.W.detach().clone())


@pytest.fixture
def train(make_state):
    """A float64 run of n = 12, d = 5, m = 40, ε = 0.2 at lr = 0.5 with the tracker, every
    diagnostic and a Recorder; returns X, y, the model and the Recorder."""

    def run(*, sgd: bool = False, every: int = 1, epochs: int = 8, theory_step: bool = True):
        batches = (lambda n, g: reshuffled(n, 4, g)) if sgd else full_batch
        state = make_state(d=5, width=40, eps=0.2, lr=0.5, epochs=epochs, batches=batches)
        rec = Recorder()
        callbacks = [
            NTKTracker(Method.STRUCTURED, every),
            KernelStep(Method.STRUCTURED, every),
            RateDiagnostics(full_batch_gd=not sgd, theory_step=theory_step),
            KernelGeometry(),
            PatternChange(),
            InfiniteWidth(),
            rec,
        ]
        fit(state, callbacks)
        return state.X, state.y, state.model, rec

    return run


def _kernel(X, W, eps=0.2):
    # the slow reference: explicit per-sample Jacobian rows σ'(w_k·x_i) v_k x_i
    m = W.shape[0]
    v = OneHiddenLayer(5, m, "leaky_relu", eps, seed=1, dtype=torch.float64).v
    Z = X @ W.T
    one = torch.ones((), dtype=torch.float64)
    S = torch.where(Z >= 0, one, one * eps)
    J = (S * v)[:, :, None] * X[:, None, :]  # (n, m, d)
    J = J.reshape(X.shape[0], -1)
    return J @ J.T


def test_rate_and_kernel_diagnostics_against_recomputation(train) -> None:
    X, y, model, rec = train()
    n = X.shape[0]
    K = [_kernel(X, W) for W in rec.W]
    K_inf = infinite_width_ntk(X, 0.2)
    for t, row in enumerate(rec.rows):
        cos0 = float((K[t] * K[0]).sum() / (K[t].norm() * K[0].norm()))
        assert row["ntk/kernel_distance"] == pytest.approx(1 - cos0, abs=1e-12)
        al = float(y @ K[t] @ y / (K[t].norm() * (y @ y)))
        assert row["ntk/alignment"] == pytest.approx(al, rel=1e-10)
        dist = float((K[t] - K_inf).norm() / K_inf.norm())
        assert row["ntk/dist_to_inf"] == pytest.approx(dist, rel=1e-10)
        assert row["ntk/lambda_min_inf"] == pytest.approx(float(torch.linalg.eigvalsh(K_inf)[0]))
        flips = (X @ rec.W[t].T >= 0) != (X @ rec.W[0].T >= 0)
        assert row["activations/pattern_change"] == flips.double().mean().item()
        if t == 0:
            assert "loss/contraction" not in row and "ntk/velocity" not in row
            continue
        prev = rec.rows[t - 1]
        assert row["loss/contraction"] == pytest.approx(row["loss/train"] / prev["loss/train"])
        velocity = float((K[t] - K[t - 1]).norm() / K[0].norm())  # one epoch apart
        assert row["ntk/velocity"] == pytest.approx(velocity, rel=1e-10, abs=1e-15)
        assert row["loss/contraction_resolved"] == 1.0 and row["loss/contraction_err"] < 1e-10
        lam = torch.linalg.eigvalsh(K[t - 1])
        lo, hi = float(lam[0]), float(lam[-1])
        beta, mu, eta = 2 * hi / n, 4 * lo / n, row["optim/lr"]
        assert row["pl/rate_bound"] == pytest.approx(1 - mu * eta * (1 - beta * eta / 2))
        assert row["pl/rate_slide"] == pytest.approx(1 - 2 * lo / hi)
        assert row["pl/loss_bound"] == pytest.approx(row["pl/rate_bound"] * prev["loss/train"])
        assert row["loss/contraction"] <= row["pl/rate_bound"]


def test_velocity_divides_by_the_epochs_between_tracked_kernels(train) -> None:
    X, _, _, rec = train(every=3, epochs=7)
    tracked = [r["step"] for r in rec.rows if "ntk/kernel_distance" in r]
    assert tracked == [0, 3, 6, 7]
    K0 = _kernel(X, rec.W[0])
    for b in tracked[1:]:  # over the epoch before each tracked one, whatever ntk.every is
        step = (_kernel(X, rec.W[b]) - _kernel(X, rec.W[b - 1])).norm()
        velocity = float(step / K0.norm())
        assert rec.rows[b]["ntk/velocity"] == pytest.approx(velocity, rel=1e-9, abs=1e-15)
    # the bound needs K_{t−1}: only after tracked epochs
    assert [r["step"] for r in rec.rows if "pl/rate_bound" in r] == [1, 4, 7]


def test_velocity_does_not_depend_on_how_often_the_kernel_is_tracked(train) -> None:
    """The velocity at epoch 12 is the same tracked every epoch or every 4 (the old
    (1 − cos)/Δt differed by about Δt, and a displacement over Δt epochs by √Δt: a leaky-ReLU
    kernel moves by activation flips of either sign, a random walk)."""
    every_epoch = {r["step"]: r for r in train(every=1, epochs=12)[3].rows}
    every_four = {r["step"]: r for r in train(every=4, epochs=12)[3].rows}
    fine, coarse = every_epoch[12]["ntk/velocity"], every_four[12]["ntk/velocity"]
    assert fine > 0 and coarse == pytest.approx(fine, rel=1e-12)


def test_the_notes_constant_is_logged_at_the_theory_step_only(train) -> None:
    rows = train(theory_step=False)[3].rows
    assert any("pl/rate_bound" in r for r in rows)
    assert not any("pl/rate_slide" in r for r in rows)


def test_sgd_logs_contraction_but_no_gd_bound(train) -> None:
    _, _, _, rec = train(sgd=True, epochs=3)
    assert all("loss/contraction" in r for r in rec.rows[1:])
    assert not any("pl/rate_bound" in r or "pl/rate_slide" in r for r in rec.rows)


def test_diagnostics_reuse_the_trackers_kernel(train, monkeypatch) -> None:
    calls = []
    real = ntk.model_ntk
    monkeypatch.setattr(ntk, "model_ntk", lambda m, X: calls.append(1) or real(m, X))
    train(epochs=5)
    assert len(calls) == 6  # the tracker's, epochs 0…5; no diagnostic computes its own


def test_resumed_diagnostics_continue_where_they_left(tmp_path) -> None:
    rate, step = RateDiagnostics(True), KernelStep(Method.STRUCTURED, 3)
    rate.prev = {"epoch": 4, "loss": 2.0, "lambda_min": 1.0, "lambda_max": 3.0}
    step.snapshot, step.snapshot_epoch = [torch.eye(3)], 4
    rate2, step2 = RateDiagnostics(True), KernelStep(Method.STRUCTURED, 3)
    rate2.load_state_dict(rate.state_dict())
    step2.load_state_dict(step.state_dict())
    assert rate2.prev == rate.prev and step2.snapshot_epoch == 4
    assert torch.equal(step2.snapshot[0], torch.eye(3))


@pytest.mark.slow
def test_cli_writes_spectrum_histogram_and_custom_scalars(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = run_cli(f"hydra.run.dir={tmp_path}", "epochs=4", "ntk.every=2")
    assert proc.returncode == 0, proc.stderr
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    hist = events.Histograms("ntk/log10_spectrum")
    assert [h.step for h in hist] == [0, 2, 4]
    assert all(h.histogram_value.num == 128 for h in hist)
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").open())}
    for h in hist:  # log10 of the eigenvalues: its top is log10 λ_max
        top = math.log10(rows[h.step]["ntk/lambda_max"])
        assert h.histogram_value.max == pytest.approx(top, abs=1e-6)
    assert "custom_scalars__config__" in events.Tags()["tensors"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    tags = set().union(*rows)
    for tag in ("loss/contraction", "pl/rate_bound", "pl/rate_slide", "ntk/kernel_distance"):
        assert tag in tags
    assert all(math.isfinite(r["ntk/dist_to_inf"]) for r in rows if "ntk/dist_to_inf" in r)


@pytest.mark.parametrize(("n", "d", "resolved"), [(20, 4, 1.0), (8, 12, 0.0)])
def test_linear_optimum_is_the_least_squares_loss_and_says_when_it_is_round_off(
    n: int, d: int, resolved: float
) -> None:
    """L* of the linear net (any width: its outputs are the linear functions) against an
    explicit normal-equations solve; with d ≥ n the data are fitted exactly and L* is flagged."""
    X, y = make_synthetic("sphere", n, d, seed=3)
    model = OneHiddenLayer(d, 3, "linear", seed=4, dtype=torch.float64)
    state = TrainState.create(model, X, y, epochs=2, lr=0.1, seed=5)
    rec = Recorder()
    fit(state, [LinearOptimum(), rec])
    if d < n:
        beta = torch.linalg.solve(X.T @ X, X.T @ y)
        expected = float(((X @ beta - y) ** 2).mean())
        assert rec.rows[0]["loss/optimum"] == pytest.approx(expected, rel=1e-10)
        assert expected > 0.01
    else:
        assert rec.rows[0]["loss/optimum"] < 1e-25
    for row in rec.rows:
        assert row["loss/optimum_resolved"] == resolved
        assert row["loss/excess"] == row["loss/train"] - row["loss/optimum"]
        assert row["loss/excess"] >= 0


def test_linear_optimum_is_logged_for_the_linear_net_only(make_state) -> None:
    state = make_state(epochs=1)  # leaky ReLU
    rec = Recorder()
    fit(state, [LinearOptimum(), rec])
    assert "loss/optimum" not in rec.rows[0]


def test_the_log10_spectrum_lifts_round_off_to_its_floor() -> None:
    from ntklab.control import log10_spectrum

    lam = torch.tensor([-1e-18, 0.0, 1e-3, 10.0], dtype=torch.float64)
    out = log10_spectrum(lam)
    floor = math.log10(4 * torch.finfo(torch.float64).eps * 10.0)
    assert out.tolist() == pytest.approx([floor, floor, -3.0, 1.0])
