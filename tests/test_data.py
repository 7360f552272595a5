"""Synthetic data sets and CSV loading."""

import math
import os
import re

import pytest
import torch

from ntklab.data import DataError, fingerprint, load_csv, make_synthetic


@pytest.mark.parametrize("kind", ["sphere", "gaussian"])
@pytest.mark.parametrize("target", ["teacher", "linear", "random"])
def test_synthetic_shapes_and_scale(kind, target):
    X, y = make_synthetic(kind, 50, 6, target=target, seed=1)
    assert X.shape == (50, 6) and y.shape == (50,) and X.dtype == torch.float64
    assert float(y.mean()) == pytest.approx(0, abs=1e-12)
    assert float(y.std()) == pytest.approx(1, rel=1e-12)
    if kind == "sphere":
        assert torch.allclose(X.norm(dim=1), torch.ones(50, dtype=torch.float64))
    X2, y2 = make_synthetic(kind, 50, 6, target=target, seed=1)
    assert torch.equal(X, X2) and torch.equal(y, y2)


def test_teacher_target_is_not_linear():
    X, y = make_synthetic("sphere", 200, 5, target="teacher", seed=0)
    A = torch.cat([X, torch.ones(200, 1, dtype=X.dtype)], dim=1)
    residual = y - A @ torch.linalg.lstsq(A, y).solution
    assert float(residual.norm() / y.norm()) > 0.1  # a linear fit leaves a real residual


def test_label_noise_is_added():
    _, clean = make_synthetic("sphere", 100, 4, seed=2)
    _, noisy = make_synthetic("sphere", 100, 4, noise=0.5, seed=2)
    assert 0.3 < float((noisy - clean).std()) < 0.7


def test_csv_with_and_without_header(tmp_path):
    body = "1,2,3\n4,5,6.5\n-1e-3,0,7\n"
    (tmp_path / "a.csv").write_text("x1,x2,y\n" + body)
    (tmp_path / "b.csv").write_text(body)
    for name in ("a.csv", "b.csv"):
        X, y = load_csv(tmp_path / name)
        assert X.tolist() == [[1, 2], [4, 5], [-1e-3, 0]]
        assert y.tolist() == [3, 6.5, 7]


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2,3\n4,5\n", "line 2 has 2 columns, expected 3"),
        ("1,2,3\n4,abc,6\n", "line 2, column 2 holds 'abc'"),
        ("1,2,3\n4,nan,6\n", "NaN and infinite values are not allowed"),
        ("1,2,inf\n", "NaN and infinite values are not allowed"),
        ("", "the file is empty"),
        ("a,b,y\n", "holds a header row but no data rows"),
        ("1\n2\n", "single column"),
    ],
)
def test_bad_csv_names_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_csv(path)
    assert "data.path=" in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path)


def test_a_byte_order_mark_is_not_part_of_the_first_cell(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("1,2,3\n4,5,6\n".encode("utf-8-sig"))
    X, y = load_csv(path)
    assert X.tolist() == [[1, 2], [4, 5]] and y.tolist() == [3, 6]  # no row lost as a header


def test_a_fifo_is_refused_instead_of_waited_on(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is not a regular file"):
        load_csv(fifo)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_another_separator_gets_a_hint(tmp_path, sep):
    path = tmp_path / "semi.csv"
    path.write_text(f"1{sep}2{sep}3\n4{sep}5{sep}6\n")
    hint = f"values seem separated by {sep!r}: save the file with commas"
    with pytest.raises(DataError, match=re.escape(hint)):
        load_csv(path)


def test_the_fingerprint_tells_data_apart(tmp_path):
    X, y = make_synthetic("sphere", 10, 3, seed=0)
    a, b = fingerprint(X, y), fingerprint(X, y.flip(0))
    assert a["sha256_X"] == b["sha256_X"] and a["sha256_y"] != b["sha256_y"]
    assert a["sha256_X"] != fingerprint(X.float(), y)["sha256_X"]  # float32-rounded: other data
    path = tmp_path / "d.csv"
    path.write_text("1,2\n")
    assert len(fingerprint(X, y, path)["sha256_file"]) == 64


def test_digits_without_scikit_learn_says_how_to_get_it(monkeypatch):
    """scikit-learn is an optional extra: without it data=digits is refused with the fix."""
    import sys

    from ntklab.data import load_digits

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now fails
    with pytest.raises(DataError, match=r"data=digits needs scikit-learn.*ntklab\[digits\]"):
        load_digits(10)


def test_digits_subset_on_the_sphere():
    pytest.importorskip("sklearn", reason="scikit-learn (pip install 'ntklab[digits]') ships them")
    from ntklab.data import DIGITS, load_digits

    X, y = load_digits()
    assert X.shape == (DIGITS, 64) and set(y.tolist()) == set(range(10))
    assert torch.allclose(X.norm(dim=1), torch.ones(DIGITS, dtype=torch.float64))
    Xs, ys = load_digits(100, seed=3)
    assert Xs.shape == (100, 64) and torch.equal(Xs, load_digits(100, seed=3)[0])
    assert not torch.equal(Xs, load_digits(100, seed=4)[0])


def test_the_seed_draws_data_and_init_as_docs_reliability_says() -> None:
    """docs/reliability.md, "Reproducible from the folder": data from a CPU generator seeded
    1000·seed (inputs, target, then noise), the net's W then its signs from 1000·seed + 1."""
    from ntklab.config import load
    from ntklab.problem import make_problem

    from conftest import compose_config

    cfg = load(
        compose_config(
            "seed=3",
            "data.n=10",
            "data.d=4",
            "model.width=6",
            "data.noise=0.1",
            "dtype=float64",
            "device=cpu",
        )
    )
    problem = make_problem(cfg)
    g = torch.Generator().manual_seed(3000)
    X = torch.randn(10, 4, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=1, keepdim=True)
    U = torch.randn(cfg.data.teacher_width, 4, generator=g, dtype=torch.float64) * 2.0
    a = torch.randint(0, 2, (cfg.data.teacher_width,), generator=g, dtype=torch.float64) * 2 - 1
    y = torch.relu(X @ U.T) @ a / math.sqrt(cfg.data.teacher_width)
    y = (y - y.mean()) / y.std()
    y = y + 0.1 * torch.randn(10, generator=g, dtype=torch.float64)
    assert torch.equal(problem.X, X) and torch.equal(problem.y, y)
    g = torch.Generator().manual_seed(3001)
    W = torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert torch.equal(problem.model.W.detach(), W)
