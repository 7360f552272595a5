"""The `ntklab` command around its runs, through the real CLI: two commands racing for one
folder (made deterministic with a barrier), unique default folders, sweeps that would rerun,
share or escape folders, signals while starting, the printed resume command, unwritable output
folders, and the exit statuses of all of these."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from ntklab.launch import check_output_folder, hydra_value, resume_command

from conftest import read_metrics, read_summary, run_cli

TINY = ["epochs=3", "data.n=8", "data.d=4", "model.width=8"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# The real command, with its folder lock behind a barrier: each process waits for BARRIER/go
# before taking the lock; the winner writes BARRIER/won-PID and holds the lock until
# BARRIER/release exists, so the loser meets a held folder every time.
RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import ntklab.rundir as rundir
    barrier = Path(sys.argv.pop(1))
    real_enter = rundir.FolderLock.__enter__
    def enter(self):
        while not (barrier / "go").exists():
            time.sleep(0.01)
        held = real_enter(self)
        (barrier / f"won-{os.getpid()}").write_text("")
        while not (barrier / "release").exists():
            time.sleep(0.01)
        return held
    rundir.FolderLock.__enter__ = enter
    from ntklab.__main__ import main
    sys.argv[0] = "ntklab"
    main()
    """
)


@pytest.mark.slow
def test_two_runs_racing_for_one_folder(tmp_path):
    barrier, folder = tmp_path / "barrier", tmp_path / "run"
    barrier.mkdir()
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                str(barrier),
                *TINY,
                f"seed={seed}",
                f"hydra.run.dir={folder}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )  # fmt: skip
        for seed in (1, 2)
    ]
    (barrier / "go").write_text("")
    deadline = time.monotonic() + 120
    while not list(barrier.glob("won-*")) and time.monotonic() < deadline:
        assert all(r.poll() is None for r in racers), [r.communicate() for r in racers]
        time.sleep(0.02)
    (winner,) = [int(p.name[4:]) for p in barrier.glob("won-*")]
    loser = next(r for r in racers if r.pid != winner)
    _, err = loser.communicate(timeout=120)
    assert loser.returncode == 2 and "Traceback" not in err
    assert f"process {winner} is running in this folder" in err
    (barrier / "release").write_text("")
    done = next(r for r in racers if r.pid == winner)
    assert done.wait(timeout=120) == 0
    steps = [r["step"] for r in read_metrics(folder)]
    assert steps == [0, 1, 2, 3]  # one run's records, not two interleaved
    seed = read_summary(folder)["hparams"]["seed"]
    assert f"seed={seed}" in (folder / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_default_folders_do_not_collide_and_a_refusal_leaves_none(tmp_path):
    unique = "hydra.run.dir=${ntklab_unique:runs/same}"  # the default's resolver, fixed name
    first, second = (run_cli(*TINY, unique, cwd=tmp_path) for _ in range(2))
    assert first.returncode == second.returncode == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["same", "same-2"]
    refused = run_cli(*TINY, "model.width=0", cwd=tmp_path / "runs")
    assert refused.returncode == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["same", "same-2"]


def test_the_printed_resume_command_parses_for_any_folder_name():
    for folder in ["/tmp/plain", "/tmp/ünïcode", "/tmp/a b", "/tmp/it's", "/tmp/x(1)"]:
        line = resume_command(folder, multirun=False)
        words = __import__("shlex").split(line)
        (parsed,) = OverridesParser.create().parse_overrides([words[-1]])
        assert parsed.value() == folder, (folder, line)
    assert hydra_value("/tmp/plain") == "/tmp/plain"


def test_an_unwritable_output_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    assert "is a file, not a folder" in check_output_folder([f"hydra.run.dir={tmp_path}/afile"])
    monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result((4096,) * 10))
    monkeypatch.setattr(os, "statvfs", lambda p: type("S", (), {"f_bavail": 0, "f_frsize": 4096}))
    assert "is full" in check_output_folder([f"hydra.run.dir={tmp_path}/new"])
    assert check_output_folder(["-m", f"hydra.sweep.dir={tmp_path}/afile"]).startswith(
        f"hydra.sweep.dir={tmp_path}/afile: is a file"
    )


@pytest.mark.slow
def test_a_file_as_run_folder_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    done = run_cli(*TINY, f"hydra.run.dir={tmp_path / 'afile'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    expected = f"hydra.run.dir={tmp_path / 'afile'}: is a file, not a folder; choose a folder"
    assert done.stderr.strip() == f"ntklab: error: {expected}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_starting_is_one_line(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ntklab", *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    time.sleep(0.3)  # inside the imports
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert f"interrupted by {sig.name} while starting" in err
    assert not (tmp_path / "run").exists()


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("-m", *TINY, *args, f"hydra.sweep.dir={tmp_path / 'sweep'}")


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_finished_sweep_is_not_rerun_silently(tmp_path):
    assert sweep(tmp_path, "model.width=8,16").returncode == 0
    before = tree(tmp_path / "sweep")
    again = sweep(tmp_path, "model.width=8,16")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already holds a sweep (2 job folders with runs)" in again.stderr
    assert tree(tmp_path / "sweep") == before
    resumed = sweep(tmp_path, "model.width=8,16", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("nothing to resume") == 2


@pytest.mark.slow
def test_a_sweep_whose_jobs_are_refused_exits_non_zero_and_says_so(tmp_path):
    assert sweep(tmp_path, "model.width=8,16").returncode == 0
    # resumed on the joblib launcher, whose preset runs one torch thread per job: each job is
    # refused (its run used torch's default), its finished run left alone
    refused = sweep(tmp_path, "model.width=8,16", "resume=true", "launcher=joblib")
    assert refused.returncode == 1, refused.stderr
    assert "2 of 2 jobs refused" in refused.stderr
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert report.count("**refused**: threads=1: the run in") == 2, report
    for job in (tmp_path / "sweep").glob("*model.width=*"):
        assert read_summary(job)["status"] == "completed"


@pytest.mark.slow
def test_no_swept_value_places_a_job_outside_the_sweep(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    done = sweep(tmp_path, "data=csv", "data.path=../../../x.csv,../y.csv")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "would lie outside the sweep folder" in done.stderr
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_reports_what_finished(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ntklab", "-m", "epochs=4000", "data.n=8", "data.d=4",
         "model.width=8", "ntk.every=0", "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    first = tmp_path / "sweep" / "data.d=4,data.n=8,epochs=4000,model.width=8,ntk.every=0,seed=0"
    deadline = time.monotonic() + 120
    records = first / "metrics.jsonl"
    while not (records.exists() and records.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first job trains (its first record is written)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "sweep interrupted by SIGINT: 0 of 3 jobs completed" in err
    assert "resume=true hydra.sweep.dir=" in err
    assert read_summary(first)["status"] == "interrupted"
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "interrupted" in report
    outcomes = [json.loads(x) for x in (tmp_path / "sweep" / ".ntklab-launch.jsonl").open()]
    assert [o["status"] for o in outcomes] == ["interrupted", "interrupted", "interrupted"]


@pytest.mark.slow
def test_a_killed_joblib_worker_fails_its_job_and_the_others_finish(tmp_path):
    from ntklab.rundir import _holder_pid

    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ntklab", "-m", "launcher=joblib", "hydra.launcher.n_jobs=2",
         "epochs=1500", "data.n=8", "data.d=4", "model.width=8", "ntk.every=0", "seed=0,1",
         f"hydra.sweep.dir={sweep_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    jobs = [sweep_dir / f"data.d=4,data.n=8,epochs=1500,model.width=8,ntk.every=0,seed={s}"
            for s in (0, 1)]  # fmt: skip
    victim, deadline = None, time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:
        if (jobs[0] / "metrics.jsonl").exists() and (jobs[0] / "metrics.jsonl").stat().st_size:
            victim = _holder_pid(jobs[0])  # the worker process running the first job
        time.sleep(0.05)
    assert victim is not None, "the first job never started"
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    killed, other = (read_summary(job) for job in jobs)
    assert killed["status"] == "failed" and "killed" in killed["message"]
    assert other["status"] == "completed" and other["epochs_run"] == 1500
    assert "1 of 2 jobs failed" in err
    assert "**failed**" in (sweep_dir / "report.md").read_text()
