"""The `ntklab` command: Hydra composes the config, `config.load` types and validates it once,
then `experiment.run_experiment` runs it in its folder.

Exit status: 0 a completed run (and a diverged one, unless `divergence_exit_code` says
otherwise); 2 a bad setting, data file or run folder, named in one line on stderr, with nothing
written; 1 a run that failed with an unexpected error (its summary.json says `failed`, the
traceback is in its ntklab.log), Hydra's own errors (unknown config group option or key, a value
of the wrong type), and a sweep in which a job failed, was refused or was killed (after every
job ran and the sweep report was written); 128 + the signal number (130 SIGINT, 143 SIGTERM) for
a run or sweep stopped by a signal, after saving its checkpoint.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.ntklab_launcher import LAUNCHERS
from ntklab.config import Config, ConfigError, load, register_configs
from ntklab.data import DataError
from ntklab.experiment import RunError, run_experiment
from ntklab.launch import (
    console,
    note_job,
    release,
    resume_command,
    stopping,
    sweep_stopped,
)
from ntklab.rundir import RunFolder, RunFolderError, Status

register_configs()
# ntklab's launchers (hydra_plugins.ntklab_launcher): Hydra's plugin scan does not see them in
# an editable install, so they are registered here.
for _launcher in LAUNCHERS:
    Plugins.instance().register(_launcher)

EXIT_BAD_INPUT = 2
BAD_INPUT = (ConfigError, DataError, RunFolderError, OmegaConfBaseException)


def one_line(err: BaseException) -> str:
    """OmegaConf's errors span several lines; keep the key and the first line."""
    if isinstance(err, OmegaConfBaseException):
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"{err.full_key or 'config'}: {first}"
    return str(err)


def _record(cfg: DictConfig) -> dict[str, str]:
    """The command's record, .hydra/ of the run folder: its config, overrides, Hydra config."""
    hc = HydraConfig.instance().cfg
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(hc),
        "overrides.yaml": OmegaConf.to_yaml(hc.hydra.overrides.task),
    }


def _report(cfg: Config, summary: dict, run_dir: Path, multirun: bool) -> float | None:
    status, loss = Status(summary["status"]), summary["final_loss"]
    console(f"{status} after {summary['epochs_run']} epochs, loss {loss} → {run_dir}")
    if status is Status.INTERRUPTED:
        console(f"{summary['message']}; checkpoint saved to {RunFolder(run_dir).last_checkpoint}")
        code = 128 + signal.Signals[summary["signal"]].value
        if multirun:  # the signal was meant for the whole sweep: no further job starts
            sweep_stopped(summary["signal"])
            note_job(run_dir, Status.INTERRUPTED, summary["message"])
            if _own_process_job():
                # No result: SLURM may start the job again (a requeue), and it then continues
                # from its checkpoint; if not, the launching process reports it interrupted.
                sys.exit(code)
            return None
        console(f"to continue: {resume_command(str(run_dir), multirun=False)}")
        sys.exit(code)
    if status is Status.DIVERGED:
        console(summary["message"], logging.WARNING)
        # In a sweep the other jobs go on; SweepReport exits with this code at the end.
        if cfg.divergence_exit_code and not multirun:
            sys.exit(cfg.divergence_exit_code)
    return loss


def _own_process_job() -> bool:
    """This sweep job runs in a process of its own that ends with it (submitit: SLURM or local),
    not in the launching process or a reused worker."""
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return target.rsplit(".", 1)[-1] in ("LocalLauncher", "SlurmLauncher")


def _refused(err: BaseException, cfg: DictConfig, run_dir: Path, multirun: bool, code: int):
    """One line; a single run exits with `code`, a sweep job is recorded and the sweep goes on:
    a job whose folder was new says why in its own summary.json, one whose folder holds a run
    leaves it untouched and is listed as refused by the sweep report."""
    message = one_line(err)
    console(f"error: {message}" if code == EXIT_BAD_INPUT else f"failed: {message}", logging.ERROR)
    if not multirun:
        release(run_dir)
        sys.exit(code)
    folder = RunFolder(run_dir)
    if folder.status() is None and (folder.owned or not folder.files()):  # a new job's folder
        folder.adopt(_record(cfg))
        folder.write_failed(message)
        note_job(run_dir, Status.FAILED, message)
    else:
        status = Status.FAILED if isinstance(err, RunError) else Status.REFUSED
        note_job(run_dir, status, message)


def _sweep_without_multirun(hc: DictConfig) -> ConfigError | None:
    """A preset that is a sweep (hydra.sweeper.params) asked for without -m: Hydra would run one
    job with none of the swept values, silently."""
    params = hc.sweeper.get("params") or {}
    if not params:
        return None
    swept = ", ".join(f"{key}={value}" for key, value in params.items())
    preset = hc.runtime.choices.get("experiment")
    what = f"experiment={preset}" if preset else "hydra.sweeper.params"
    words = [a.replace("hydra.run.dir=", "hydra.sweep.dir=", 1) for a in sys.argv[1:]]
    command = " ".join(shlex.quote(a) for a in ["ntklab", "-m", *words])
    return ConfigError(f"{what}: is a sweep ({swept}); add -m to run its jobs: {command}")


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun and stopping():
        note_job(run_dir, Status.INTERRUPTED, "not started: the sweep was interrupted")
        release(run_dir)
        return None
    if not multirun and (refusal := _sweep_without_multirun(hc)):
        _refused(refusal, cfg, run_dir, multirun, EXIT_BAD_INPUT)
    try:
        config = load(cfg)
        summary = run_experiment(
            config,
            run_dir,
            record=_record(cfg),
            resume_may_start=multirun,  # in a sweep, resume=true also starts jobs never run
            progress=not multirun,
        )
    except BAD_INPUT as err:
        _refused(err, cfg, run_dir, multirun, EXIT_BAD_INPUT)
        return None
    except RunError as err:
        _refused(err, cfg, run_dir, multirun, 1)
        return None
    except Exception as err:  # before the run owned its folder: nothing was written
        _refused(RunError(f"{type(err).__name__}: {err}"), cfg, run_dir, multirun, 1)
        return None
    return _report(config, summary, run_dir, multirun)
