"""A run owns its folder: the lock, the marker, nothing written by a refused command, resume
semantics (settings, data, records, training longer) and a true summary however a run ends.
In-process through the compose API and run_experiment where the CLI is not the point."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from ntklab.cli import BAD_INPUT, one_line
from ntklab.config import ConfigError, load
from ntklab.experiment import RunError, run_experiment
from ntklab.rundir import MARKER, FolderLock, RunFolder, RunFolderError

from conftest import compose_config

SMALL = ["data.n=12", "data.d=4", "model.width=16", "dtype=float64"]
TIME_KEYS = ("wall_time_s", "total_time_s")


def run(folder: Path, *overrides: str) -> dict:
    """The run `ntklab SMALL OVERRIDES hydra.run.dir=FOLDER` would be, in-process (a CSV's
    n and d come from the file)."""
    small = SMALL[2:] if "data=csv" in overrides else SMALL
    return run_experiment(load(compose_config(*small, *overrides)), folder, progress=False)


def refusal(folder: Path, *overrides: str) -> str:
    with pytest.raises(BAD_INPUT) as info:
        run(folder, *overrides)
    return one_line(info.value)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes: what a refused command must leave unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def same_run(a: Path, b: Path) -> None:
    """Two folders hold the same run: records bitwise, summaries but for wall times."""
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    sa, sb = (RunFolder(x).read_summary() for x in (a, b))
    assert {k: v for k, v in sa.items() if k not in TIME_KEYS} == {
        k: v for k, v in sb.items() if k not in TIME_KEYS
    }
    wa, wb = (torch.load(x / "checkpoints/last.pt", weights_only=True)["W"] for x in (a, b))
    assert torch.equal(wa, wb)


def test_a_held_folder_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    run(folder, "epochs=2")
    with FolderLock(folder):  # this process stands for a run still going in the folder
        for args in ([], ["resume=true"], ["overwrite=true"]):
            message = refusal(folder, "epochs=2", *args)
            assert f"process {os.getpid()} is running in this folder" in message


def test_a_foreign_folder_is_never_written_or_cleared(tmp_path):
    folder = tmp_path / "p"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "model.bin").write_text("x")
    before = snapshot(folder)
    for args in ([], ["resume=true"], ["overwrite=true"]):
        message = refusal(folder, "epochs=2", *args)
        assert "checkpoints/model.bin" in message and "did not create" in message
    assert snapshot(folder) == before and not (folder / MARKER).exists()


def test_overwrite_clears_only_what_ntklab_wrote(tmp_path):
    folder = tmp_path / "run"
    run(folder, "epochs=2")
    (folder / "notes.txt").write_text("mine")
    (folder / "checkpoints" / "model.bin").write_text("mine too")
    run(folder, "epochs=3", "overwrite=true", "seed=1")
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "checkpoints" / "model.bin").read_text() == "mine too"
    assert [r["step"] for r in RunFolder(folder).records()] == [0, 1, 2, 3]


def test_a_refused_command_changes_nothing_on_disk(tmp_path):
    folder = tmp_path / "run"
    run(folder, "epochs=3")
    before = snapshot(folder)
    for args in (["epochs=2000"], ["epochs=5", "optim.lr=0.2", "resume=true"],
                 ["epochs=2", "resume=true"], ["epochs=3", "model.width=0"]):  # fmt: skip
        refusal(folder, *args)
        assert snapshot(folder) == before, args


def test_resume_refuses_every_changed_key_finished_runs_included(tmp_path):
    folder = tmp_path / "run"
    run(folder, "epochs=3")
    for key, value in [("optim.lr", "0.2"), ("dtype", "float32"), ("seed", "2")]:
        message = refusal(folder, "epochs=3", f"{key}={value}", "resume=true")
        assert message.startswith(f"{key}=") and "was started with" in message
    assert "cannot be continued" not in refusal(folder, "epochs=2", "resume=true")
    assert "not shortened" in refusal(folder, "epochs=2", "resume=true")
    unchanged = run(folder, "epochs=3", "resume=true")  # the same settings: nothing to do
    assert unchanged["status"] == "completed" and unchanged["epochs_run"] == 3


@pytest.mark.parametrize(
    "every, checkpoint_every",
    [(1, 2), (4, 4), (3, 2), (3, 0)],
    ids=["last-epoch-tracked-anyway", "checkpoint-on-a-tracked-epoch", "extend.pt", "rerun"],
)
def test_training_a_finished_run_longer_equals_a_longer_run(tmp_path, every, checkpoint_every):
    """Resumed with a larger `epochs`, a completed run continues to it, bitwise equal to a run
    launched with that count: from last.pt, from the kept extend.pt, or run again."""
    settings = [f"ntk.every={every}", f"checkpoint_every={checkpoint_every}", "optim=sgd",
                "optim.batch_size=4", "optim.momentum=0.9", "optim.lr=0.2"]  # fmt: skip
    short, longer = tmp_path / "short", tmp_path / "longer"
    run(short, "epochs=7", *settings)
    run(short, "epochs=12", *settings, "resume=true")
    run(longer, "epochs=12", *settings)
    same_run(short, longer)


def test_a_diverged_run_is_not_trained_further(tmp_path):
    folder = tmp_path / "run"
    assert run(folder, "epochs=30", "optim.lr=1000")["status"] == "diverged"
    assert "cannot be trained further" in refusal(
        folder, "epochs=40", "optim.lr=1000", "resume=true"
    )


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_resume_refuses_incomplete_records(tmp_path, damage):
    folder = tmp_path / "run"
    run(folder, "epochs=6", "checkpoint_every=2")
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    if damage == "deleted":
        (folder / "metrics.jsonl").unlink()
    else:  # as if the first records were lost
        (folder / "metrics.jsonl").write_text("\n".join(lines[3:]) + "\n")
    (folder / "summary.json").unlink()  # as if killed at the end
    message = refusal(folder, "epochs=6", "checkpoint_every=2", "resume=true")
    assert "metrics.jsonl" in message and "overwrite=true" in message
    finished = tmp_path / "finished"
    run(finished, "epochs=4")
    (finished / "metrics.jsonl").write_text("")
    assert "reports 4 epochs but" in refusal(finished, "epochs=4", "resume=true")


def test_resume_refuses_other_data(tmp_path):
    csv = tmp_path / "data.csv"
    rows = [[i / 10, (i % 3) / 5, (-1) ** i * 0.3] for i in range(12)]
    csv.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    args = ["data=csv", f"data.path={csv}", "epochs=4", "checkpoint_every=2"]
    folder = tmp_path / "run"
    summary = run(folder, *args)
    assert summary["data"]["n"] == 12 and len(summary["data"]["sha256_file"]) == 64
    (folder / "summary.json").unlink()
    rows[5][1] = 0.9  # the same shape, other numbers
    csv.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    assert "these data differ" in refusal(folder, *args, "resume=true")
    csv.write_text("\n".join(",".join(map(str, r)) for r in rows[:9]) + "\n")  # fewer rows
    assert f"data.path={csv}: these data differ" in refusal(folder, *args, "resume=true")


def test_a_damaged_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "run"
    run(folder, "epochs=4", "checkpoint_every=2")
    (folder / "summary.json").unlink()
    torch.save({"epoch": 2, "callbacks": {}}, folder / "checkpoints" / "last.pt")
    message = refusal(folder, "epochs=4", "checkpoint_every=2", "resume=true")
    assert "last.pt" in message and "overwrite=true" in message


def test_an_unexpected_error_leaves_a_true_summary(tmp_path, monkeypatch):
    """A full disk while writing a checkpoint: status failed, the error, the traceback in
    ntklab.log, no temp file left."""
    import ntklab.rundir

    real, calls = ntklab.rundir.os.replace, []

    def full(src, dst):
        calls.append(dst)
        if str(dst).endswith("last.pt") and len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(ntklab.rundir.os, "replace", full)
    folder = tmp_path / "run"
    with pytest.raises(RunError, match="OSError: .*No space left on device"):
        run(folder, "epochs=8", "checkpoint_every=2")
    monkeypatch.undo()
    summary = RunFolder(folder).read_summary()
    assert summary["status"] == "failed" and summary["error"] == "OSError"
    assert "No space left" in summary["message"] and summary["epochs_run"] > 0
    assert "Traceback" in (folder / "ntklab.log").read_text()
    assert not list(folder.rglob(".*.tmp"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=csv", "data.path={zeros}"], "K_0 has no usable spectrum"),
        (["data=csv", "data.path={huge}", "dtype=float64"], "K_0 has no usable spectrum"),
        (["data.n=2000000", "data.d=1"], "data.n=2000000: the dense kernel and its eigvalsh need"),
        (["model.alpha=1e200"], "model.alpha=1e+200: must lie in [1e-06, 1e+06]"),
        (["model.alpha=1e-200"], "model.alpha=1e-200: must lie in [1e-06, 1e+06]"),
        (["seed=20000000000000000000"], "seed=20000000000000000000: must be an integer in"),
    ],
    ids=[
        "zero-features",
        "overflowing-kernel",
        "kernel-too-big",
        "alpha-huge",
        "alpha-tiny",
        "seed-out-of-range",
    ],  # fmt: skip
)
def test_numeric_edge_cases_are_refused_up_front(tmp_path, overrides, message):
    (tmp_path / "zeros.csv").write_text("0,0,1\n0,0,2\n0,0,3\n")
    (tmp_path / "huge.csv").write_text("1e300,0,1\n0,1e300,2\n1,1,3\n")
    args = [o.format(zeros=tmp_path / "zeros.csv", huge=tmp_path / "huge.csv") for o in overrides]
    with pytest.raises((*BAD_INPUT, ConfigError)) as info:
        run(tmp_path / "run", "epochs=2", *args)
    assert message in one_line(info.value)
    assert not (tmp_path / "run").exists()


def test_lr_find_refuses_a_zero_kernel(tmp_path):
    from ntklab.config import LRFindConfig
    from ntklab.lr_find import find_lr

    (tmp_path / "zeros.csv").write_text("0,0,1\n0,0,2\n0,0,3\n")
    cfg = compose_config("data=csv", f"data.path={tmp_path / 'zeros.csv'}", name="lr_find")
    with pytest.raises(BAD_INPUT, match="K_0 has no usable spectrum"):
        find_lr(load(cfg, LRFindConfig))


def test_the_run_folder_records_the_command(tmp_path):
    folder = tmp_path / "run"
    run(folder, "epochs=2")
    assert (folder / MARKER).is_file() and json.loads((folder / MARKER).read_text())["created"]
    assert "epochs: 2" in (folder / ".hydra" / "config.yaml").read_text()
    assert "run started" in (folder / "ntklab.log").read_text()


def test_a_refused_run_in_a_new_folder_leaves_no_folder(tmp_path):
    with pytest.raises(RunFolderError):
        run(tmp_path / "new" / "run", "resume=true")
    assert not (tmp_path / "new" / "run").exists()
