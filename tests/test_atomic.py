"""Atomic writes: a process killed between writing the temp file and renaming it leaves the
previous file whole, and a resumed run ignores (and removes) the half-done temp file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from ntklab.control import CheckpointError, load_checkpoint
from ntklab.rundir import RunFolder, atomic_torch_save, atomic_write_text, temp_path

from conftest import run_cli

RUN = ["epochs=24", "data.n=32", "model.width=64", "optim=sgd", "optim.batch_size=8",
       "optim.momentum=0.9", "optim.lr=0.2", "checkpoint_every=5"]  # fmt: skip

# Runs the real CLI, but SIGKILLs itself in atomic_torch_save between the temp write and the
# rename of the second last.pt (epoch 10): the worst moment for a checkpoint.
KILL_BEFORE_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    real_replace, writes = os.replace, []
    def replace(src, dst):
        if str(dst).endswith("last.pt"):
            writes.append(dst)
            if len(writes) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    os.replace = replace
    from ntklab.__main__ import main
    sys.argv = ["ntklab", *sys.argv[1:]]
    main()
    """
)


# One thread per run, as conftest.run_cli does for the plain CLI runs.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
cli = run_cli


def test_text_write_killed_before_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_text(path, '{"status": "interrupted"}\n')

    def die(src, dst):
        raise KeyboardInterrupt  # stands for the process dying at this instant

    monkeypatch.setattr("ntklab.rundir.os.replace", die)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, '{"status": "completed"}\n')
    assert json.loads(path.read_text()) == {"status": "interrupted"}
    assert temp_path(path).exists()  # the new bytes never replaced the file
    monkeypatch.undo()
    atomic_write_text(path, '{"status": "completed"}\n')
    assert json.loads(path.read_text()) == {"status": "completed"}
    assert not temp_path(path).exists()


def test_checkpoint_loader_rejects_a_torn_file_with_a_clear_message(tmp_path):
    last = RunFolder(tmp_path).last_checkpoint
    last.parent.mkdir()
    atomic_torch_save({"W": torch.ones(2, 3), "epoch": 4}, last)
    assert load_checkpoint(last)["epoch"] == 4
    last.write_bytes(last.read_bytes()[:100])  # torn by a non-atomic tool
    with pytest.raises(CheckpointError, match="last.pt cannot be loaded .*overwrite=true"):
        load_checkpoint(last)


@pytest.mark.slow
def test_sigkill_between_temp_write_and_rename(tmp_path):
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    assert cli(*RUN, f"hydra.run.dir={reference}").returncode == 0

    cmd = [sys.executable, "-c", KILL_BEFORE_RENAME, *RUN, f"hydra.run.dir={run_dir}"]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    last, tmp = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / ".last.pt.tmp"
    assert tmp.exists()  # the new checkpoint was written but never renamed
    assert torch.load(tmp, weights_only=True)["epoch"] == 10
    assert torch.load(last, weights_only=True)["epoch"] == 5  # the previous one, whole

    # Worse still: a temp file torn half-way. The loader never reads temp files.
    tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
    resumed = cli(*RUN, f"hydra.run.dir={run_dir}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert "from epoch 5" in resumed.stdout + resumed.stderr
    assert not tmp.exists()
    assert (run_dir / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()


# Runs the real CLI, but the disk is "full" at the third checkpoint rename.
FULL_DISK = textwrap.dedent(
    """
    import errno, os, sys
    real_replace, writes = os.replace, []
    def replace(src, dst):
        if str(dst).endswith("last.pt"):
            writes.append(dst)
            if len(writes) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)
    os.replace = replace
    from ntklab.__main__ import main
    sys.argv = ["ntklab", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.slow
def test_a_failed_run_is_one_line_exit_1_and_a_true_summary(tmp_path):
    cmd = [sys.executable, "-c", FULL_DISK, *RUN, f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("ntklab: failed: OSError: [Errno 28] No space left on device")
    assert done.stderr.count("\n") == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["epochs_run"] == 15
    assert "Traceback" in (tmp_path / "ntklab.log").read_text()
    assert not list(tmp_path.rglob(".*.tmp"))
