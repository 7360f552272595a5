"""The one writer of a run's records: TensorBoard events (tb/) and metrics.jsonl, side by side."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter


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

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """A TensorBoard histogram of `values` at `step` (not in metrics.jsonl: not a scalar)."""
        self.writer.add_histogram(tag, values.detach().cpu().numpy(), global_step=step)

    def set_layout(self, layout: dict[str, dict[str, list[object]]]) -> None:
        """TensorBoard's custom-scalars layout {category: {chart: ["Multiline", [tag regexes]]}}."""
        self.writer.add_custom_scalars(layout)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if not self._jsonl.closed:
            self._jsonl.close()

    def write_summary(self, summary: dict[str, object]) -> Path:
        path = self.run_dir / "summary.json"
        atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return path
