"""Sweeps on a real SLURM cluster (scripts/slurm-localhost.sh starts a one-node one): a job
array whose every task completes with its report, a job stopped the way SLURM preempts and
the sweep resumed, a job requeued by SLURM continuing its run; each final record equal to an
uninterrupted run's. Skipped, saying why, where no cluster answers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_metrics, read_summary, run_cli


def _cluster() -> str | None:
    """Why the SLURM tests cannot run here; None when a cluster answers."""
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not found): run scripts/slurm-localhost.sh start"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return "SLURM installed but no controller answers: scripts/slurm-localhost.sh start"
    return None


CLUSTER = _cluster()


# A CPU-only node with 2 cores: one core and 1 GB per job, no GPU.
SLURM = ["launcher=submitit_slurm", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]  # fmt: skip
DATA = ["data.n=32", "data.d=4"]


def sacct_states(array_id: str) -> dict[str, str]:
    """The state of each task of a job array, as the accounting database reports it."""
    states: dict[str, str] = {}
    for _ in range(60):  # records reach slurmdbd a few seconds after a job ends
        out = subprocess.run(
            ["sacct", "-j", array_id, "-X", "--parsable2", "--noheader", "--format=JobID,State"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        states = dict(line.split("|", 1) for line in out.splitlines() if line)
        if states and all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states.values()):
            break
        time.sleep(0.5)
    return states


def array_ids(sweep: Path) -> list[str]:
    """The SLURM job arrays a sweep submitted (submitit's folders, `<array>_<task>`)."""
    names = [p.name for p in (sweep / ".submitit").iterdir()]
    return sorted({name.split("_")[0] for name in names if re.fullmatch(r"\d+_\d+", name)})


def job(sweep: Path, *parts: str) -> Path:
    (found,) = [p for p in sweep.iterdir() if all(x in p.name.split(",") for x in parts)]
    return found


def test_the_cluster_script_lints_clean():
    """scripts/slurm-localhost.sh passes shellcheck (installed with the test extras)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm-localhost.sh"
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(CLUSTER is not None, reason=str(CLUSTER))
def test_a_width_sweep_as_a_job_array(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *SLURM, *DATA, "epochs=20", "model.width=16,64,256",
                   f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "sweep report →" in done.stderr
    (array,) = array_ids(sweep)
    states = sacct_states(array)
    assert states == {f"{array}_{i}": "COMPLETED" for i in range(3)}, states
    for width in (16, 64, 256):
        assert read_summary(job(sweep, f"model.width={width}"))["status"] == "completed"
    report = (sweep / "report.md").read_text()
    assert "3 jobs: 3 completed" in report and "Log-log slopes against model.width" in report


def uninterrupted(tmp_path: Path, *args: str) -> list[dict]:
    """The records of the same job run without interruption (one thread, as the SLURM jobs)."""
    folder = tmp_path / "reference"
    done = run_cli(*args, "threads=1", f"hydra.run.dir={folder}")
    assert done.returncode == 0, done.stderr
    return read_metrics(folder)


def wait_for_job(sweep: Path, part: str, timeout: float = 180) -> Path:
    """The folder of the sweep's job named with `part`, once the job has made it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in sweep.glob("*") if part in p.name.split(",")]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no job folder with {part} in {sweep}")


def wait_for_records(folder: Path, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = folder / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{folder} never logged {count} epochs")


def start_sweep(sweep: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ntklab", "-m", *SLURM, *args, f"hydra.sweep.dir={sweep}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


LONG = [*DATA, "epochs=8000", "ntk.every=50", "checkpoint_every=100"]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(CLUSTER is not None, reason=str(CLUSTER))
def test_a_preempted_job_is_resumed_to_the_same_records(tmp_path):
    """SIGTERM as SLURM sends it before preempting: the job saves its checkpoint, the sweep ends
    with its report and the resume command; resumed, the job ends as if never stopped."""
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, *LONG, "model.width=16,64")
    folder = wait_for_job(sweep, "model.width=64")
    wait_for_records(folder, 300)
    (array,) = array_ids(sweep)
    subprocess.run(["scancel", "--signal=TERM", f"{array}_1"], check=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "sweep interrupted by SIGTERM" in err and "resume=true" in err
    assert read_summary(folder)["status"] == "interrupted"
    resumed = run_cli("-m", *SLURM, *LONG, "model.width=16,64", "resume=true",
                      f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert read_summary(folder)["status"] == "completed"
    assert read_metrics(folder) == uninterrupted(tmp_path, *LONG, "model.width=64")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(CLUSTER is not None, reason=str(CLUSTER))
def test_a_requeued_job_continues_its_run(tmp_path):
    """`scontrol requeue` (what PreemptMode=REQUEUE does): SLURM stops the job and starts it
    again; it continues from its checkpoint and the sweep completes with nothing to resume."""
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, *LONG, "model.width=32")
    folder = wait_for_job(sweep, "model.width=32")
    wait_for_records(folder, 300)
    (task,) = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_0)?", p.name)]
    subprocess.run(["scontrol", "requeue", task], check=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert read_summary(folder)["status"] == "completed"
    assert read_metrics(folder) == uninterrupted(tmp_path, *LONG, "model.width=32")
