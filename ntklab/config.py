"""Typed config schemas (registered in Hydra's ConfigStore) and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ntklab.data import INPUTS, TARGETS
from ntklab.models import ACTIVATIONS
from ntklab.ntk import METHODS
from ntklab.optim import SAMPLERS, SCHEDULES


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key, the value and the fix."""


@dataclass
class ModelConfig:
    name: str = MISSING  # linear | leaky_relu
    width: int = 512
    negative_slope: float = 0.1


@dataclass
class DataConfig:
    name: str = MISSING  # sphere | gaussian | csv
    n: Optional[int] = 128  # csv: taken from the file
    d: Optional[int] = 16
    path: Optional[str] = None  # csv only
    target: str = "teacher"  # teacher | linear | random
    teacher_width: int = 8
    noise: float = 0.0


@dataclass
class OptimConfig:
    name: str = MISSING  # gd | sgd
    lr: Any = "auto"  # a positive number, or "auto" = n / (2 λ_max(K_0))
    batch_size: Optional[int] = None  # sgd only; gd uses all n
    momentum: float = 0.0
    sampling: str = "reshuffle"
    schedule: str = "constant"


@dataclass
class NTKConfig:
    every: int = 1  # 0 turns tracking off
    method: str = "structured"  # structured | jacobian | ntvp (matrix-free) | auto
    memory_budget_mb: float = 2048.0  # auto: dense when K and its eigvalsh fit in this
    tol: float = 1e-4  # ntvp: Lanczos stops at ‖K x − θ x‖ ≤ tol·|θ|
    max_iter: int = 500  # ntvp: at most this many products K u per eigenvalue


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ntk: NTKConfig = field(default_factory=NTKConfig)
    epochs: int = 200
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # float32 | float64
    divergence_factor: float = 1e6


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="ntklab_schema", node=Config)


DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("gd", "sgd")


def _fail(key: str, value: object, why: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}")


def _choice(key: str, value: object, allowed) -> None:
    if value not in allowed:
        _fail(key, value, f"unknown; choose one of {', '.join(sorted(allowed))}")


def parse_lr(value: object) -> float | str:
    """optim.lr is a positive finite number or the string 'auto'."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(value)
    except (TypeError, ValueError):
        _fail("optim.lr", value, "must be a positive number or 'auto' (the theory step)")
    if not math.isfinite(lr) or lr <= 0:
        _fail("optim.lr", value, "must be a positive finite number or 'auto'")
    return lr


def validate(cfg: Any) -> None:
    """Check every value a run depends on; raise ConfigError naming the first bad one."""
    m, dat, opt = cfg.model, cfg.data, cfg.optim
    _choice("model", m.name, ACTIVATIONS)
    if m.width <= 0:
        _fail("model.width", m.width, "must be a positive integer (number of hidden neurons)")
    if m.name == "leaky_relu" and not 0.0 <= m.negative_slope < 1.0:
        _fail("model.negative_slope", m.negative_slope, "must lie in [0, 1)")
    _choice("data", dat.name, [*INPUTS, "csv"])
    if dat.name == "csv":
        if not dat.path:
            _fail("data.path", dat.path, "data=csv needs data.path=FILE")
    else:
        for key in ("n", "d"):
            value = getattr(dat, key)
            if value is None or value <= 0:
                _fail(f"data.{key}", value, "must be a positive integer")
        _choice("data.target", dat.target, TARGETS)
        if dat.teacher_width <= 0:
            _fail("data.teacher_width", dat.teacher_width, "must be a positive integer")
    if not math.isfinite(dat.noise) or dat.noise < 0:
        _fail("data.noise", dat.noise, "must be a finite number ≥ 0")
    _choice("optim", opt.name, OPTIMIZERS)
    parse_lr(opt.lr)
    if not math.isfinite(opt.momentum) or not 0.0 <= opt.momentum < 1.0:
        _fail("optim.momentum", opt.momentum, "must lie in [0, 1) (0 or 0.9 in the recipe)")
    if opt.name == "sgd" and opt.batch_size is not None and opt.batch_size <= 0:
        _fail("optim.batch_size", opt.batch_size, "must be a positive integer")
    _choice("optim.sampling", opt.sampling, SAMPLERS)
    _choice("optim.schedule", opt.schedule, SCHEDULES)
    _choice("ntk.method", cfg.ntk.method, METHODS)
    if cfg.ntk.every < 0:
        _fail("ntk.every", cfg.ntk.every, "must be ≥ 0 (0 turns NTK tracking off)")
    if not cfg.ntk.memory_budget_mb > 0:
        _fail("ntk.memory_budget_mb", cfg.ntk.memory_budget_mb, "must be a positive number")
    if not 0 < cfg.ntk.tol < 1:
        _fail("ntk.tol", cfg.ntk.tol, "must lie in (0, 1), e.g. 1e-4")
    if cfg.ntk.max_iter < 1:
        _fail("ntk.max_iter", cfg.ntk.max_iter, "must be a positive integer, e.g. 500")
    if cfg.epochs < 0:
        _fail("epochs", cfg.epochs, "must be ≥ 0")
    _choice("device", cfg.device, DEVICES)
    _choice("dtype", cfg.dtype, DTYPES)
    if not cfg.divergence_factor > 1:
        _fail("divergence_factor", cfg.divergence_factor, "must be > 1")


def check_batch_size(batch_size: int | None, n: int) -> int:
    """SGD's batch size against the data actually loaded (a CSV's n is known only then)."""
    if batch_size is None:
        return n
    if batch_size > n:
        _fail("optim.batch_size", batch_size, f"exceeds the number of samples n={n}")
    return int(batch_size)
