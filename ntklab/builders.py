"""What a config asks a run to train: the data (synthetic, CSV, the digits, or the user's own
function), the model built on them (the one-hidden-layer nets, the deep MLP, or the user's own
module), the targets the loss takes, and how the kernel of k outputs is tracked."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ntklab.autodiff import check_module, output_count
from ntklab.config import Config, ConfigError
from ntklab.data import (
    INPUTS,
    DataError,
    class_labels,
    load_csv,
    load_custom,
    load_digits,
    sign_labels,
    synthetic_split,
)
from ntklab.models import MLP, OneHiddenLayer, PlainLinear
from ntklab.ntk import Method, dense_bytes
from ntklab.targets import check_call, locate

Builder = Callable[[Config, int, int, dict], nn.Module]


Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def load_data(cfg: Config, seed: int, test_seed: int | None = None) -> Data:
    """X (n, d), y (n,) in float64 on the CPU, from the `data` config group (`seed` draws the
    synthetic data and the digits' subset), and the held-out set X_test, y_test (None without
    one): `data.n_test` more synthetic points drawn with `test_seed`, or the CSV
    `data.test_path`."""
    dat = cfg.data
    if dat.name == "csv":
        X, y = _read_csv(dat.path, "data.path")
        if dat.test_path is None:
            return X, y, None, None
        X_test, y_test = _read_csv(dat.test_path, "data.test_path")
        if X_test.shape[1] != X.shape[1]:
            raise DataError(
                f"data.test_path={dat.test_path}: rows have {X_test.shape[1] + 1} columns and "
                f"those of data.path={dat.path} have {X.shape[1] + 1}; a held-out file needs "
                "the training file's columns (the features, then y)"
            )
        return X, y, X_test, y_test
    if dat.name == "digits":
        return (*load_digits(dat.n, seed=seed), None, None)
    if dat.name == "custom":
        return (*load_custom(dat._target_, dat.kwargs), None, None)
    return synthetic_split(
        dat.name,
        dat.n,
        dat.d,
        dat.n_test or 0,
        target=dat.target,
        teacher_width=dat.teacher_width,
        noise=dat.noise,
        seed=seed,
        test_seed=test_seed,
    )


def _read_csv(path: str, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return load_csv(path, key)
    except OSError as err:  # unreadable: permissions, a broken link, an I/O error
        raise DataError(f"{key}={path}: cannot be read ({err.strerror})") from None


def _one_hidden_layer(cfg: Config, d: int, outputs: int, to: dict) -> nn.Module:
    m = cfg.model
    return OneHiddenLayer(
        d,
        m.width,
        m.name,
        m.negative_slope,
        seed=to["seed"],
        dtype=to["dtype"],
        device=to["device"],
        train_output=m.train_output,
        alpha=m.alpha,
        center=m.center,
        parameterization=m.parameterization,
    )


def _mlp(cfg: Config, d: int, outputs: int, to: dict) -> nn.Module:
    m = cfg.model
    return MLP(
        d,
        m.width,
        m.depth,
        m.activation,
        m.negative_slope,
        seed=to["seed"],
        dtype=to["dtype"],
        outputs=outputs,
        device=to["device"],
    )


def _plain_linear(cfg: Config, d: int, outputs: int, to: dict) -> nn.Module:
    return PlainLinear(d, seed=to["seed"], dtype=to["dtype"], device=to["device"])


def _custom(cfg: Config, d: int, outputs: int, to: dict) -> nn.Module:
    """The user's class called with d= and the +model.KEY=VALUE arguments, its init drawn from
    the run's seed (torch's global generator is seeded inside a fork, and left as it was)."""
    target, key = cfg.model._target_, "model._target_"
    cls = locate(target, key, ConfigError)
    check_call(cls, target, key, ConfigError, d=d, **cfg.model.kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(to["seed"])
        model = cls(d=d, **cfg.model.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{key}={target!r}: made a {type(model).__name__}, not an nn.Module")
    return model.to(device=to["device"], dtype=to["dtype"])


MODELS: dict[str, Builder] = {
    "linear": _one_hidden_layer,
    "leaky_relu": _one_hidden_layer,
    "mlp": _mlp,
    "plain_linear": _plain_linear,
    "custom": _custom,
}


def build_model(
    cfg: Config, X: torch.Tensor, y: torch.Tensor, *, seed: int, device: torch.device
) -> nn.Module:
    """The model `cfg.model` names, for inputs X (n, d) and targets y: one output for the MSE,
    one per class for cross-entropy; ConfigError for a model=custom that does not fit them."""
    classes = int(y.max()) + 1 if cfg.loss == "cross_entropy" else 1
    to = {"seed": seed, "device": device, "dtype": X.dtype}
    model = MODELS[cfg.model.name](cfg, X.shape[1], classes, to)
    if cfg.model.name == "custom":
        _check_custom(model, cfg, X, classes)
    return model


def _check_custom(model: nn.Module, cfg: Config, X: torch.Tensor, classes: int) -> None:
    where = f"model._target_={cfg.model._target_!r}"
    try:
        check_module(model)
    except ValueError as err:
        why = str(err).split("; call")[0]
        raise ConfigError(
            f"{where}: {why}; ntklab trains in training mode, so remove that layer, or train "
            "in your own loop with ntklab.monitor.NTKMonitor (it measures in eval mode)"
        ) from None
    try:
        k = output_count(model, X)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"{where}: {err}") from None
    if cfg.loss in ("mse", "logistic") and k != 1:
        raise ConfigError(
            f"{where}: the model has k={k} outputs and loss={cfg.loss} fits one target per sample; "
            "return (n,) or (n, 1), or use loss=cross_entropy with class labels"
        )
    if cfg.loss == "cross_entropy" and k < classes:
        raise ConfigError(f"{where}: the model has k={k} outputs for {classes} classes")


def targets(
    cfg: Config, y: torch.Tensor, device: torch.device, dtype: torch.dtype, source: str = ""
):
    """y as the loss takes it: real targets in the run's dtype for the MSE, int64 class labels
    for cross-entropy, labels ±1 for the logistic loss (a synthetic target's sign: the teacher's
    labels, label noise flipping some); DataError naming `source` (by default the data
    option) when they are not."""
    source = source or f"data={cfg.data.name}"
    if cfg.loss == "cross_entropy":
        return class_labels(y, source).to(device)
    if cfg.loss == "logistic":
        synthetic = cfg.data.name in INPUTS
        y = sign_labels(y, source, synthetic)
        return y.to(device=device, dtype=dtype)
    return y.to(device=device, dtype=dtype)


def kernel_output(cfg: Config, method: Method, model: nn.Module, X: torch.Tensor) -> str | None:
    """How a run tracks the kernel of its outputs: None for one output; "full" for
    cross-entropy, which needs the dense (n, n, k, k) kernel within the memory budget."""
    if cfg.loss != "cross_entropy":
        return None
    n, k, budget = X.shape[0], output_count(model, X), cfg.ntk.memory_budget_mb
    needed = dense_bytes(n * k, 0, torch.float64, Method.STRUCTURED) / 2**20
    if method.matrix_free or needed > budget:
        raise ConfigError(
            f"ntk.memory_budget_mb={budget:g}: loss=cross_entropy tracks the dense kernel of "
            f"n·k = {n}·{k} outputs and its eigenvalues, about {needed:.2g} MiB; raise "
            "ntk.memory_budget_mb or lower data.n"
        )
    return "full"
