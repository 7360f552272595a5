"""`ntklab-lr-find`: the recipe's largest constant step that does not diverge, from short runs.

Tries a geometric grid of constant steps (lr_find.lr_min … lr_find.lr_max, lr_find.per_decade
points per factor 10), each a short run of lr_find.epochs epochs from the same init with the
rest of the config as given, and reports the largest stable one next to GD's stability limit
n α² / λ_max(K_0) (= 2/β; on a quadratic GD diverges iff lr exceeds it; with cross-entropy
4n / λ_max of the full k-output kernel, from its Gauss–Newton bound). The problem (data, net,
K_0) is built once; each trial trains a copy of the net, without tracking or files.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ntklab.config import ConfigError, LRFindConfig, load, register_configs
from ntklab.control import DivergenceGuard
from ntklab.data import DataError
from ntklab.models import output_scale
from ntklab.problem import Problem, make_problem, make_state
from ntklab.theory import stability_lr
from ntklab.train import fit

register_configs()


def geometric_grid(lr_min: float, lr_max: float, per_decade: int) -> list[float]:
    """lr_min · 10^(k/per_decade) for k = 0, 1, … while ≤ lr_max (with a little slack)."""
    count = math.floor(per_decade * math.log10(lr_max / lr_min) + 1e-9)
    return [lr_min * 10 ** (k / per_decade) for k in range(count + 1)]


def stable(initial: float, final: float) -> bool:
    """A short run is stable when it ends finite and no higher than it started."""
    return math.isfinite(final) and final <= initial


def trial(problem: Problem, cfg: LRFindConfig, lr: float) -> dict[str, Any]:
    """One short constant-step run at `lr` from the problem's W_0: its losses and verdict."""
    optim = dataclasses.replace(cfg.optim, lr=lr, schedule="constant")
    short = dataclasses.replace(cfg, optim=optim, epochs=cfg.lr_find.epochs)
    state = make_state(problem, short, model=copy.deepcopy(problem.model))
    state.evaluate()
    initial = state.loss
    result = fit(state, [DivergenceGuard(cfg.divergence_factor)])
    return {
        "lr": lr,
        "initial_loss": initial,
        "final_loss": result.final_loss,
        "epochs_run": result.epochs_run,
        "stable": stable(initial, result.final_loss),
    }


def find_lr(cfg: LRFindConfig) -> dict[str, Any]:
    """Every trial of the grid and the largest stable step, with its ratio to n α²/λ_max(K_0)."""
    problem = make_problem(cfg)
    grid = cfg.lr_find
    lrs = geometric_grid(grid.lr_min, grid.lr_max, grid.per_decade)
    trials = [trial(problem, cfg, lr) for lr in lrs]
    if problem.output == "full":  # cross-entropy: 2/β = 4n/λ_max(K_full), twice its theory step
        limit = 2.0 * problem.lr_theory
    else:
        limit = stability_lr(problem.initial.lambda_max, problem.n, output_scale(problem.model))
    best = max((t["lr"] for t in trials if t["stable"]), default=None)
    return {
        "trials": trials,
        "lr_stable": best,
        "lr_limit_theory": limit,
        "ratio": None if best is None else best / limit,
    }


def format_report(found: dict[str, Any]) -> str:
    lines = [f"{'lr':>12}  {'L_0':>12}  {'L_end':>12}  stable"]
    for t in found["trials"]:
        lines.append(
            f"{t['lr']:>12.4g}  {t['initial_loss']:>12.4g}  {t['final_loss']:>12.4g}  "
            f"{'yes' if t['stable'] else 'no'}"
        )
    limit = found["lr_limit_theory"]
    if found["lr_stable"] is None:
        lines.append(f"no stable step in the grid; lower lr_find.lr_min (GD's limit {limit:.4g})")
    else:
        lines.append(
            f"largest stable step {found['lr_stable']:.4g} = {found['ratio']:.3g} × GD's theory "
            f"limit 2/β (n/λ_max(K_0) for the MSE) = {limit:.4g}"
        )
        if found["lr_stable"] == found["trials"][-1]["lr"]:
            lines.append("the largest step of the grid was stable: raise lr_find.lr_max")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="lr_find")
def main(cfg: DictConfig) -> None:
    try:
        found = find_lr(load(cfg, LRFindConfig))
    except (ConfigError, DataError) as err:
        print(f"ntklab-lr-find: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_report(found))
    out = Path(HydraConfig.get().runtime.output_dir) / "lr_find.json"
    out.write_text(json.dumps(found, indent=2) + "\n")
    if found["lr_stable"] is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
