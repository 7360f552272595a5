"""The real `ntklab` CLI into tmp_path: run folder, TensorBoard agreement, checkpoints, sweeps."""

import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import read_metrics, read_summary, run_cli

THEORY_TAGS = {
    "loss/train",
    "ntk/lambda_min",
    "ntk/lambda_max",
    "ntk/condition_number",
    "ntk/rel_change",
    "weights/dist_from_init",
    "weights/rel_dist_from_init",
    "weights/max_neuron_dist",
    "pl/ratio",
    "pl/mu",
    "optim/lr",
}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One run of the default experiment, shortened; shared by the tests below."""
    cwd = tmp_path_factory.mktemp("run")
    proc = run_cli("epochs=12", "ntk.every=5", "hydra.run.dir=out", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd / "out"


def test_run_folder_layout(default_run):
    for name in (".hydra/config.yaml", "metrics.jsonl", "summary.json"):
        assert (default_run / name).is_file(), name
    assert list((default_run / "tb").glob("events.out.tfevents.*"))
    summary = read_summary(default_run)
    assert summary["status"] == "completed" and summary["epochs_run"] == 12
    assert summary["ntk_method"] == "structured"


def test_every_theory_tag_logged_on_ntk_epochs(default_run):
    records = read_metrics(default_run)
    assert [r["step"] for r in records] == list(range(13))
    ntk_steps = [r["step"] for r in records if "ntk/lambda_min" in r]
    assert ntk_steps == [0, 5, 10, 12]  # every 5, plus the first and the last epoch
    for r in records:
        if r["step"] in ntk_steps:
            assert THEORY_TAGS <= set(r), THEORY_TAGS - set(r)
    assert records[0]["ntk/rel_change"] == 0.0
    assert records[-1]["loss/train"] < records[0]["loss/train"]


def test_metrics_jsonl_equals_tensorboard_scalars(default_run):
    acc = EventAccumulator(str(default_run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    records = read_metrics(default_run)
    tags = set(acc.Tags()["scalars"])
    assert THEORY_TAGS <= tags
    for tag in tags:
        tb = {e.step: e.value for e in acc.Scalars(tag)}
        js = {r["step"]: r[tag] for r in records if tag in r}
        assert tb.keys() == js.keys(), tag
        for step, value in js.items():
            # TensorBoard stores float32: agreement to float32 precision
            assert tb[step] == pytest.approx(value, rel=1e-6, abs=1e-30), (tag, step)


def test_checkpoints_load_weights_only(default_run):
    init = torch.load(default_run / "checkpoints/init.pt", weights_only=True)
    last = torch.load(default_run / "checkpoints/last.pt", weights_only=True)
    assert init["W"].shape == (512, 16) and init["v"].shape == (512,)
    assert init["epoch"] == 0 and last["epoch"] == 12
    dist = float((last["W"] - init["W"]).norm())
    assert dist == pytest.approx(read_metrics(default_run)[-1]["weights/dist_from_init"], rel=1e-5)


@pytest.mark.parametrize("model", ["leaky_relu", "linear"])
def test_pl_ratio_never_below_mu(tmp_path, model, small_run_args):
    # d = 30 ≥ n = 24 so that the linear net's K = X Xᵀ is non-singular
    args = [*small_run_args, f"model={model}", "dtype=float64", "epochs=30", "data.d=30"]
    proc = run_cli(*args, "hydra.run.dir=out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = read_metrics(tmp_path / "out")
    assert len(records) == 31
    for r in records:
        assert r["pl/ratio"] >= r["pl/mu"] * (1 - 1e-9), r
        assert r["ntk/lambda_min_resolved"] == 1.0


def test_singular_kernel_is_reported_as_roundoff(tmp_path, small_run_args):
    # linear net with d = 5 < n = 24: rank(K) = 5, λ_min is round-off, not science
    proc = run_cli(
        *small_run_args, "model=linear", "dtype=float64", "hydra.run.dir=out", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    for r in read_metrics(tmp_path / "out"):
        assert r["ntk/lambda_min_resolved"] == 0.0
        assert abs(r["ntk/lambda_min"]) <= r["ntk/roundoff_floor"]
        assert "ntk/condition_number" not in r


def test_linear_kernel_stays_put_in_a_real_run(tmp_path, small_run_args):
    args = [*small_run_args, "model=linear", "dtype=float64", "epochs=20", "data.d=30"]
    proc = run_cli(*args, "hydra.run.dir=out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = read_metrics(tmp_path / "out")
    assert all(r["ntk/rel_change"] < 1e-12 for r in records)


def test_sgd_and_csv_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5])
    rows = "\n".join(",".join(f"{v:.6f}" for v in [*x, t]) for x, t in zip(X, y, strict=True))
    (tmp_path / "data.csv").write_text("a,b,c,y\n" + rows + "\n")
    args = ["data=csv", "data.path=data.csv", "optim=sgd", "optim.batch_size=8"]
    proc = run_cli(
        *args,
        "optim.momentum=0.9",
        "optim.lr=0.5",
        "epochs=5",
        "model.width=16",
        "hydra.run.dir=out",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = read_summary(tmp_path / "out")
    assert summary["hparams"]["n"] == 30 and summary["hparams"]["d"] == 3
    assert summary["hparams"]["batch_size"] == 8 and summary["hparams"]["lr"] == 0.5
    assert math.isfinite(summary["final_loss"])


@pytest.mark.slow
def test_width_multirun_names_job_folders_by_override(tmp_path, small_run_args):
    proc = run_cli(
        "-m", *small_run_args, "model.width=8,16,32", "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    # each folder is named after all of its job's overrides, the swept one included
    fixed = "data.d=5,data.n=24,epochs=6"
    assert jobs == [f"{fixed},model.width={m}" for m in (16, 32, 8)]
    for job in jobs:
        summary = read_summary(tmp_path / "sweep" / job)
        assert summary["hparams"]["width"] == int(job.rsplit("=", 1)[1])
        assert (tmp_path / "sweep" / job / "tb").is_dir()


def test_python_module_entry_point_help(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "leaky_relu*" in proc.stdout and "model.width" in proc.stdout
    assert "mlp" in proc.stdout and "custom" in proc.stdout
    json.dumps(proc.stdout)  # printable
