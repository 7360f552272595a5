"""A real TensorBoard server follows a real training run while it is still going, and serves a
sweep's runs by name with its HParams table led by the swept key."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli

# Long enough that the server sees the run before it ends (1–5 ms an epoch on one thread).
EPOCHS = 4000
SERVER_START_S = 90
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, body: dict | None = None):
    """GET (or POST a JSON body) on the server's data API; None while it is not answering."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def scalars(base: str, run: str, tag: str) -> list[list[float]]:
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return get(base, f"/data/plugin/scalars/scalars?{query}") or []


def last_step(base: str, run: str, tag: str) -> int | None:
    points = scalars(base, run, tag)
    return points[-1][1] if points else None


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("tensorboard")
    program = [str(exe)] if exe.exists() else [shutil.which("tensorboard") or "tensorboard"]
    return program + [
        "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
        "--reload_interval", "1",
    ]  # fmt: skip


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_tensorboard_follows_a_live_run_and_lists_its_hparams(tmp_path):
    logdir, port = tmp_path / "runs", free_port()
    base = f"http://127.0.0.1:{port}"
    run_dir = logdir / "live"
    run_name = "live/tb"  # TensorBoard names a run by its folder under --logdir
    server = run = None
    try:
        server = subprocess.Popen(
            tensorboard_command(logdir, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + SERVER_START_S
        while get(base, "/data/runs") is None:
            assert server.poll() is None, "tensorboard exited"
            assert time.monotonic() < deadline, "tensorboard did not answer"
            time.sleep(0.5)
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ntklab",
                f"epochs={EPOCHS}",
                "data.n=16",
                "data.d=8",
                "model.width=32",
                "threads=1",
                f"hydra.run.dir={run_dir}",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen = False
        deadline = time.monotonic() + 240
        while not seen and run.poll() is None and time.monotonic() < deadline:
            tags = (get(base, "/data/plugin/scalars/tags") or {}).get(run_name, {})
            if "loss/train" in tags and "ntk/lambda_min" in tags:
                points = scalars(base, run_name, "ntk/lambda_min")
                # The server holds some epochs of a run that has not finished.
                seen = bool(points) and run.poll() is None
                live_step = points[-1][1] if points else None
            time.sleep(0.5)
        assert seen, "the server never showed loss/train and ntk/lambda_min during the run"
        assert live_step < EPOCHS

        assert run.wait(timeout=300) == 0, run.stderr.read()
        deadline = time.monotonic() + 60
        while True:
            last_step = [
                scalars(base, run_name, t)[-1][1] for t in ("loss/train", "ntk/lambda_min")
            ]
            if last_step == [EPOCHS, EPOCHS] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert last_step == [EPOCHS, EPOCHS]

        experiment = get(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"model.width", "optim.lr", "model.negative_slope", "data.n", "data.d", "optim",
                "seed"} <= names  # fmt: skip
        groups = get(base, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [],
            "startIndex": 0, "sliceSize": 10,
        })["sessionGroups"]  # fmt: skip
        (session,) = [s for g in groups for s in g["sessions"] if s["name"] == run_name]
        hparams = groups[0]["hparams"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert hparams["model.width"] == 32 and hparams["data.n"] == 16
        assert hparams["optim"] == "gd"
        assert hparams["optim.lr"] == pytest.approx(summary["hparams"]["lr"])
        assert session["status"] == "STATUS_SUCCESS"
        final = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert final["loss/train"] == pytest.approx(summary["final"]["loss/train"], rel=1e-6)
    finally:
        stop(run)
        stop(server)


def wait_for(what: str, probe, timeout: float = 120):
    """probe() until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"the server never showed {what}"
        time.sleep(0.5)


def serve(logdir: Path):
    """A TensorBoard server on `logdir` (a context manager); its base URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        tensorboard_command(logdir, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for("its run list", lambda: get(base, "/data/runs") is not None, SERVER_START_S)
        yield base
    finally:
        stop(server)


def hparams_columns(base: str) -> list[dict]:
    """The HParams experiment's hyper-parameters, in the dashboard's column order."""
    body = {"experimentName": ""}
    return wait_for(
        "the HParams experiment",
        lambda: (get(base, "/data/plugin/hparams/experiment", body) or {}).get("hparamInfos"),
    )


@pytest.mark.slow
def test_a_sweep_reads_at_a_glance_run_names_and_the_hparams_columns(tmp_path):
    """A 3-width sweep and a single run under one logdir, served as the README's command serves
    them: each run named by its overrides; the HParams table led by the swept key, its metrics
    by display name, its trials by the overrides that name them."""
    tiny = ["epochs=5", "data.n=16", "data.d=8", "threads=1"]
    sweep = run_cli("-m", "model.width=16,32,64", *tiny, cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    single = run_cli("model=linear", *tiny, cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    logdir = tmp_path / "runs"
    with contextlib.contextmanager(serve)(logdir) as base:
        runs = wait_for("four runs", lambda: (r := get(base, "/data/runs")) and len(r) == 4 and r)
        jobs = sorted(r for r in runs if r.startswith("multirun/"))
        assert [r.split("/")[-2] for r in jobs] == [
            f"data.d=8,data.n=16,epochs=5,model.width={m},threads=1" for m in (16, 32, 64)
        ]
        (one,) = [r for r in runs if not r.startswith("multirun/")]
        assert one.endswith("_data.d=8,data.n=16,epochs=5,model=linear,threads=1/tb")
        # The columns TensorBoard takes from one run: those it varied first, then by name.
        columns = hparams_columns(base)
        varied = [c["name"] for c in columns if c.get("differs")]
        assert [c["name"] for c in columns[: len(varied)]] == sorted(varied)
        full = get(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
        shown = {m["name"]["tag"]: m.get("displayName") for m in full["metricInfos"]}
        assert shown["loss/train"] == "loss" and shown["ntk/lambda_min"] == "λ_min(K)"
        groups = get(base, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [],
            "startIndex": 0, "sliceSize": 10,
        })["sessionGroups"]  # fmt: skip
        trials = sorted(g["name"].split(" · ")[0] for g in groups)
        assert trials == [
            "d=8,n=16,epochs=5,model=linear,threads=1", "width=16", "width=32", "width=64",
        ]  # fmt: skip
        assert sorted(g["hparams"]["model.width"] for g in groups) == [16, 32, 64, 512]
    (sweep_dir,) = (logdir / "multirun").glob("*/*")
    with contextlib.contextmanager(serve)(sweep_dir) as base:
        names = [c["name"] for c in hparams_columns(base)]
        assert names[0] == "model.width" and names[1:] == sorted(names[1:])
        assert {"model", "data.n", "optim.lr", "seed"} <= set(names)
