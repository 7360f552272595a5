"""What the command says, through the real CLI: every message one `ntklab: ...` line on stderr
through Python logging (so a run's ntklab.log keeps its own), warnings without Python's source
line, and a sweep preset without -m refused with the command that runs it."""

from __future__ import annotations

from conftest import run_cli

TINY = ["epochs=3", "data.n=8", "data.d=4", "model.width=8"]


def test_a_warning_is_one_line_on_stderr_and_in_the_runs_log(tmp_path):
    proc = run_cli(*TINY, "ntk=ntvp", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    (warning,) = [line for line in lines if "K is never formed" in line]
    assert warning.startswith("ntklab: warning: ntk.method=ntvp")
    assert all(line.startswith("ntklab: ") for line in lines), lines
    assert "UserWarning" not in proc.stderr and "getattr(" not in proc.stderr
    log = (tmp_path / "ntklab.log").read_text()
    assert "WARNING warning: ntk.method=ntvp: K is never formed" in log


def test_a_sweep_preset_without_multirun_is_refused_with_the_command_to_run(tmp_path):
    proc = run_cli("experiment=width_sweep", "epochs=3", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "ntklab: error: experiment=width_sweep: is a sweep "
        "(model.width=16,64,256,1024,4096,16384); add -m to run its jobs: "
        "ntklab -m experiment=width_sweep epochs=3"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing written, not even runs/
    proc = run_cli("experiment=width_sweep", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "width" in proc.stdout  # printing its config is fine
