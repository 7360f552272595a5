"""The lecture notes' regularised logistic regression: the plain linear model, the logistic
loss with its L2 term against autograd and the closed forms, its smoothness constant, L* by
Newton's method, and a run of it from the command line's config."""

from __future__ import annotations

import pytest
import torch

from ntklab.config import load
from ntklab.data import DataError, sign_labels
from ntklab.diagnostics import logistic_optimum
from ntklab.experiment import run_experiment
from ntklab.losses import logistic, with_weight_decay
from ntklab.models import PlainLinear
from ntklab.ntk import empirical_ntk
from ntklab.theory import logistic_smoothness
from ntklab.train import loss_and_grads

from conftest import compose_config, read_metrics

F64 = torch.float64


def problem(n: int = 40, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.where(torch.randn(n, generator=g, dtype=F64) >= 0, 1.0, -1.0).to(F64)
    return X, y


def closed_form_gradient(w, X, y, lam):
    """∇L = −(1/n) Σ y_i σ(−y_i⟨w, x_i⟩) x_i + λ w."""
    s = torch.sigmoid(-y * (X @ w))
    return -(X.T @ (y * s)) / len(y) + lam * w


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_gradient_matches_the_closed_form_and_autograd(lam):
    X, y = problem()
    model = PlainLinear(X.shape[1], seed=3, dtype=F64)
    loss_fn = with_weight_decay(logistic, lam)
    loss, (grad,) = loss_and_grads(model, X, y, loss_fn)
    w = model.w.detach()
    z = -y * (X @ w)
    expected = torch.log1p(torch.exp(z)).mean() + 0.5 * lam * (w @ w)
    assert torch.allclose(loss, expected, rtol=1e-14, atol=0)
    assert torch.allclose(grad, closed_form_gradient(w, X, y, lam), rtol=1e-12, atol=1e-15)


def test_large_margins_are_exact():
    X = torch.tensor([[1.0], [1.0]], dtype=F64)
    y = torch.tensor([1.0, -1.0], dtype=F64)
    model = PlainLinear(1, dtype=F64)
    with torch.no_grad():
        model.w.fill_(800.0)  # e^{800} overflows float64; log(1 + e^z) must not
    loss = logistic(model, X, y)
    assert torch.isfinite(loss) and abs(float(loss.detach()) - 400.0) < 1e-9


def test_smoothness_constant_is_the_formula_and_bounds_the_hessian():
    X, y = problem(n=30, d=4)
    lam = 0.05
    beta = logistic_smoothness(X, lam)
    assert beta == pytest.approx(sum(float(x @ x) for x in X) / (4 * len(X)) + lam, rel=1e-14)
    for seed in range(3):
        w0 = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=F64)

        def f(w):
            z = -y * (X @ w)
            return torch.logaddexp(torch.zeros_like(z), z).mean() + 0.5 * lam * (w @ w)

        H = torch.autograd.functional.hessian(f, w0)
        s = torch.sigmoid(X @ w0) * (1 - torch.sigmoid(X @ w0))
        closed = (X.T * s) @ X / len(X) + lam * torch.eye(4, dtype=F64)
        assert torch.allclose(H, closed, rtol=1e-12, atol=1e-15)
        assert float(torch.linalg.eigvalsh(H)[-1]) <= beta


def test_newton_finds_the_minimiser():
    X, y = problem()
    lam = 0.1
    w, L_star, grad_norm = logistic_optimum(X, y, lam)
    assert grad_norm <= 1e-13
    assert torch.allclose(closed_form_gradient(w, X, y, lam), torch.zeros_like(w), atol=1e-13)
    model = PlainLinear(X.shape[1], dtype=F64)
    loss_fn = with_weight_decay(logistic, lam)
    for seed in range(5):  # any other point is higher
        delta = 1e-3 * torch.randn(len(w), generator=torch.Generator().manual_seed(seed), dtype=F64)
        with torch.no_grad():
            model.w.copy_(w + delta)
        assert float(loss_fn(model, X, y).detach()) > L_star
    with pytest.raises(ValueError, match="needs λ > 0"):
        logistic_optimum(X, y, 0.0)


def test_kernel_is_X_Xt():
    X, _ = problem(n=7, d=3)
    model = PlainLinear(3, seed=1, dtype=F64)
    for method in ("structured", "jacobian"):
        assert torch.allclose(empirical_ntk(model, X, method=method), X @ X.T, atol=1e-13)


def test_labels():
    y = torch.tensor([0.3, -2.0, 0.0], dtype=F64)
    assert sign_labels(y, "data=sphere", from_sign=True).tolist() == [1.0, -1.0, 1.0]
    with pytest.raises(DataError, match="not labels −1 or \\+1 .e.g. 0.3"):
        sign_labels(y, "the CSV", from_sign=False)


def test_a_run_logs_the_optimum_and_descends_to_it(tmp_path):
    cfg = load(
        compose_config(
            "model=plain_linear",
            "loss=logistic",
            "optim.weight_decay=0.1",
            "data.target=linear",
            "data.noise=0.5",
            "dtype=float64",
            "epochs=60",
        )
    )
    run_experiment(cfg, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    L_star = records[0]["loss/optimum"]
    assert all(r["loss/optimum"] == L_star for r in records)
    assert records[0]["optim/lr"] == pytest.approx(1 / (1 / 4 + 0.1))  # sphere: ‖x‖ = 1
    excess = [r["loss/excess"] for r in records]
    assert excess[0] > 1e-2 and 0 <= excess[-1] < 1e-9
    # GD at 1/β descends (to round-off: L* ≈ 0.6, eps · L* ≈ 1e-16)
    assert all(b <= a + 1e-15 for a, b in zip(excess, excess[1:], strict=False))


def test_a_csv_of_labels_plus_minus_one_trains(tmp_path):
    rows = ["x1,x2,y"] + [f"{i / 10:g},{1 - i / 10:g},{1 if i % 3 else -1}" for i in range(10)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    cfg = load(compose_config(
        "model=plain_linear", "loss=logistic", "optim.weight_decay=0.5", "data=csv",
        f"data.path={tmp_path / 'data.csv'}", "data.n=null", "data.d=null", "epochs=20",
        "dtype=float64",
    ))  # fmt: skip
    run_experiment(cfg, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    assert records[-1]["loss/excess"] < records[0]["loss/excess"]
    assert records[-1]["loss/excess"] >= -1e-15


def test_without_weight_decay_no_least_squares_optimum_is_logged(tmp_path):
    """The least-squares L* is the MSE's; a logistic run without an L2 term has no L* logged."""
    cfg = load(compose_config("model=linear", "loss=logistic", "epochs=3", "data.n=24"))
    run_experiment(cfg, tmp_path / "run", progress=False)
    assert not any("loss/optimum" in r for r in read_metrics(tmp_path / "run"))


def test_held_out_loss_is_the_data_loss_without_the_l2_term(tmp_path):
    """loss/test is the logistic loss on the held-out set alone: the L2 term is a penalty on w,
    not a loss on data."""
    from ntklab.problem import make_problem

    cfg = load(compose_config(
        "model=plain_linear", "loss=logistic", "optim.weight_decay=0.5", "data.n=24",
        "data.n_test=16", "dtype=float64", "epochs=0",
    ))  # fmt: skip
    problem = make_problem(cfg)
    with torch.no_grad():
        data_loss = float(logistic(problem.model, problem.X_test, problem.y_test))
        penalised = float(
            with_weight_decay(logistic, 0.5)(problem.model, problem.X_test, problem.y_test)
        )
    assert penalised > data_loss * (1 + 1e-3)
    run_experiment(cfg, tmp_path / "run", progress=False)
    assert read_metrics(tmp_path / "run")[0]["loss/test"] == pytest.approx(data_loss, rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "beta"),
    [
        # MSE with an L2 term: 1/(2 λ_max(K_0)/n + λ)
        (["optim.weight_decay=0.5"], lambda lmax, n, X: 2 * lmax / n + 0.5),
        # the logistic loss on the leaky-ReLU net: λ_max(K_0)/(4n) + λ (not Σ‖x‖²/(4n))
        (["loss=logistic", "optim.weight_decay=0.5"], lambda lmax, n, X: lmax / (4 * n) + 0.5),
    ],
)
def test_the_theory_step_adds_the_l2_term_to_the_loss_own_smoothness(overrides, beta):
    from ntklab.problem import make_problem

    cfg = load(compose_config("data.n=24", "data.d=5", "model.width=32", *overrides))
    problem = make_problem(cfg)
    n = problem.X.shape[0]
    expected = 1 / beta(problem.initial.lambda_max, n, problem.X)
    assert problem.lr_theory == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("loss", "test_labels", "message"),
    [
        ("logistic", [1, -1, 2], "data.test_path gives targets that are not labels −1 or \\+1"),
        ("cross_entropy", [0, 1, 2], "data.test_path: the held-out set has class 2"),
    ],
)
def test_held_out_labels_are_checked_naming_their_file(tmp_path, loss, test_labels, message):
    train = [1, -1] * 5 if loss == "logistic" else [0, 1] * 5
    rows = ["x1,x2,y"] + [f"{i / 10:g},{1 - i / 10:g},{c}" for i, c in enumerate(train)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    rows = ["x1,x2,y"] + [f"{i / 7:g},{i / 5:g},{c}" for i, c in enumerate(test_labels)]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    model = ["model=plain_linear"] if loss == "logistic" else ["model=mlp", "model.depth=1"]
    cfg = load(compose_config(
        *model, f"loss={loss}", "data=csv", f"data.path={tmp_path / 'train.csv'}",
        f"data.test_path={tmp_path / 'test.csv'}", "data.n=null", "data.d=null", "epochs=1",
    ))  # fmt: skip
    with pytest.raises(DataError, match=message):
        run_experiment(cfg, tmp_path / "run", progress=False)
