"""The logger's additions to a run's records: log10 tags beside the tags they come from, the
hyper-parameters by config key, a dashboard layout that names only tags a run logs, and the
spectrum histogram (written as the event `add_histogram` writes)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ntklab.logger import (
    HPARAM_METRICS,
    LAYOUT,
    LOG10_TAGS,
    RunLogger,
    hparam_values,
    log10_tags,
)
from ntklab.rundir import RunFolder


def test_log10_tags_follow_their_tags_and_keep_the_record_order(tmp_path):
    logger = RunLogger(RunFolder(tmp_path))
    logger.log(0, {"loss/train": 0.01, "pl/ratio": 2.0, "ntk/lambda_min": 0.5})
    logger.log(1, {"loss/train": 0.0, "pl/ratio": math.nan})
    logger.close()
    first, second = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert list(first) == [
        "step", "loss/train", "pl/ratio", "ntk/lambda_min", "loss/log10_train", "pl/log10_ratio",
    ]  # fmt: skip
    assert first["loss/log10_train"] == pytest.approx(-2.0)
    assert first["pl/log10_ratio"] == pytest.approx(math.log10(2.0))
    assert second["loss/log10_train"] is None and second["pl/log10_ratio"] is None  # -inf, NaN
    assert log10_tags({"loss/train": -1.0})["loss/log10_train"] != 0  # NaN, never a number


def test_hparams_are_named_by_config_key():
    values = hparam_values({"width": 64, "model": "linear", "n": 8, "lr_theory": 0.5, "x": [1]})
    assert values == {"model.width": 64, "model": "linear", "data.n": 8, "lr_theory": 0.5,
                      "x": "[1]"}  # fmt: skip


def test_the_layout_names_logged_tags_and_one_comparison_per_chart():
    readme = open("README.md", encoding="utf-8").read()
    documented = set(re.findall(r"`((?:loss|ntk|pl|weights|activations|optim)/\w+)`", readme))
    for category in LAYOUT.values():
        for kind, regexes in category.values():
            assert kind == "Multiline" and 1 <= len(regexes) <= 3
            for regex in regexes:
                assert regex.strip("^$") in documented, regex
    assert set(LOG10_TAGS.values()) <= documented
    assert {tag for tag, _, _ in HPARAM_METRICS} <= documented


def test_the_fast_histogram_is_add_histograms_event(tmp_path) -> None:
    # log10 of a spectrum: values on both sides of 0, as ntk/log10_spectrum has them
    values = torch.cat([torch.linspace(-3, 1.5, 120, dtype=torch.float64), torch.zeros(3)])
    ours = RunLogger(RunFolder(tmp_path / "ours"))
    ours.log_histogram("ntk/log10_spectrum", values, 4)
    ours.close()
    with_scalars = RunLogger(RunFolder(tmp_path / "with_scalars"))  # one event, as LogWriter
    with_scalars.log(4, {"loss/train": 0.5}, {"ntk/log10_spectrum": values})
    with_scalars.close()
    theirs = RunLogger(RunFolder(tmp_path / "theirs"))
    theirs.writer.add_histogram("ntk/log10_spectrum", values.numpy(), global_step=4)
    theirs.close()
    read = []
    for name in ("ours", "with_scalars", "theirs"):
        acc = EventAccumulator(str(tmp_path / name / "tb"))
        acc.Reload()
        (event,) = acc.Histograms("ntk/log10_spectrum")
        read.append((event.step, event.histogram_value))
    assert read[0] == read[1] == read[2]
    assert read[0][1].num == 123 and len(read[0][1].bucket) > 10


def test_an_epochs_scalars_read_back_as_add_scalar_writes_them(tmp_path) -> None:
    metrics = {"loss/train": 0.25, "ntk/lambda_min": 1e-3, "pl/ratio": math.inf}
    ours = RunLogger(RunFolder(tmp_path / "ours"))
    for step in (0, 3):
        ours.log(step, metrics)
    ours.close()
    theirs = RunLogger(RunFolder(tmp_path / "theirs"))
    for step in (0, 3):
        for tag, value in {**metrics, **log10_tags(metrics)}.items():
            theirs.writer.add_scalar(tag, value, global_step=step)
    theirs.close()
    read = []
    for name in ("ours", "theirs"):
        acc = EventAccumulator(str(tmp_path / name / "tb"))
        acc.Reload()
        tags = sorted(acc.Tags()["scalars"])
        read.append({t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags})
    assert read[0] == read[1] and "loss/log10_train" in read[0]


def test_event_check_sums_are_tensorboards_own(tmp_path) -> None:
    """The C CRC-32C the event files are written with gives TensorBoard's own masked check
    sums, byte for byte, and TensorBoard reads a file written with it back."""
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as slow
    from tensorboard.summary.writer import record_writer

    from ntklab.logger import masked_crc32c

    for size in (0, 1, 7, 8, 9, 63, 64, 1000, 4099):
        data = os.urandom(size)
        assert masked_crc32c(data) == slow(data), size
    assert record_writer.masked_crc32c is masked_crc32c
    logger = RunLogger(RunFolder(tmp_path))
    logger.log(3, {"loss/train": 0.25}, {"ntk/log10_spectrum": torch.linspace(-3.0, 1.0, 50)})
    logger.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [(3, 0.25)]
    assert acc.Histograms("ntk/log10_spectrum")[0].histogram_value.num == 50
