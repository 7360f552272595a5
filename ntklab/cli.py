"""The `ntklab` command: Hydra composes the config, then `experiment.run_experiment` runs it.

Exit status: 0 a completed run (and a diverged one, unless `divergence_exit_code` says
otherwise); 2 a bad setting or data file, named in one line on stderr; 128 + the signal
number (130 SIGINT, 143 SIGTERM) for a run stopped by a signal after saving its checkpoint;
1 Hydra's own errors (unknown config group option or key, a value of the wrong type).
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ntklab.config import ConfigError, register_configs
from ntklab.data import DataError

register_configs()

EXIT_BAD_INPUT = 2
# Flags a resumed command must not repeat, and the folder flags it sets itself.
_RESUME_DROPS = ("resume", "overwrite", "hydra.run.dir", "hydra.sweep.dir")


class JobFailed(CompactHydraException):
    """A sweep job that failed: Hydra runs the other jobs, then prints this one line and
    exits 1 (a plain `sys.exit` inside a job would end the whole sweep at once)."""


def _stop(code: int, message: str, multirun: bool) -> NoReturn:
    if multirun:
        raise JobFailed(f"ntklab: {message}")
    _say(message)
    sys.exit(code)


def _one_line(err: Exception) -> str:
    """OmegaConf's errors span several lines; keep the key and the first line."""
    if isinstance(err, OmegaConfBaseException):
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"{err.full_key or 'config'}: {first}"
    return str(err)


def _resume_command(hc: Any, run_dir: Path, multirun: bool) -> str:
    """The command that continues this run: the words typed, plus resume=true and the folder."""
    kept = [a for a in sys.argv[1:] if a.split("=", 1)[0].lstrip("+~") not in _RESUME_DROPS]
    folder = f"hydra.sweep.dir={hc.sweep.dir}" if multirun else f"hydra.run.dir={run_dir}"
    return " ".join(shlex.quote(w) for w in ["ntklab", *kept, "resume=true", folder])


def _say(message: str) -> None:
    print(f"ntklab: {message}", file=sys.stderr)


def _report(cfg: DictConfig, summary: dict, run_dir: Path, multirun: bool) -> float | None:
    status, loss = summary["status"], summary["final_loss"]
    _say(f"{status} after {summary['epochs_run']} epochs, loss {loss} → {run_dir}")
    if status == "interrupted":
        _say(f"{summary['message']}; checkpoint saved to {run_dir}/checkpoints/last.pt")
        _say(f"to continue: {_resume_command(HydraConfig.get(), run_dir, multirun)}")
        # Ends a sweep too: the signal was meant for the whole process.
        sys.exit(128 + signal.Signals[summary["signal"]].value)
    if status == "diverged":
        if cfg.divergence_exit_code:
            _stop(cfg.divergence_exit_code, summary["message"], multirun)
        _say(summary["message"])
    return loss


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from ntklab.experiment import run_experiment  # torch import after Hydra parsed the args

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        # In a sweep, resume=true also starts the jobs that never ran.
        summary = run_experiment(cfg, run_dir, resume_may_start=multirun)
    except (ConfigError, DataError, OmegaConfBaseException) as err:
        _stop(EXIT_BAD_INPUT, f"error: {_one_line(err)}", multirun)
    return _report(cfg, summary, run_dir, multirun)
