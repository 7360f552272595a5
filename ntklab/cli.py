"""The `ntklab` command: Hydra composes the config, `config.load` types and validates it once,
then `experiment.run_experiment` runs it.

Exit status: 0 a completed run (and a diverged one, unless `divergence_exit_code` says
otherwise); 2 a bad setting, data file or run folder, named in one line on stderr; 128 + the
signal number (130 SIGINT, 143 SIGTERM) for a run stopped by a signal after saving its
checkpoint; 1 Hydra's own errors (unknown config group option or key, a value of the wrong
type), and a sweep with a failed job (after every job ran and the sweep report was written).
"""

from __future__ import annotations

import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ntklab.config import Config, ConfigError, load, register_configs
from ntklab.data import DataError
from ntklab.experiment import run_experiment
from ntklab.rundir import RunFolder, RunFolderError, Status
from ntklab.sweep import override_key

register_configs()

EXIT_BAD_INPUT = 2
BAD_INPUT = (ConfigError, DataError, RunFolderError, OmegaConfBaseException)
# Flags a resumed command must not repeat, and the folder flags it sets itself.
_RESUME_DROPS = ("resume", "overwrite", "hydra.run.dir", "hydra.sweep.dir")


def one_line(err: Exception) -> str:
    """OmegaConf's errors span several lines; keep the key and the first line."""
    if isinstance(err, OmegaConfBaseException):
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"{err.full_key or 'config'}: {first}"
    return str(err)


def _resume_command(hc: Any, run_dir: Path, multirun: bool) -> str:
    """The command that continues this run: the words typed, plus resume=true and the folder."""
    kept = [a for a in sys.argv[1:] if override_key(a) not in _RESUME_DROPS]
    folder = f"hydra.sweep.dir={hc.sweep.dir}" if multirun else f"hydra.run.dir={run_dir}"
    return " ".join(shlex.quote(w) for w in ["ntklab", *kept, "resume=true", folder])


def _say(message: str) -> None:
    print(f"ntklab: {message}", file=sys.stderr)


def _report(cfg: Config, summary: dict, run_dir: Path, multirun: bool) -> float | None:
    status, loss = Status(summary["status"]), summary["final_loss"]
    _say(f"{status} after {summary['epochs_run']} epochs, loss {loss} → {run_dir}")
    if status is Status.INTERRUPTED:
        _say(f"{summary['message']}; checkpoint saved to {RunFolder(run_dir).last_checkpoint}")
        _say(f"to continue: {_resume_command(HydraConfig.get(), run_dir, multirun)}")
        # Ends a sweep too: the signal was meant for the whole process.
        sys.exit(128 + signal.Signals[summary["signal"]].value)
    if status is Status.DIVERGED:
        _say(summary["message"])
        # In a sweep the other jobs go on; SweepReport exits with this code at the end.
        if cfg.divergence_exit_code and not multirun:
            sys.exit(cfg.divergence_exit_code)
    return loss


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        config = load(cfg)
        # In a sweep, resume=true also starts the jobs that never ran.
        summary = run_experiment(config, run_dir, resume_may_start=multirun, progress=not multirun)
    except BAD_INPUT as err:
        _say(f"error: {one_line(err)}")
        if not multirun:
            sys.exit(EXIT_BAD_INPUT)
        RunFolder(run_dir).write_failed(one_line(err))
        return None
    except Exception as err:
        if not multirun:
            raise
        # A sweep goes on: the job is recorded as failed, the report lists it and the
        # sweep exits non-zero at its end (ntklab.hydra_callbacks.SweepReport).
        traceback.print_exc()
        RunFolder(run_dir).write_failed(f"{type(err).__name__}: {err}")
        return None
    return _report(config, summary, run_dir, multirun)
