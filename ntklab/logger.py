"""The one writer of a run's records: TensorBoard events (tb/) and metrics.jsonl, side by side,
and the dashboard's layout."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import histogram as histogram_summary
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ntklab.rundir import RunFolder

# Tags the HParams dashboard shows next to the hyper-parameters (each run's last logged value).
HPARAM_METRICS = (
    "loss/train",
    "ntk/lambda_min",
    "ntk/lambda_max",
    "ntk/rel_change",
    "weights/max_neuron_dist",
    "weights/rel_dist_from_init",
    "pl/mu",
)

# TensorBoard's CUSTOM SCALARS tab: each chart overlays the tags whose names match its regexes.
LAYOUT: dict[str, dict[str, list[object]]] = {
    "theory vs measurement": {
        "loss and its one-step bound": ["Multiline", [r"^loss/train$", r"^pl/loss_bound$"]],
        "contraction vs bounds": [
            "Multiline",
            [r"^loss/contraction$", r"^pl/rate_bound$", r"^pl/rate_slide$"],
        ],
        "lambda_min vs infinite width": [
            "Multiline",
            [r"^ntk/lambda_min$", r"^ntk/lambda_min_inf$"],
        ],
        "PL ratio vs mu": ["Multiline", [r"^pl/ratio$", r"^pl/mu$"]],
        "kernel movement": [
            "Multiline",
            [r"^ntk/kernel_distance$", r"^ntk/rel_change$", r"^ntk/dist_to_inf$"],
        ],
    }
}


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

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record: dict[str, float | int | None] = {"step": int(step)}
        for tag, value in metrics.items():
            value = float(value)
            self.writer.add_scalar(tag, value, global_step=step)
            # JSON has no NaN/inf: write null, TensorBoard keeps the float.
            record[tag] = value if math.isfinite(value) else None
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self.writer.flush()

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """A TensorBoard histogram of `values` at `step` (not in metrics.jsonl: not a scalar).
        The event add_histogram writes, with its bucket edges kept as an array: numpy would
        otherwise convert the list of 1549 edges on every call, most of the cost."""
        if self._bins is None:
            self._bins = np.asarray(self.writer.default_bins, dtype=float)
        summary = histogram_summary(tag, values.detach().cpu().numpy(), self._bins)
        self.writer._get_file_writer().add_summary(summary, step)

    def set_layout(self, layout: dict[str, dict[str, list[object]]] = LAYOUT) -> None:
        """TensorBoard's custom-scalars layout {category: {chart: ["Multiline", [tag regexes]]}}."""
        self.writer.add_custom_scalars(layout)

    def log_hparams(self, hparams: dict[str, object], metrics: tuple[str, ...] = HPARAM_METRICS):
        """Hyper-parameters into this run's own tb/ folder (not the subfolder `add_hparams`
        makes), so the HParams dashboard lists every run of a sweep in one table. Metrics are
        named by tag: the dashboard shows each run's last logged value of them."""
        values = {
            k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()
        }
        exp, ssi, _ = hparams_summaries(values, dict.fromkeys(metrics, 0.0))
        for summary in (exp, ssi):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def end_hparams(self, completed: bool) -> None:
        """The session's end: success for a completed run, failure otherwise (diverged…)."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

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
