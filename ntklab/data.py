"""Data sets: points on the sphere or Gaussian, a label rule, validated CSV files, the
handwritten digits, a user's own function, and the class labels cross-entropy needs."""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ntklab.targets import check_call, locate


class DataError(ValueError):
    """A data set that cannot be used; the message names the field and the fix."""


def sphere_points(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """n points uniform on the unit sphere S^{d-1}, one per row: (n, d), float64."""
    X = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return X / X.norm(dim=1, keepdim=True)


def gaussian_points(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """n points x ~ N(0, I_d / d) (so E‖x‖² = 1, the sphere's scale): (n, d), float64."""
    return torch.randn(n, d, generator=generator, dtype=torch.float64) / math.sqrt(d)


INPUTS: dict[str, Callable[[int, int, torch.Generator], torch.Tensor]] = {
    "sphere": sphere_points,
    "gaussian": gaussian_points,
}


def _teacher(X: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
    # A random ReLU net of its own width: a non-linear target the student can fit
    # only by moving its features, unlike a linear one.
    n, d = X.shape
    U = torch.randn(width, d, generator=generator, dtype=torch.float64) * math.sqrt(d)
    a = torch.randint(0, 2, (width,), generator=generator, dtype=torch.float64) * 2 - 1
    return torch.relu(X @ U.T) @ a / math.sqrt(width)


def _linear(X: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
    beta = torch.randn(X.shape[1], generator=generator, dtype=torch.float64)
    return X @ beta


def _random(X: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
    # Labels independent of the inputs: pure memorisation.
    return torch.randn(X.shape[0], generator=generator, dtype=torch.float64)


TARGETS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "teacher": _teacher,
    "linear": _linear,
    "random": _random,
}


def make_synthetic(
    kind: str,
    n: int,
    d: int,
    *,
    target: str = "teacher",
    teacher_width: int = 8,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d) and y (n,), float64; y is centred and scaled to unit variance, then
    label noise N(0, noise²) is added."""
    if kind not in INPUTS:
        raise DataError(f"data={kind!r} is unknown; choose one of {sorted(INPUTS)} or csv")
    if target not in TARGETS:
        raise DataError(f"data.target={target!r} is unknown; choose one of {sorted(TARGETS)}")
    g = torch.Generator().manual_seed(int(seed))
    X = INPUTS[kind](n, d, g)
    y = TARGETS[target](X, teacher_width, g)
    y = y - y.mean()
    scale = y.std() if n > 1 else y.abs().max()
    if scale > 0:
        y = y / scale
    if noise > 0:
        y = y + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def _parse_row(row: list[str], lineno: int, path: Path) -> list[float]:
    values = []
    for col, cell in enumerate(row, start=1):
        try:
            value = float(cell)
        except ValueError:
            raise DataError(
                f"data.path={path}: line {lineno}, column {col} holds {cell.strip()!r}, "
                "not a number (every cell after an optional header must be numeric)"
            ) from None
        if not math.isfinite(value):
            raise DataError(
                f"data.path={path}: line {lineno}, column {col} holds {cell.strip()!r}; "
                "NaN and infinite values are not allowed (clean or drop that row)"
            )
        values.append(value)
    return values


def _is_header(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return True
    return False


def load_csv(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a CSV of numbers (optional header row; last column is y): X (n, d), y (n,), float64."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data.path={path}: no such file (give the path of a CSV file)")
    if path.is_dir():
        raise DataError(f"data.path={path}: is a directory, not a CSV file")
    if not path.is_file():  # a FIFO, socket or device would block or never end
        raise DataError(f"data.path={path}: is not a regular file; give the path of a CSV file")
    try:
        # utf-8-sig: a byte-order mark (as some spreadsheets write) is not part of the first cell
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [
                (i, r) for i, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)
            ]
    except UnicodeDecodeError:
        raise DataError(f"data.path={path}: is not a UTF-8 text CSV file") from None
    if not rows:
        raise DataError(f"data.path={path}: the file is empty (need rows of features then y)")
    if _is_header(rows[0][1]):
        rows = rows[1:]
        if not rows:
            raise DataError(f"data.path={path}: holds a header row but no data rows")
    width = len(rows[0][1])
    if width < 2:
        other = next((sep for sep in ";\t|" if sep in rows[0][1][0]), None)
        hint = f" (values seem separated by {other!r}: save the file with commas)" if other else ""
        raise DataError(
            f"data.path={path}: rows have a single column{hint}; need at least one feature "
            "column and the target y as the last column, separated by commas"
        )
    data = []
    for lineno, row in rows:
        if len(row) != width:
            raise DataError(
                f"data.path={path}: line {lineno} has {len(row)} columns, expected {width} "
                "(every row needs the same number of comma-separated values)"
            )
        data.append(_parse_row(row, lineno, path))
    table = torch.tensor(data, dtype=torch.float64)
    return table[:, :-1].contiguous(), table[:, -1].contiguous()


def fingerprint(X: torch.Tensor, y: torch.Tensor, path: str | os.PathLike | None = None) -> dict:
    """What identifies a data set: n, d and the SHA-256 of X and y (float64, row-major) and, for
    a file, of its bytes. A resumed run must see the same one."""
    found: dict = {"n": int(X.shape[0]), "d": int(X.shape[1])}
    for name, t in (("X", X), ("y", y)):
        data = t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
        found[f"sha256_{name}"] = hashlib.sha256(data).hexdigest()
    if path is not None:
        found["sha256_file"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


DIGITS = 1797  # scikit-learn's handwritten digits: 1797 images of 8 × 8 pixels, 10 classes


def load_digits(n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The handwritten digits scikit-learn ships inside its package (no download): X (n, 64)
    with the mean image subtracted and each image scaled to unit norm (points on the sphere,
    as the theory's inputs), y (n,) the digit 0…9 as float64; `n` a random subset drawn with
    `seed` (None: all 1797 in their order)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError(
            "data=digits needs scikit-learn, which ships the data set: "
            "pip install 'ntklab[digits]' (or scikit-learn)"
        ) from None
    images, labels = sklearn_digits(return_X_y=True)
    X = torch.as_tensor(images, dtype=torch.float64)
    X = X - X.mean(dim=0)
    X = X / X.norm(dim=1, keepdim=True)
    y = torch.as_tensor(labels, dtype=torch.float64)
    if n is not None:
        keep = torch.randperm(len(X), generator=torch.Generator().manual_seed(int(seed)))[:n]
        X, y = X[keep], y[keep]
    return X.contiguous(), y.contiguous()


def load_custom(target: str, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) from the user's function `target` ("pkg.module.func") called with `kwargs`:
    X (n, d), y (n,) (or (n, 1)), finite, as float64."""
    key = "data._target_"
    fn = locate(target, key, DataError)
    check_call(fn, target, key, DataError, **kwargs)
    out = fn(**kwargs)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise DataError(f"{key}={target!r}: returned a {type(out).__name__}, not a pair (X, y)")
    try:
        X, y = (torch.as_tensor(t).detach().cpu().to(torch.float64) for t in out)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{key}={target!r}: X and y must be numeric arrays ({err})") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(X) == 0:
        raise DataError(
            f"{key}={target!r}: returned X {tuple(X.shape)} and y {tuple(y.shape)}; "
            "need X (n, d) and y (n,) with n ≥ 1"
        )
    if not (torch.isfinite(X).all() and torch.isfinite(y).all()):
        raise DataError(f"{key}={target!r}: X or y holds NaN or infinite values")
    return X.contiguous(), y.contiguous()


def class_labels(y: torch.Tensor, source: str) -> torch.Tensor:
    """y (n,) as int64 class labels 0 … k − 1 for cross-entropy; DataError when the targets are
    not whole numbers ≥ 0 (`source` names where they came from)."""
    whole = bool((y == y.round()).all()) and bool((y >= 0).all())
    if not whole:
        bad = y[(y != y.round()) | (y < 0)][0]
        raise DataError(
            f"loss='cross_entropy': {source} gives targets that are not class labels 0, 1, …, "
            f"k−1 (e.g. {float(bad):g}); use loss=mse, or data with integer labels"
        )
    return y.to(torch.int64)
