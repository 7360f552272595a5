"""`ntklab-lr-find`: the recipe's largest constant step that does not diverge, from short runs.

Tries a geometric grid of constant steps (lr_find.lr_min … lr_find.lr_max, lr_find.per_decade
points per factor 10), each a short run of lr_find.epochs epochs from the same init with the
rest of the config as given, and reports the largest stable one next to GD's stability limit
n α² / λ_max(K_0) (= 2/β; on a quadratic GD diverges iff lr exceeds it).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ntklab.config import ConfigError, register_configs, validate_lr_find
from ntklab.data import DataError

register_configs()


def geometric_grid(lr_min: float, lr_max: float, per_decade: int) -> list[float]:
    """lr_min · 10^(k/per_decade) for k = 0, 1, … while ≤ lr_max (with a little slack)."""
    count = math.floor(per_decade * math.log10(lr_max / lr_min) + 1e-9)
    return [lr_min * 10 ** (k / per_decade) for k in range(count + 1)]


def stable(initial: float, final: float) -> bool:
    """A short run is stable when it ends finite and no higher than it started."""
    return math.isfinite(final) and final <= initial


def trial(cfg: Any, lr: float, epochs: int) -> dict[str, Any]:
    """One short constant-step run at `lr` without tracking or files: its losses and verdict."""
    from ntklab.callbacks import DivergenceGuard
    from ntklab.experiment import build
    from ntklab.train import fit

    cfg = OmegaConf.merge(
        cfg, {"optim": {"lr": lr, "schedule": "constant"}, "epochs": epochs, "ntk": {"every": 0}}
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = build(cfg, tmp)
        run.logger.close()
        run.state.evaluate()
        initial = run.state.loss
        result = fit(run.state, run.batches, [DivergenceGuard(cfg.divergence_factor)])
    return {
        "lr": lr,
        "initial_loss": initial,
        "final_loss": result.final_loss,
        "epochs_run": result.epochs_run,
        "stable": stable(initial, result.final_loss),
        "lr_limit_theory": 2.0 * run.hparams["lr_theory"],
    }


def find_lr(cfg: Any) -> dict[str, Any]:
    """Every trial of the grid and the largest stable step, with its ratio to n α²/λ_max(K_0)."""
    f = cfg.lr_find
    trials = [trial(cfg, lr, f.epochs) for lr in geometric_grid(f.lr_min, f.lr_max, f.per_decade)]
    limit = trials[0]["lr_limit_theory"]
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
            f"limit n/λ_max(K_0) = {limit:.4g}"
        )
        if found["lr_stable"] == found["trials"][-1]["lr"]:
            lines.append("the largest step of the grid was stable: raise lr_find.lr_max")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://ntklab.conf", config_name="lr_find")
def main(cfg: DictConfig) -> None:
    try:
        validate_lr_find(cfg)
        found = find_lr(cfg)
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
