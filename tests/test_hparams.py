"""Every run writes its hyper-parameters into its own tb/ folder for the HParams dashboard."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from conftest import run_cli


def run(tmp_path, *overrides: str) -> dict:
    proc = run_cli(
        "data.n=8", "data.d=4", "model.width=16", *overrides, f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "summary.json").read_text())


def hparams_records(tb_dir) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(c) for tag, c in content.items()}


def value(v):
    return v.string_value if v.HasField("string_value") else v.number_value


def test_hparams_and_metrics_sit_in_the_runs_own_folder(tmp_path):
    summary = run(tmp_path, "epochs=3", "optim.lr=0.5")
    tb = tmp_path / "tb"
    assert [p for p in tb.iterdir() if p.is_dir()] == []  # no add_hparams subfolder
    records = hparams_records(tb)
    start = records[metadata.SESSION_START_INFO_TAG].session_start_info
    logged = {k: value(v) for k, v in start.hparams.items()}
    expected = summary["hparams"]
    # Named by the config keys a user types.
    assert logged["model.width"] == 16 and logged["optim"] == "gd"
    assert logged["model"] == "leaky_relu"
    for key, name in (("lr", "optim.lr"), ("negative_slope", "model.negative_slope"),
                      ("n", "data.n"), ("d", "data.d"), ("seed", "seed"),
                      ("momentum", "optim.momentum")):  # fmt: skip
        assert logged[name] == pytest.approx(expected[key])
    # The trial is named by the overrides that name the run.
    assert start.group_name.startswith("d=4,n=8,epochs=3,width=16,lr=0.5 · ")
    experiment = records[metadata.EXPERIMENT_TAG].experiment
    metrics = {m.name.tag: m.display_name for m in experiment.metric_infos}
    assert metrics["loss/train"] == "loss" and metrics["ntk/lambda_min"] == "λ_min(K)"
    assert "weights/max_neuron_dist" in metrics
    # The keys on the command line are marked as the ones that vary, so they come first.
    differs = {h.name for h in experiment.hparam_infos if h.differs}
    assert differs == {"data.d", "data.n", "epochs", "model.width", "optim.lr"}
    kinds = {h.name: api_pb2.DataType.Name(h.type) for h in experiment.hparam_infos}
    assert kinds["model.width"] == "DATA_TYPE_FLOAT64" and kinds["model"] == "DATA_TYPE_STRING"
    assert kinds["model.center"] == "DATA_TYPE_BOOL"
    # The metrics the table shows are the run's own scalars: their last value is the final one.
    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert acc.Scalars("loss/train")[-1].value == pytest.approx(summary["final"]["loss/train"])
    end = records[metadata.SESSION_END_INFO_TAG].session_end_info
    assert end.status == api_pb2.Status.Value("STATUS_SUCCESS")


def test_a_diverged_run_ends_its_session_as_a_failure(tmp_path):
    summary = run(tmp_path, "epochs=40", "optim.lr=1000")
    assert summary["status"] == "diverged"
    end = hparams_records(tmp_path / "tb")[metadata.SESSION_END_INFO_TAG].session_end_info
    assert end.status == api_pb2.Status.Value("STATUS_FAILURE")
