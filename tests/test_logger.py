"""The run's writer: the spectrum histogram it writes is the event `add_histogram` writes."""

from __future__ import annotations

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ntklab.logger import RunLogger
from ntklab.rundir import RunFolder


def test_the_fast_histogram_is_add_histograms_event(tmp_path) -> None:
    values = torch.cat([torch.logspace(-3, 1.5, 120, dtype=torch.float64), torch.zeros(3)])
    ours = RunLogger(RunFolder(tmp_path / "ours"))
    ours.log_histogram("ntk/spectrum", values, 4)
    ours.close()
    theirs = RunLogger(RunFolder(tmp_path / "theirs"))
    theirs.writer.add_histogram("ntk/spectrum", values.numpy(), global_step=4)
    theirs.close()
    read = []
    for name in ("ours", "theirs"):
        acc = EventAccumulator(str(tmp_path / name / "tb"))
        acc.Reload()
        (event,) = acc.Histograms("ntk/spectrum")
        read.append((event.step, event.histogram_value))
    assert read[0] == read[1]
    assert read[0][1].num == 123 and len(read[0][1].bucket) > 10
