"""What a config asks a run to train: the data (synthetic, CSV, the digits, or the user's own
function), the model built on them (the one-hidden-layer nets, the deep MLP, or the user's own
module), the targets the loss takes, and how the kernel of k outputs is tracked."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ntklab.autodiff import check_module, output_count
from ntklab.config import Config, ConfigError
from ntklab.data import DataError, class_labels, load_csv, load_custom, load_digits, make_synthetic
from ntklab.models import MLP, OneHiddenLayer
from ntklab.ntk import Method, dense_bytes
from ntklab.targets import check_call, locate

Builder = Callable[[Config, int, int, dict], nn.Module]


def load_data(cfg: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d), y (n,) in float64 on the CPU, from the `data` config group (`seed` draws the
    synthetic data and the digits' subset)."""
    dat = cfg.data
    if dat.name == "csv":
        try:
            return load_csv(dat.path)
        except OSError as err:  # unreadable: permissions, a broken link, an I/O error
            raise DataError(f"data.path={dat.path}: cannot be read ({err.strerror})") from None
    if dat.name == "digits":
        return load_digits(dat.n, seed=seed)
    if dat.name == "custom":
        return load_custom(dat._target_, dat.kwargs)
    return make_synthetic(
        dat.name,
        dat.n,
        dat.d,
        target=dat.target,
        teacher_width=dat.teacher_width,
        noise=dat.noise,
        seed=seed,
    )


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
    if cfg.loss == "mse" and k != 1:
        raise ConfigError(
            f"{where}: the model has k={k} outputs and loss=mse fits one target per sample; "
            "return (n,) or (n, 1), or use loss=cross_entropy with class labels"
        )
    if cfg.loss == "cross_entropy" and k < classes:
        raise ConfigError(f"{where}: the model has k={k} outputs for {classes} classes")


def targets(cfg: Config, y: torch.Tensor, device: torch.device, dtype: torch.dtype):
    """y as the loss takes it: real targets in the run's dtype for the MSE, int64 class labels
    for cross-entropy (DataError when they are not)."""
    if cfg.loss == "cross_entropy":
        return class_labels(y, f"data={cfg.data.name}").to(device)
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
