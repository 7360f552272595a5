"""Wall time of one width sweep: Hydra's basic (sequential) launcher against the joblib preset.

Each repeat runs the real `ntklab -m` command for both launchers, alternating, so both see
the same machine load; the table gives medians and the ratio joblib / sequential.

    python benchmarks/sweep_speed.py                   # 6 widths, 5 repeats
    python benchmarks/sweep_speed.py --variants        # also oversubscribed joblib workers
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTHS = "64,128,256,512,1024,2048"
# The sweep report is the same sequential work after either launcher: it is switched off to
# time the launchers alone.
NO_REPORT = "~hydra.callbacks.sweep_report"


def launchers(workers: int) -> dict[str, list[str]]:
    """Launcher overrides by name. Sequential keeps torch's default threads (all cores for the
    one job at a time); the joblib preset runs `workers` jobs at once with one thread each."""
    joblib = ["launcher=joblib", f"hydra.launcher.n_jobs={workers}"]
    return {
        "sequential (basic, torch default threads)": [],
        f"joblib ({workers} workers x 1 thread)": joblib,
        # The sequential sweep with the joblib preset's thread choice: what parallelism alone buys.
        "sequential (basic, 1 thread)": ["threads=1"],
        # --variants: joblib workers that each keep torch's default threads (oversubscribed).
        f"joblib ({workers} workers x default threads)": [*joblib, "threads=null"],
    }


def time_sweep(overrides: list[str], common: list[str], folder: Path, n_jobs: int) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "ntklab", "-m", *overrides, *common]
    cmd.append(f"hydra.sweep.dir={folder}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep_speed: the sweep failed:\n{' '.join(cmd)}\n{proc.stderr[-2000:]}")
    jobs = [p for p in folder.iterdir() if (p / "summary.json").exists()]
    if len(jobs) != n_jobs:
        sys.exit(f"sweep_speed: expected one finished job per width in {folder}, got {len(jobs)}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default=WIDTHS)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--n", type=int, default=256, help="data.n (samples)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="joblib workers (cores to use)")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also time joblib workers that keep torch's default threads",
    )
    args = parser.parse_args()
    common = [f"model.width={args.widths}", f"epochs={args.epochs}", f"data.n={args.n}", NO_REPORT]
    configs = launchers(args.workers)
    if not args.variants:
        configs = dict(list(configs.items())[:3])
    times: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="ntklab-sweep-speed-") as tmp:
        for repeat in range(args.repeats):
            for name, overrides in configs.items():
                folder = Path(tmp) / "sweep"
                n_jobs = len(args.widths.split(","))
                times[name].append(time_sweep(overrides, common, folder, n_jobs))
                print(f"  repeat {repeat + 1}: {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nwidth sweep {args.widths}, epochs={args.epochs}, data.n={args.n}, data.d=16,")
    print(f"{args.repeats} repeats, {cores} cores visible, sweep report off\n")
    medians = {name: statistics.median(values) for name, values in times.items()}
    names = list(times)
    best_sequential = min(medians[names[0]], medians[names[2]])
    print("| launcher | median s | min s | max s | ratio to sequential | to faster sequential |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        med = medians[name]
        ratios = f"{med / medians[names[0]]:.2f} | {med / best_sequential:.2f}"
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {max(values):.1f} | {ratios} |")
    joblib = medians[names[1]]
    print(f"\nratio joblib / sequential (default threads): {joblib / medians[names[0]]:.3f}")
    print(f"ratio joblib / faster sequential: {joblib / best_sequential:.3f}  (target <= 0.65)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
