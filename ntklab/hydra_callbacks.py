"""Hydra callback for sweeps: refuses jobs that would share a folder, reports when a sweep ends."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Job folders are checked only when they are named after the overrides (conf/config.yaml).
OVERRIDE_SUBDIR = "${hydra.job.override_dirname}"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def planned_folders(config: DictConfig) -> list[str] | None:
    """The job folder names the basic sweeper will use, in order (None: not predictable here)."""
    hydra = config.hydra
    subdir = OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir")
    if subdir != OVERRIDE_SUBDIR or hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(hydra.overrides.task)
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    dirname = hydra.job.config.override_dirname
    exclude = set(dirname.exclude_keys)
    folders = []
    for job in (job for batch in batches for job in batch):
        lines = sorted(line for line in job if line.split("=", 1)[0].lstrip("+~") not in exclude)
        folders.append(dirname.item_sep.join(lines).replace("=", dirname.kv_sep))
    return folders


def shared_folders(folders: list[str]) -> list[tuple[str, str]]:
    """Pairs of jobs whose folders are the same, or one inside the other (a '/' in a value)."""
    clashes = []
    ordered = sorted(folders)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a == b or b.startswith(a.rstrip("/") + "/"):
            clashes.append((a, b))
    return clashes


class SweepReport(Callback):
    """At the start of a multirun: stop if two jobs would write into the same folder.
    At its end: write the sweep report (ntklab.report) and exit non-zero if a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folders = planned_folders(config)
        clashes = shared_folders(folders) if folders else []
        if clashes:
            a, b = clashes[0]
            where = f"'{a}' twice" if a == b else f"'{b}' inside '{a}'"
            print(
                f"ntklab: error: two jobs of this sweep would write into one folder ({where}); "
                "remove the repeated override value, or keep the key out of "
                "hydra.job.config.override_dirname.exclude_keys",
                file=sys.stderr,
            )
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ntklab.report import ReportError, find_jobs, group, write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            sweep = group(find_jobs(sweep_dir))
        except ReportError as err:
            print(f"ntklab: no sweep report: {err}", file=sys.stderr)
            return
        path = write_report(sweep_dir, sweep)
        print(f"ntklab: sweep report → {path}", file=sys.stderr)
        failed = [job.name for job in sweep.jobs if job.status == "failed"]
        if failed:
            print(
                f"ntklab: {len(failed)} of {len(sweep.jobs)} jobs failed: "
                + ", ".join(failed)
                + f" (their errors are in {path.name} and their job folders)",
                file=sys.stderr,
            )
            sys.exit(1)
        diverged = [job.name for job in sweep.jobs if job.status == "diverged"]
        code = int(config.get("divergence_exit_code", 0) or 0)
        if diverged and code:
            print(f"ntklab: {len(diverged)} jobs diverged: " + ", ".join(diverged), file=sys.stderr)
            sys.exit(code)
