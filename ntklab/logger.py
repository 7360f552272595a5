"""The one writer of a run's records: TensorBoard events (tb/) and metrics.jsonl, side by side,
and the dashboard's layout."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import google_crc32c
import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import histogram as histogram_summary

from ntklab.launch import command_keys
from ntklab.rundir import RunFolder


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C an event file stores after each record's length and data (TFRecord
    framing), computed by google-crc32c's C code. TensorBoard's own is a pure-Python byte
    loop (0.12 µs a byte) that its writer thread runs holding the GIL: with it, logging a
    tracked epoch of the default run took 2.1 ms, with this 0.8 ms."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# The writer looks the function up by this name on every record (same bytes on disk).
record_writer.masked_crc32c = masked_crc32c

# The HParams dashboard's metric columns: each run's last logged value of these tags.
HPARAM_METRICS: tuple[tuple[str, str, str], ...] = (
    ("loss/train", "loss", "L(W_t) = (1/n) Σ (f(x_i) − y_i)² at the last epoch"),
    ("ntk/lambda_min", "λ_min(K)", "smallest eigenvalue of the empirical NTK K_t"),
    ("ntk/lambda_max", "λ_max(K)", "largest eigenvalue of K_t"),
    ("ntk/rel_change", "‖K−K₀‖/‖K₀‖", "relative change of the kernel since initialisation"),
    ("weights/max_neuron_dist", "max ‖w_k−w_k(0)‖", "the largest distance a neuron moved"),
    ("weights/rel_dist_from_init", "‖W−W₀‖/‖W₀‖", "relative distance from initialisation"),
    ("pl/mu", "PL μ", "4 λ_min(K_t) / n, the PL constant"),
)

# The hyper-parameters (problem.hparams) by the config key a user types: `model.width=64`.
# Keys not listed (derived values such as lr_theory) keep their own names.
HPARAM_NAMES = {
    "model": "model", "width": "model.width", "negative_slope": "model.negative_slope",
    "train_output": "model.train_output", "alpha": "model.alpha", "center": "model.center",
    "parameterization": "model.parameterization", "data": "data", "n": "data.n",
    "d": "data.d", "optim": "optim", "lr": "optim.lr", "batch_size": "optim.batch_size",
    "momentum": "optim.momentum", "schedule": "optim.schedule", "ntk_method": "ntk.method",
}  # fmt: skip
# Override keys that name another hparam: `ntk=ntvp` sets ntk.method.
OVERRIDE_NAMES = {"ntk": "ntk.method"}

# Tags also logged as log10, for the charts whose values span decades (TensorBoard's custom
# scalars cannot be told to use a log axis): `loss/train` → `loss/log10_train`.
LOG10_TAGS = {
    "loss/train": "loss/log10_train",
    "loss/kernel_prediction": "loss/log10_kernel_prediction",
    "loss/kernel_inf_prediction": "loss/log10_kernel_inf_prediction",
    "loss/test": "loss/log10_test",
    "loss/test_kernel_prediction": "loss/log10_test_kernel_prediction",
    "pl/loss_bound": "pl/log10_loss_bound",
    "pl/ratio": "pl/log10_ratio",
    "pl/mu": "pl/log10_mu",
}


def _chart(*tags: str) -> list[object]:
    return ["Multiline", [f"^{tag}$" for tag in tags]]


# TensorBoard's CUSTOM SCALARS tab: each chart overlays the tags its regexes match, one colour
# per run. "across runs" holds one quantity per chart, so a sweep reads by colour; "theory vs
# measurement" one comparison per chart, on log10 where the values span decades.
LAYOUT: dict[str, dict[str, list[object]]] = {
    "across runs: one quantity per chart": {
        "log10 loss": _chart("loss/log10_train"),
        "λ_min(K_t)": _chart("ntk/lambda_min"),
        "kernel change ‖K_t − K_0‖ / ‖K_0‖": _chart("ntk/rel_change"),
        "largest neuron move max_k ‖w_k − w_k(0)‖": _chart("weights/max_neuron_dist"),
        "contraction L_t / L_{t−1}": _chart("loss/contraction"),
        "kernel distance to K_0 (1 − cosine)": _chart("ntk/kernel_distance"),
        "linearisation gap ‖f − f_lin‖ / ‖f − f_0‖": _chart("ntk/linearization_gap"),
    },
    "theory vs measurement: one comparison per chart": {
        "log10 loss (lower) and its one-step bound (upper)": _chart(
            "loss/log10_train", "pl/log10_loss_bound"
        ),
        "contraction vs the corrected bound and the notes' constant": _chart(
            "loss/contraction", "pl/rate_bound", "pl/rate_slide"
        ),
        "λ_min(K_t) vs λ_min(K∞)": _chart("ntk/lambda_min", "ntk/lambda_min_inf"),
        "log10 PL ratio ‖∇L‖²/L (upper) vs log10 μ (lower)": _chart(
            "pl/log10_ratio", "pl/log10_mu"
        ),
        "K_t's distance to K∞, relative": _chart("ntk/dist_to_inf"),
        "network vs kernel prediction (train): log10 loss, with K_0 and with K∞": _chart(
            "loss/log10_train", "loss/log10_kernel_prediction", "loss/log10_kernel_inf_prediction"
        ),
        "network vs kernel prediction (test): log10 held-out loss, with K_0": _chart(
            "loss/log10_test", "loss/log10_test_kernel_prediction"
        ),
    },
}


class _Kind(hp.Domain):
    """An hparam's type, and whether its value varies between the runs, with no domain: the
    dashboard's filters then accept any value (one logdir may hold runs of several sweeps)."""

    KINDS = {bool: "DATA_TYPE_BOOL", int: "DATA_TYPE_FLOAT64", float: "DATA_TYPE_FLOAT64"}

    def __init__(self, value: object, differs: bool) -> None:
        self.kind = self.KINDS.get(type(value), "DATA_TYPE_STRING")
        self.differs = differs

    @property
    def dtype(self) -> type:
        return {"DATA_TYPE_BOOL": bool, "DATA_TYPE_FLOAT64": float}.get(self.kind, str)

    def sample_uniform(self, rng=None):  # part of the interface; ntklab never samples
        raise NotImplementedError

    def update_hparam_info(self, hparam_info) -> None:
        hparam_info.type = api_pb2.DataType.Value(self.kind)
        hparam_info.differs = self.differs


def hparam_values(hparams: dict[str, object]) -> dict[str, bool | int | float | str]:
    """The run's hyper-parameters by config key, as values TensorBoard takes."""
    return {
        HPARAM_NAMES.get(k, k): v if isinstance(v, (bool, int, float, str)) else str(v)
        for k, v in hparams.items()
    }


def experiment_config(values: dict[str, object], varied: list[str]):
    """The HParams experiment: every hyper-parameter, the `varied` keys first (the dashboard
    lists those marked as differing first and shows the first five), then the metrics by their
    display names."""
    varied_names = {OVERRIDE_NAMES.get(k, k) for k in varied}
    params = [hp.HParam(name, _Kind(v, name in varied_names)) for name, v in values.items()]
    metrics = [hp.Metric(tag, display_name=name, description=about)
               for tag, name, about in HPARAM_METRICS]  # fmt: skip
    return hp.hparams_config_pb(params, metrics)


def _event_file_second(path: Path) -> int:
    # SummaryWriter names files events.out.tfevents.<unix seconds>.<host>.<pid>.<n>
    try:
        return int(path.name.split(".")[3])
    except (IndexError, ValueError):
        return 0


def _wait_for_new_second(tb_dir: Path) -> None:
    """TensorBoard reads event files in name order, and the name starts with the creation
    second: a resumed run's file must sort after every earlier one for its purge to apply."""
    latest = max((_event_file_second(p) for p in tb_dir.glob("events.out.tfevents.*")), default=0)
    deadline = time.time() + 2.0  # a file stamped in the future (clock skew) cannot be beaten
    while int(time.time()) <= latest and time.time() < deadline:
        time.sleep(0.05)


def _log10(value: float) -> float:
    """log10, with log10(0) = −inf, log10(inf) = inf and NaN for NaN or a negative value."""
    if value > 0:
        return math.log10(value)  # inf for inf
    return -math.inf if value == 0 else math.nan


def log10_tags(metrics: dict[str, float]) -> dict[str, float]:
    """log10 of each tag of LOG10_TAGS present in `metrics`."""
    return {LOG10_TAGS[tag]: _log10(float(metrics[tag])) for tag in LOG10_TAGS if tag in metrics}


class RunLogger:
    """Writes each logged epoch's scalars to TensorBoard and as one JSON line, then flushes both
    so a live dashboard (or `tail -f`) follows the run."""

    def __init__(self, folder: RunFolder, resume_after: int | None = None) -> None:
        """`resume_after=t` continues a run from its checkpoint of epoch t: records of later
        epochs (written before the run stopped) are dropped from metrics.jsonl and purged
        from TensorBoard, so each step appears exactly once."""
        self.folder = folder
        folder.path.mkdir(parents=True, exist_ok=True)
        purge_step = None
        if resume_after is not None:
            folder.keep_records_until(resume_after)
            _wait_for_new_second(folder.tb)
            purge_step = resume_after + 1
        self.writer = SummaryWriter(log_dir=str(folder.tb), purge_step=purge_step)
        self._bins: np.ndarray | None = None  # the histograms' bucket edges
        self._jsonl = open(folder.metrics, "a", encoding="utf-8")

    def log(
        self,
        step: int,
        metrics: dict[str, float],
        histograms: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """The epoch's scalars, then the log10 of those in LOG10_TAGS (after every other tag, so
        the record's other keys keep their order); `histograms` {tag: values} go to TensorBoard
        only, in the same event (each as `log_histogram` writes it)."""
        record: dict[str, float | int | None] = {"step": int(step)}
        metrics = {**metrics, **log10_tags(metrics)}
        values = [self._histogram(tag, v).value[0] for tag, v in (histograms or {}).items()]
        for tag, value in metrics.items():
            value = float(value)
            values.append(Summary.Value(tag=tag, simple_value=value))
            # JSON has no NaN/inf: write null, TensorBoard keeps the float.
            record[tag] = value if math.isfinite(value) else None
        # One event holding every scalar and histogram of the epoch (add_scalar writes one
        # event per tag): the writer's queue and lock cost about 25 µs per event, most of a
        # small run's logging time.
        self.writer._get_file_writer().add_summary(Summary(value=values), int(step))
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self.writer.flush()

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """A TensorBoard histogram of `values` at `step` (not in metrics.jsonl: not a scalar).
        The event add_histogram writes, with its bucket edges kept as an array: numpy would
        otherwise convert the list of 1549 edges on every call, most of the cost."""
        self.writer._get_file_writer().add_summary(self._histogram(tag, values), step)

    def _histogram(self, tag: str, values: torch.Tensor) -> Summary:
        if self._bins is None:
            self._bins = np.asarray(self.writer.default_bins, dtype=float)
        return histogram_summary(tag, values.detach().cpu().numpy(), self._bins)

    def set_layout(self, layout: dict[str, dict[str, list[object]]] = LAYOUT) -> None:
        """TensorBoard's custom-scalars layout {category: {chart: ["Multiline", [tag regexes]]}}."""
        self.writer.add_custom_scalars(layout)

    def log_hparams(self, hparams: dict[str, object]) -> None:
        """The HParams dashboard's records, into this run's own tb/ folder (so every run of a
        sweep is a row of one table): the experiment (hyper-parameters named by config key,
        the command's varying keys first, the metrics by display name) and this run's values.
        The trial is named by the overrides that name the run, by the last part of their keys
        (the table cuts its names short: `width=256`, not `model.width=2…`), and its start."""
        values = hparam_values(hparams)
        named, varied = command_keys(self.folder.path)
        short = ",".join(o.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + o.split("=", 1)[1]
                         for o in named)  # fmt: skip
        trial = f"{short or 'default'} · {time.strftime('%Y-%m-%d %H:%M:%S')}"
        for summary in (experiment_config(values, varied), hp.hparams_pb(values, trial)):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def end_hparams(self, completed: bool) -> None:
        """The session's end: success for a completed run, failure otherwise (diverged…)."""
        from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2

        code = "STATUS_SUCCESS" if completed else "STATUS_FAILURE"
        content = plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(code)),
            version=metadata.PLUGIN_DATA_VERSION,
        )
        plugin = SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
        )
        value = Summary.Value(
            tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin)
        )
        self.writer.file_writer.add_summary(Summary(value=[value]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if not self._jsonl.closed:
            self._jsonl.close()
