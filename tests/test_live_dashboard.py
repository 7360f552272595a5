"""A real TensorBoard server follows a real training run while it is still going."""

from __future__ import annotations

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
        assert {"width", "lr", "negative_slope", "n", "d", "optim", "seed"} <= names
        groups = get(base, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [],
            "startIndex": 0, "sliceSize": 10,
        })["sessionGroups"]  # fmt: skip
        (session,) = [s for g in groups for s in g["sessions"] if s["name"] == run_name]
        hparams = groups[0]["hparams"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert hparams["width"] == 32 and hparams["n"] == 16 and hparams["optim"] == "gd"
        assert hparams["lr"] == pytest.approx(summary["hparams"]["lr"])
        assert session["status"] == "STATUS_SUCCESS"
        final = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert final["loss/train"] == pytest.approx(summary["final"]["loss/train"], rel=1e-6)
    finally:
        stop(run)
        stop(server)
