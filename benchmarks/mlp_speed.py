"""The deep MLP's closed-form kernel against the torch.func recipe, in one process: their
time ratio and the closed form's relative error. Plain script; exits 0.

    python benchmarks/mlp_speed.py                 # n = 1024, d = 64, width 512, depth 3, float32
    python benchmarks/mlp_speed.py --quick         # small sizes, a smoke test (seconds)
    python benchmarks/mlp_speed.py --rounds 5 --device cuda

The baseline is PyTorch's NTK recipe, `vmap(jacrev)` over every parameter and the contraction
Σ_p J_p J_pᵀ (`ntklab.ntk.jacobian_ntk`). The two are timed in alternating rounds (each round:
`--repeats` closed-form runs, then one baseline run), so that a load that comes and goes on a
shared machine falls on both. Printed: the ratio of the medians, each round's ratio, and the
ratio of the fastest runs (each side's best estimate of its time on an idle machine). The
error is ‖K − K_64‖ / ‖K_64‖ against the closed form in float64, for both float32 kernels.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from ntklab.mlp_kernels import mlp_ntk
from ntklab.models import MLP
from ntklab.ntk import jacobian_ntk


def timed(fn: Callable[[], torch.Tensor], device: str) -> tuple[float, torch.Tensor]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def rel_err(A: torch.Tensor, B: torch.Tensor) -> float:
    return float((A.double() - B).norm() / B.norm())


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 256, d = 16, width 128")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (baseline runs)")
    p.add_argument("--repeats", type=int, default=5, help="closed-form runs per round")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n, d, m = (256, 16, 128) if a.quick else (1024, 64, 512)
    g = torch.Generator().manual_seed(0)
    X64 = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    model64 = MLP(d, m, a.depth, "relu", seed=1, dtype=torch.float64, device=a.device)
    X64 = X64.to(a.device)
    K64 = mlp_ntk(model64, X64).cpu()
    model, X = MLP(d, m, a.depth, "relu", seed=1, device=a.device), X64.float()
    mlp_ntk(model, X)  # warm-up
    ours, theirs, ratios = [], [], []
    for _ in range(a.rounds):
        mine = []
        for _ in range(a.repeats):
            t, K = timed(lambda: mlp_ntk(model, X), a.device)
            mine.append(t)
        t, K_jac = timed(lambda: jacobian_ntk(model, X), a.device)
        ours, theirs = ours + mine, [*theirs, t]
        ratios.append(t / statistics.median(mine))  # this round's: the load it saw is shared
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    where = torch.cuda.get_device_name() if a.device == "cuda" else cpu_name()
    print(f"device: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"MLP n={n} d={d} width={m} depth={a.depth} relu float32, {a.rounds} rounds")
    print("| kernel | median time | ratio | rel. error vs float64 |")
    print("| --- | --- | --- | --- |")
    print(f"| mlp_ntk (closed form) | {t_ours:.4g} s | {t_theirs / t_ours:.1f}× faster |"
          f" {rel_err(K.cpu(), K64):.2g} |")  # fmt: skip
    print(f"| jacobian_ntk (vmap(jacrev) + contraction) | {t_theirs:.4g} s | 1 |"
          f" {rel_err(K_jac.cpu(), K64):.2g} |")  # fmt: skip
    print(f"each round's ratio: {', '.join(f'{r:.0f}×' for r in ratios)}")
    best, best_base = min(ours), min(theirs)
    print(f"fastest runs: {best:.4g} s vs {best_base:.4g} s, {best_base / best:.1f}× faster")
    print(f"all closed-form times (s): {', '.join(f'{t:.4f}' for t in ours)}")
    print(f"all baseline times (s): {', '.join(f'{t:.3f}' for t in theirs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
