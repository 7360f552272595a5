"""The `ntklab` command: Hydra composes the config, then `experiment.run_experiment` runs it."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ntklab.config import ConfigError, register_configs
from ntklab.data import DataError
from ntklab.logger import write_failed_summary

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from ntklab.experiment import run_experiment  # torch import after Hydra parsed the args

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # In a sweep, a job that fails is recorded in its folder and the other jobs go on; the
    # sweep report lists it and the sweep exits non-zero (ntklab.hydra_callbacks).
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = run_experiment(cfg, run_dir, progress=not in_sweep)
    except (ConfigError, DataError) as err:
        print(f"ntklab: error: {err}", file=sys.stderr)
        if not in_sweep:
            sys.exit(2)
        write_failed_summary(run_dir, str(err))
        return None
    except Exception as err:
        if not in_sweep:
            raise
        traceback.print_exc()
        write_failed_summary(run_dir, f"{type(err).__name__}: {err}")
        return None
    status = summary["status"]
    line = f"ntklab: {status} after {summary['epochs_run']} epochs, loss {summary['final_loss']}"
    print(f"{line} → {run_dir}", file=sys.stderr)
    if summary["message"]:
        print(f"ntklab: {summary['message']}", file=sys.stderr)
    return summary["final_loss"]
