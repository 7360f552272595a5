"""The `ntklab` command: Hydra composes the config, then `experiment.run_experiment` runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ntklab.config import ConfigError, register_configs
from ntklab.data import DataError

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from ntklab.experiment import run_experiment  # torch import after Hydra parsed the args

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run_experiment(cfg, run_dir)
    except (ConfigError, DataError) as err:
        print(f"ntklab: error: {err}", file=sys.stderr)
        sys.exit(2)
    status = summary["status"]
    line = f"ntklab: {status} after {summary['epochs_run']} epochs, loss {summary['final_loss']}"
    print(f"{line} → {run_dir}", file=sys.stderr)
    if summary["message"]:
        print(f"ntklab: {summary['message']}", file=sys.stderr)
    return summary["final_loss"]
