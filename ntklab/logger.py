"""The one writer of a run's records: TensorBoard events (tb/) and metrics.jsonl, side by side."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

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


def temp_path(path: Path) -> Path:
    """Where an atomic write of `path` stages its bytes (a hidden file beside it)."""
    return path.with_name(f".{path.name}.tmp")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write the whole file to a temp file, fsync it, then rename it over `path`: a reader, or
    a process killed at any instant, sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text via a temporary file and rename, so a reader never sees half a file."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save via a temporary file and rename: a killed write leaves the old file intact."""
    _atomic_write(path, lambda f: torch.save(obj, f))


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

    def __init__(self, run_dir: str | os.PathLike, resume_after: int | None = None) -> None:
        """`resume_after=t` continues a run from its checkpoint of epoch t: records of later
        epochs (written before the run stopped) are dropped from metrics.jsonl and purged
        from TensorBoard, so each step appears exactly once."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        tb_dir = self.run_dir / "tb"
        purge_step = None
        if resume_after is not None:
            self._truncate_metrics(resume_after)
            _wait_for_new_second(tb_dir)
            purge_step = resume_after + 1
        self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=purge_step)
        self._jsonl = open(self.metrics_path, "a", encoding="utf-8")

    def _truncate_metrics(self, last_step: int) -> None:
        """Keep the records of steps ≤ last_step (a torn last line of a killed run goes too)."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", last_step + 1) <= last_step:
                kept.append(line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

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
        """A TensorBoard histogram of `values` at `step` (not in metrics.jsonl: not a scalar)."""
        self.writer.add_histogram(tag, values.detach().cpu().numpy(), global_step=step)

    def set_layout(self, layout: dict[str, dict[str, list[object]]]) -> None:
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
