"""Typed config schemas (registered in Hydra's ConfigStore), and the one step that turns a
composed config into a validated `Config`: nothing below the assembly layer sees a DictConfig.

Each default is stated here, once; the YAML files under conf/ carry only what an option
changes. Comments beside the fields are the keys' documentation (`ntklab --cfg job` prints the
values a run will use).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ntklab.data import DIGITS, INPUTS, TARGETS
from ntklab.launch import folder_label, unique_folder
from ntklab.losses import LOSSES
from ntklab.models import ACTIVATIONS, MLP_ACTIVATIONS, PARAMETERIZATIONS
from ntklab.ntk import Method
from ntklab.optim import SAMPLERS, SCHEDULES
from ntklab.sweep import COLUMNS, FIGURES, ReportSpec
from ntklab.targets import check_target, gather_kwargs


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key, the value and the fix."""


@dataclass
class ModelConfig:
    name: str = MISSING  # linear | leaky_relu | mlp | plain_linear | custom
    width: int = 512  # m, hidden neurons (of every hidden layer of an mlp)
    negative_slope: float = 0.1  # ε of the leaky ReLU, in [0, 1) (the linear net has ε = 1)
    train_output: bool = False  # also train the output layer (the kernel gains its part)
    alpha: float = 1.0  # output scale: f = α h, loss divided by α² (lazy vs rich)
    center: bool = False  # f = α (h − h_0): zero output at init
    parameterization: str = "ntk"  # ntk | standard (where a trained output layer keeps 1/√m)
    depth: int = 1  # mlp: hidden layers L (the one-hidden-layer nets have 1)
    activation: Optional[str] = None  # mlp: relu | leaky_relu | tanh | linear
    _target_: Optional[str] = None  # custom: the nn.Module class pkg.module.Class, called with d=
    kwargs: dict[str, Any] = field(default_factory=dict)  # custom: its +model.KEY=VALUE


@dataclass
class DataConfig:
    name: str = MISSING  # sphere | gaussian | csv | digits | custom
    n: Optional[int] = 128  # samples (csv, custom: from the data; digits: a subset, null = all)
    d: Optional[int] = 16  # input dimension (csv, digits, custom: from the data)
    path: Optional[str] = None  # csv only: the file
    n_test: Optional[int] = None  # sphere, gaussian: held-out points of the same law (null: none)
    test_path: Optional[str] = None  # csv only: a held-out file with the same columns
    target: str = "teacher"  # teacher | linear | random
    teacher_width: int = 8  # width of the random ReLU teacher
    noise: float = 0.0  # std of label noise, added after y is scaled to unit variance
    _target_: Optional[str] = None  # custom: a function pkg.module.func returning (X, y)
    kwargs: dict[str, Any] = field(default_factory=dict)  # custom: its +data.KEY=VALUE


@dataclass
class OptimConfig:
    name: str = MISSING  # gd | sgd
    lr: Any = "auto"  # a number, auto = 1/β (theory step), nonconvex | nonconvex_slide (SGD, mse)
    batch_size: Optional[int] = None  # sgd only; gd uses all n
    momentum: float = 0.0  # heavy ball μ in [0, 1)
    sampling: str = "reshuffle"  # sgd: reshuffle | replacement
    pass_fraction: float = 1.0  # sgd, replacement: an epoch draws ⌈pass_fraction · n/b⌉ batches
    schedule: str = "constant"  # constant | plateau | inverse_time | inverse_step
    patience: int = 10  # plateau: epochs without improvement before the step is divided
    factor: float = 0.1  # plateau: what the step is multiplied by
    decay_epochs: float = 10.0  # inverse_time: epoch t uses lr / (1 + (t − 1)/decay_epochs)
    decay_steps: float = 10.0  # inverse_step: optimiser step s uses lr / (1 + (s − 1)/decay_steps)
    weight_decay: float = 0.0  # λ ≥ 0: the loss gains (λ/2)‖θ‖² over the trained parameters


@dataclass
class NTKConfig:
    method: str = "structured"  # structured | jacobian | ntvp (matrix-free) | auto
    every: int = 1  # track every N epochs (always epoch 0 and the last); 0 turns tracking off
    budget: Optional[float] = None  # fraction of training time tracking may use; null: no cap
    memory_budget_mb: float = 2048.0  # auto: dense when K and its eigvalsh fit in this
    tol: float = 1e-4  # ntvp: the eigensolver stops at ‖K x − θ x‖ ≤ tol·|θ|
    max_iter: int = 500  # ntvp: at most this many products K u per eigenvalue


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ntk: NTKConfig = field(default_factory=NTKConfig)
    loss: str = "mse"  # mse | cross_entropy (class labels, k outputs) | logistic (labels ±1)
    epochs: int = 200  # training epochs (GD: one full-batch step each; SGD: one pass over the data)
    seed: int = 0  # one seed for data, init, minibatch order and held-out data (own streams)
    device: str = "auto"  # auto (CUDA when a GPU is visible) | cpu | cuda
    dtype: str = "float32"  # float32 | float64
    divergence_factor: float = 1e6  # stop when the loss exceeds this multiple of L_0
    divergence_exit_code: int = 0  # exit status of a diverged run (0: a sweep goes on)
    checkpoint_every: int = 10  # write checkpoints/last.pt every N epochs (0: only at the end)
    resume: bool = False  # continue the run in hydra.run.dir from checkpoints/last.pt
    overwrite: bool = False  # replace a run already in the folder
    threads: Optional[int] = None  # torch intra-op threads per run; null = torch's default
    report: ReportSpec = field(default_factory=ReportSpec)  # what a sweep's report shows


@dataclass
class LRFindGrid:
    lr_min: float = 1e-3  # geometric grid from lr_min to lr_max
    lr_max: float = 1e4  # the largest step tried
    per_decade: int = 1  # grid points per factor of 10 (1 = the recipe's factor 10)
    epochs: int = 20  # length of each trial run


@dataclass
class LRFindConfig(Config):
    """`ntklab-lr-find`'s schema: a run's config plus the grid of steps it tries."""

    lr_find: LRFindGrid = field(default_factory=LRFindGrid)


def register_configs() -> None:
    """The schemas as options of the `schema` group: conf/config.yaml takes `ntklab`,
    conf/lr_find.yaml overrides it with `lr_find`, so each program accepts only its own keys.
    Also the resolver behind the default run and sweep folders (launch.unique_folder)."""
    OmegaConf.register_new_resolver("ntklab_unique", unique_folder, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("ntklab_label", folder_label, replace=True)
    cs = ConfigStore.instance()
    cs.store(group="schema", name="ntklab", node=Config, package="_global_")
    cs.store(group="schema", name="lr_find", node=LRFindConfig, package="_global_")


MAX_SEED = 2**32 - 1  # seed · 1000 + stream must stay a valid generator seed
ALPHA_RANGE = (1e-6, 1e6)
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("gd", "sgd")
# Keys that change how a run is driven, not what it computes: a resumed run may differ in them.
RUN_CONTROL_KEYS = ("resume", "overwrite", "checkpoint_every", "divergence_exit_code", "report")


def _fail(key: str, value: object, why: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}")


def _choice(key: str, value: object, allowed) -> None:
    if value not in allowed:
        _fail(key, value, f"unknown; choose one of {', '.join(sorted(allowed))}")


STEP_RULES = ("auto", "nonconvex", "nonconvex_slide")  # steps a run computes for itself


def parse_lr(value: object) -> float | str:
    """optim.lr is a positive finite number or one of STEP_RULES."""
    if isinstance(value, str) and value.strip().lower() in STEP_RULES:
        return value.strip().lower()
    if isinstance(value, bool):  # float(True) would silently give lr = 1
        _fail("optim.lr", value, "must be a positive number or 'auto' (the theory step)")
    try:
        lr = float(value)
    except (TypeError, ValueError):
        _fail("optim.lr", value, "must be a positive number or 'auto' (the theory step), or "
              "nonconvex / nonconvex_slide (SGD's steps of the nonconvex bound)")  # fmt: skip
    if not math.isfinite(lr) or lr <= 0:
        _fail("optim.lr", value, "must be a positive finite number or 'auto'")
    return lr


def load(cfg: DictConfig, schema: type[Config] = Config) -> Config:
    """The composed config as a validated `schema` instance (optim.lr as a float or "auto")."""
    for key in sorted(OmegaConf.missing_keys(cfg)):
        _fail(key, "???", f"has no value; set it on the command line, e.g. {key}=...")
    typed = OmegaConf.to_object(gather_kwargs(cfg, {"model": ModelConfig, "data": DataConfig}))
    if type(typed) is not schema:
        _fail("schema", type(typed).__name__, "is another program's schema; leave `schema` unset")
    validate(typed)
    typed.optim.lr = parse_lr(typed.optim.lr)
    if isinstance(typed, LRFindConfig):
        _validate_grid(typed.lr_find)
    return typed


def validate(cfg: Config) -> None:
    """Check every value a run depends on; raise ConfigError naming the first bad one."""
    _validate_model(cfg.model)
    _validate_data(cfg.data)
    _validate_optim(cfg.optim)
    _validate_ntk(cfg.ntk)
    _validate_pairs(cfg)
    if cfg.epochs < 0:
        _fail("epochs", cfg.epochs, "must be ≥ 0")
    if not 0 <= cfg.seed <= MAX_SEED:
        _fail("seed", cfg.seed, f"must be an integer in [0, {MAX_SEED}]")
    _choice("device", cfg.device, DEVICES)
    _choice("dtype", cfg.dtype, DTYPES)
    if cfg.threads is not None and cfg.threads <= 0:
        _fail("threads", cfg.threads, "must be a positive integer, or null for torch's default")
    _validate_run_control(cfg)


MODELS = (*ACTIVATIONS, "mlp", "plain_linear", "custom")
# The one-hidden-layer nets' own options, at the values that leave an mlp or custom model as is.
ONE_HIDDEN_LAYER_OPTIONS = {
    "train_output": False,
    "alpha": 1.0,
    "center": False,
    "parameterization": "ntk",
}


def _validate_model(m: ModelConfig) -> None:
    _choice("model", m.name, MODELS)
    if m.width <= 0:
        _fail("model.width", m.width, "must be a positive integer (number of hidden neurons)")
    leaky = m.name == "leaky_relu" or (m.name == "mlp" and m.activation == "leaky_relu")
    if leaky and not 0.0 <= m.negative_slope < 1.0:
        _fail("model.negative_slope", m.negative_slope, "must lie in [0, 1)")
    if not (math.isfinite(m.alpha) and ALPHA_RANGE[0] <= m.alpha <= ALPHA_RANGE[1]):
        # α² scales the kernel and the theory step: beyond this range float32 under/overflows
        _fail("model.alpha", m.alpha, "must lie in [1e-06, 1e+06] (1 = no output scale)")
    _choice("model.parameterization", m.parameterization, PARAMETERIZATIONS)
    others = ("mlp", "plain_linear", "custom")
    for key, value in ONE_HIDDEN_LAYER_OPTIONS.items() if m.name in others else ():
        if getattr(m, key) != value:
            why = f"is an option of model=leaky_relu and model=linear, not of model={m.name}"
            _fail(f"model.{key}", getattr(m, key), why + "; leave it unset")
    _validate_model_kind(m)


def _validate_model_kind(m: ModelConfig) -> None:
    """The keys that belong to one kind of model: mlp's depth and activation, custom's target."""
    if m.name == "mlp":
        if m.depth < 1:
            _fail("model.depth", m.depth, "must be a positive integer (hidden layers)")
        _choice("model.activation", m.activation, MLP_ACTIVATIONS)
    elif m.depth != 1:
        _fail("model.depth", m.depth, f"model={m.name} has no depth; use model=mlp model.depth=…")
    elif m.activation is not None:
        _fail("model.activation", m.activation, f"model={m.name} has no activation key; use "
              "model=mlp model.activation=… (or model=leaky_relu, model=linear)")  # fmt: skip
    check_target("model", m.name, m._target_, m.kwargs, ConfigError)


DATA = (*INPUTS, "csv", "digits", "custom")
FROM_DATA = {"csv": ("n", "d"), "custom": ("n", "d"), "digits": ("d",)}  # sizes the data fix


def _validate_data(dat: DataConfig) -> None:
    _choice("data", dat.name, DATA)
    check_target("data", dat.name, dat._target_, dat.kwargs, ConfigError)
    _validate_test_set(dat)
    if dat.name == "csv":
        if not dat.path:
            _fail("data.path", dat.path, "data=csv needs data.path=FILE")
    elif dat.name == "digits":
        if dat.n is not None and not 0 < dat.n <= DIGITS:
            _fail("data.n", dat.n, f"data=digits has {DIGITS} samples: a subset size 1…{DIGITS}, "
                  "or null for all")  # fmt: skip
    elif dat.name in INPUTS:
        for key in ("n", "d"):
            value = getattr(dat, key)
            if value is None or value <= 0:
                _fail(f"data.{key}", value, "must be a positive integer")
        _choice("data.target", dat.target, TARGETS)
        if dat.teacher_width <= 0:
            _fail("data.teacher_width", dat.teacher_width, "must be a positive integer")
    if not math.isfinite(dat.noise) or dat.noise < 0:
        _fail("data.noise", dat.noise, "must be a finite number ≥ 0")


def _validate_test_set(dat: DataConfig) -> None:
    """A held-out set: data.n_test more points of a synthetic law, or a CSV's data.test_path."""
    if dat.n_test is not None:
        if dat.name not in INPUTS:
            _fail("data.n_test", dat.n_test, f"draws held-out points of the synthetic data "
                  f"({', '.join(INPUTS)}), not of data={dat.name}"
                  + ("; use data.test_path=FILE" if dat.name == "csv" else ""))  # fmt: skip
        if isinstance(dat.n_test, bool) or dat.n_test <= 0:
            _fail("data.n_test", dat.n_test, "must be a positive integer (null: no test set)")
    if dat.test_path is not None:
        if dat.name != "csv":
            fix = "use data.n_test=N" if dat.name in INPUTS else "leave it unset"
            _fail("data.test_path", dat.test_path, f"is a held-out file for data=csv, not for "
                  f"data={dat.name}; {fix}")  # fmt: skip
        if not dat.test_path:
            _fail("data.test_path", dat.test_path, "must be the path of a CSV file, or null")


def _validate_optim(opt: OptimConfig) -> None:
    _choice("optim", opt.name, OPTIMIZERS)
    parse_lr(opt.lr)
    if not math.isfinite(opt.momentum) or not 0.0 <= opt.momentum < 1.0:
        _fail("optim.momentum", opt.momentum, "must lie in [0, 1) (0 or 0.9 in the recipe)")
    if opt.name == "sgd" and opt.batch_size is not None and opt.batch_size <= 0:
        _fail("optim.batch_size", opt.batch_size, "must be a positive integer")
    _choice("optim.sampling", opt.sampling, SAMPLERS)
    if not (math.isfinite(opt.pass_fraction) and opt.pass_fraction > 0):
        _fail("optim.pass_fraction", opt.pass_fraction, "must be a positive number (1: an "
              "epoch draws a pass's worth of minibatches)")  # fmt: skip
    if opt.name == "sgd" and opt.pass_fraction != 1.0 and opt.sampling != "replacement":
        _fail("optim.pass_fraction", opt.pass_fraction, f"optim.sampling={opt.sampling!r} "
              "makes each epoch one pass over a permutation; use optim.sampling=replacement "
              "for epochs of another size")  # fmt: skip
    _choice("optim.schedule", opt.schedule, SCHEDULES)
    if opt.patience < 1:
        _fail("optim.patience", opt.patience, "must be a positive integer number of epochs")
    if not 0.0 < opt.factor < 1.0:
        _fail("optim.factor", opt.factor, "must lie in (0, 1) (0.1 divides the step by 10)")
    if not (math.isfinite(opt.decay_epochs) and opt.decay_epochs > 0):
        _fail("optim.decay_epochs", opt.decay_epochs, "must be a positive number of epochs")
    if not (math.isfinite(opt.decay_steps) and opt.decay_steps > 0):
        _fail("optim.decay_steps", opt.decay_steps, "must be a positive number of steps")
    if not (math.isfinite(opt.weight_decay) and opt.weight_decay >= 0):
        _fail("optim.weight_decay", opt.weight_decay, "must be a finite number ≥ 0 (λ of the "
              "L2 term (λ/2)‖θ‖²; 0 turns it off)")  # fmt: skip


def _validate_ntk(ntk: NTKConfig) -> None:
    _choice("ntk.method", ntk.method, [m.value for m in Method])
    if ntk.every < 0:
        _fail("ntk.every", ntk.every, "must be ≥ 0 (0 turns NTK tracking off)")
    if ntk.budget is not None and not 0 < ntk.budget < 1:
        _fail("ntk.budget", ntk.budget, "must lie in (0, 1), e.g. 0.2, or be null (no cap)")
    if not ntk.memory_budget_mb > 0:
        _fail("ntk.memory_budget_mb", ntk.memory_budget_mb, "must be a positive number")
    if not 0 < ntk.tol < 1:
        _fail("ntk.tol", ntk.tol, "must lie in (0, 1), e.g. 1e-4")
    if ntk.max_iter < 1:
        _fail("ntk.max_iter", ntk.max_iter, "must be a positive integer, e.g. 500")


def _validate_pairs(cfg: Config) -> None:
    """A loss that the model and the NTK method can serve; a method that the model has."""
    _choice("loss", cfg.loss, LOSSES)
    if cfg.model.name == "custom" and cfg.ntk.method == Method.STRUCTURED.value:
        _fail("ntk.method", cfg.ntk.method, "model=custom has no closed-form kernel; use "
              "ntk=auto (jacobian, or ntvp beyond the budget) or ntk=jacobian")  # fmt: skip
    if cfg.loss == "cross_entropy" and cfg.model.name in ACTIVATIONS:
        _fail("loss", cfg.loss, f"needs one output per class, and model={cfg.model.name} has "
              "one; use model=mlp or a model=custom with k outputs")  # fmt: skip
    if parse_lr(cfg.optim.lr) in ("nonconvex", "nonconvex_slide"):
        _validate_nonconvex(cfg)
    if cfg.loss == "cross_entropy" and cfg.ntk.method == Method.NTVP.value:
        _fail("ntk.method", cfg.ntk.method, "loss=cross_entropy tracks the full k-output kernel, "
              "which ntvp never forms; use ntk.method=auto, structured or jacobian")  # fmt: skip


def _validate_nonconvex(cfg: Config) -> None:
    """SGD's nonconvex steps need the MSE's per-example gradients 4 r_i² K_ii from a dense K_0."""
    lr = parse_lr(cfg.optim.lr)
    if cfg.optim.name != "sgd":
        _fail("optim.lr", lr, "is a step rule of SGD; use optim=sgd (GD: optim.lr=auto)")
    if cfg.loss != "mse" or cfg.optim.weight_decay != 0:
        _fail("optim.lr", lr, "is computed from the MSE's per-example gradients; use loss=mse "
              "without optim.weight_decay, or a number")  # fmt: skip
    if cfg.optim.schedule != "constant":
        _fail("optim.schedule", cfg.optim.schedule, f"optim.lr={lr} is a constant step; use "
              "optim.schedule=constant")  # fmt: skip
    if cfg.ntk.method == Method.NTVP.value:
        _fail("ntk.method", cfg.ntk.method, f"optim.lr={lr} needs K_0's diagonal, which the "
              "matrix-free route never forms; use ntk.method=structured or jacobian")  # fmt: skip


def _validate_run_control(cfg: Config) -> None:
    """The keys that decide how a run stops, checkpoints and reuses its folder."""
    if not cfg.divergence_factor > 1:
        _fail("divergence_factor", cfg.divergence_factor, "must be > 1 (a multiple of L_0)")
    if not 0 <= cfg.divergence_exit_code <= 255:
        _fail("divergence_exit_code", cfg.divergence_exit_code, "must be an exit status 0..255")
    if cfg.checkpoint_every < 0:
        _fail("checkpoint_every", cfg.checkpoint_every, "must be ≥ 0 (0: only at the end)")
    if cfg.resume and cfg.overwrite:
        _fail("overwrite", cfg.overwrite, "cannot be combined with resume=true; choose one")
    for column in cfg.report.fit:
        _choice("report.fit", column, COLUMNS)
    for figure in cfg.report.figures:
        _choice("report.figures", figure, FIGURES)
    _validate_report(cfg.report)


def _validate_report(spec: ReportSpec) -> None:
    """The report's own keys: tags where a tag is meant, a baseline named as a series is."""
    tags = [("curve_x", spec.curve_x), ("crossover", spec.crossover), ("tail_fit", spec.tail_fit)]
    for key, tag in tags + [("curve_tags", t) for t in spec.curve_tags]:
        if tag is not None and tag != "step" and "/" not in str(tag):
            also = " (or step, the epoch)" if key == "curve_x" else ""
            _fail(f"report.{key}", tag, f"must name a logged tag such as loss/excess{also}")
    if "=" not in spec.crossover_baseline:
        _fail("report.crossover_baseline", spec.crossover_baseline, "must name a series as the "
              "report labels it, KEY=VALUE, e.g. optim=gd")  # fmt: skip
    if not 0 < spec.tail_from < 1:
        _fail("report.tail_from", spec.tail_from, "must lie in (0, 1): the tail is the records "
              "with T ≥ tail_from · the last T")  # fmt: skip


def _validate_grid(f: LRFindGrid) -> None:
    """The lr_find keys of `ntklab-lr-find`."""
    if not (math.isfinite(f.lr_min) and f.lr_min > 0):
        _fail("lr_find.lr_min", f.lr_min, "must be a positive number")
    if not (math.isfinite(f.lr_max) and f.lr_max > f.lr_min):
        _fail("lr_find.lr_max", f.lr_max, f"must be a number above lr_find.lr_min={f.lr_min}")
    if f.per_decade < 1:
        _fail("lr_find.per_decade", f.per_decade, "must be a positive integer")
    if f.epochs < 1:
        _fail("lr_find.epochs", f.epochs, "must be a positive integer")


def check_against_data(cfg: Config, n: int, d: int) -> int:
    """The keys that can only be checked once the data are loaded (a CSV's n and d are known
    only then); returns SGD's batch size (all n for GD)."""
    source = f"the CSV {cfg.data.path}" if cfg.data.name == "csv" else f"data={cfg.data.name}"
    for key, actual in (("n", n), ("d", d)):
        asked = getattr(cfg.data, key)
        if key in FROM_DATA.get(cfg.data.name, ()) and asked is not None and asked != actual:
            _fail(
                f"data.{key}",
                asked,
                f"{source} has {key}={actual}; leave data.{key} unset (null) "
                f"for {cfg.data.name} data",
            )
    if cfg.data.name == "csv" and n == 0:
        _fail("data.path", cfg.data.path, "holds no data rows")
    batch_size = cfg.optim.batch_size
    if cfg.optim.name == "gd" or batch_size is None:
        return n
    if batch_size > n:
        _fail("optim.batch_size", batch_size, f"exceeds the number of samples n={n}")
    return int(batch_size)


def run_settings(cfg: Config) -> dict[str, Any]:
    """The config as plain values (what a checkpoint stores), without the run-control keys."""
    plain = dataclasses.asdict(cfg)
    return {k: v for k, v in plain.items() if k not in RUN_CONTROL_KEYS}


def first_difference(saved: Any, current: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key of `current` whose value differs in `saved`, with both values. Keys
    only `saved` has are no longer settings (a schema that dropped them) and are skipped."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(current, key=str):
            diff = first_difference(saved.get(key), current[key], f"{prefix}{key}.")
            if diff:
                return diff
        return None
    return None if saved == current else (prefix.rstrip("."), saved, current)
