"""The one writer of a run's records: TensorBoard events (tb/) and metrics.jsonl, side by side."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

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


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save via a temporary file and rename: a killed write leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunLogger:
    """Writes each logged epoch's scalars to TensorBoard and as one JSON line, then flushes both
    so a live dashboard (or `tail -f`) follows the run."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._jsonl = open(self.metrics_path, "a", encoding="utf-8")

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

    def end_hparams(self, status: str) -> None:
        """The session's end: success for a completed run, failure otherwise (diverged…)."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        code = "STATUS_SUCCESS" if status == "completed" else "STATUS_FAILURE"
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

    def write_summary(self, summary: dict[str, object]) -> Path:
        path = self.run_dir / "summary.json"
        atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return path


def write_failed_summary(run_dir: str | os.PathLike, message: str) -> Path:
    """summary.json for a job that raised before writing its own: status `failed` and why,
    so a sweep report lists it (a run's own summary is never overwritten)."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"status": "failed", "message": message, "final": {}, "hparams": {}}
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path
