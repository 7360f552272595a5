"""Hydra callback for sweeps: refuses jobs that would share a folder, reports when a sweep ends."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ntklab.rundir import Status
from ntklab.sweep import override_key

# Job folders are checked only when they are named after the overrides (conf/config.yaml),
# and only for Hydra's basic sweeper, whose jobs are every combination of the listed values.
OVERRIDE_SUBDIR = "${hydra.job.override_dirname}"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(arguments: list[str]) -> list[list[str]]:
    """Each job's overrides ("key=value"), as the basic sweeper expands a command line: every
    combination of the listed values, a key given twice taking its last value."""
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def planned_folders(config: DictConfig) -> list[str] | None:
    """The job folder names the basic sweeper will use, in order (None: not predictable here)."""
    hydra = config.hydra
    subdir = OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir")
    if subdir != OVERRIDE_SUBDIR or hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(hydra.overrides.task)
    dirname = hydra.job.config.override_dirname
    exclude = set(dirname.exclude_keys)
    folders = []
    for job in sweep_jobs(args):
        lines = sorted(line for line in job if override_key(line) not in exclude)
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
        from ntklab.report import write_report  # matplotlib only when a report is drawn
        from ntklab.sweep import SweepError, find_jobs, group

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            sweep = group(find_jobs(sweep_dir))
        except SweepError as err:
            print(f"ntklab: no sweep report: {err}", file=sys.stderr)
            return
        path = write_report(sweep_dir, sweep)
        print(f"ntklab: sweep report → {path}", file=sys.stderr)
        failed = [job.name for job in sweep.jobs if job.status is Status.FAILED]
        if failed:
            print(
                f"ntklab: {len(failed)} of {len(sweep.jobs)} jobs failed: "
                + ", ".join(failed)
                + f" (their errors are in {path.name} and their job folders)",
                file=sys.stderr,
            )
            sys.exit(1)
        diverged = [job.name for job in sweep.jobs if job.status is Status.DIVERGED]
        code = int(config.get("divergence_exit_code", 0) or 0)
        if diverged and code:
            print(f"ntklab: {len(diverged)} jobs diverged: " + ", ".join(diverged), file=sys.stderr)
            sys.exit(code)
