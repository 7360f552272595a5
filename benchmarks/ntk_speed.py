"""NTK engine benchmarks: each workload's ntklab time against a baseline timed in the same
process, their ratio and peak memory, as a Markdown table. Plain script; exits 0.

    python benchmarks/ntk_speed.py                     # every case (tens of minutes on 2 cores)
    python benchmarks/ntk_speed.py --quick             # small sizes, a smoke test (~1 min)
    python benchmarks/ntk_speed.py --cases vs_matmul,overhead --device cuda

Each case runs in a fresh child process, so its peak memory is its own: the ntklab column's
peak is taken right after the ntklab runs, before the baseline allocates anything.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from ntklab.models import OneHiddenLayer
from ntklab.ntk import jacobian_ntk
from ntklab.spectrum import lanczos
from ntklab.structured import StructuredOperator, count_matmul, pattern, structured_ntk

GiB = 2**30


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(device: str) -> int:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory (CUDA)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def problem(n: int, d: int, m: int, device: str, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    model = OneHiddenLayer(d, m, "leaky_relu", 0.1, seed=seed + 1, dtype=dtype, device=device)
    return X.to(device=device, dtype=dtype), model


def case_vs_jacobian(a: argparse.Namespace) -> dict:
    n, d, m = (256, 16, 256) if a.quick else (2048, 64, 2048)
    X, model = problem(n, d, m, a.device)
    W, v = model.W.detach(), model.v
    t = median_time(lambda: structured_ntk(X, W, v, 0.1), a.repeats, a.device)
    peak = peak_bytes(a.device)
    tb = median_time(lambda: jacobian_ntk(model, X), a.baseline_repeats, a.device)
    return row(f"dense K vs torch.func jacobian, n={n} d={d} m={m}", t, tb, peak, "target ≥150×")


def case_vs_matmul(a: argparse.Namespace) -> dict:
    n, d, m = (512, 16, 1024) if a.quick else (2048, 64, 4096)
    X, model = problem(n, d, m, a.device)
    W, v = model.W.detach(), model.v
    t = median_time(lambda: structured_ntk(X, W, v, 0.1), a.repeats, a.device)
    peak = peak_bytes(a.device)
    A = torch.randn(n, m, device=a.device)
    At = torch.randn(m, n, device=a.device)
    tb = median_time(lambda: A @ At, max(a.repeats, 5), a.device)
    K = structured_ntk(X, W, v, 0.1).double()
    ref = structured_ntk(X.double(), W.double(), v.double(), 0.1)
    err = float((K - ref).norm() / ref.norm())
    note = f"target ≤0.4×; ‖K−K64‖/‖K64‖ = {err:.1e}"
    return row(f"dense K vs one (n×m)@(m×n) f32 matmul, n={n} d={d} m={m}", t, tb, peak, note)


def case_vs_int8(a: argparse.Namespace) -> dict:
    """The whole kernel against its own heavy step alone: the int8 co-activation product
    B Bᵀ of the (precomputed) activation pattern, the floor of this route."""
    n, d, m = (512, 16, 1024) if a.quick else (2048, 64, 4096)
    X, model = problem(n, d, m, a.device)
    W, v = model.W.detach(), model.v
    t = median_time(lambda: structured_ntk(X, W, v, 0.1), a.repeats, a.device)
    peak = peak_bytes(a.device)
    B = pattern(X, W)
    tb = median_time(lambda: count_matmul(B, B.T), max(a.repeats, 5), a.device)
    note = "target ≤2×; baseline: count_matmul(B, Bᵀ), B the int8 pattern (n, m)"
    return row(f"dense K vs its int8 product B Bᵀ alone, n={n} d={d} m={m}", t, tb, peak, note)


def train_epoch_child(a: argparse.Namespace, every: int) -> dict:
    """One epoch of the default experiment at the wide size, in a fresh process."""
    n, d, m = (512, 32, 8192) if a.quick else (2048, 128, 65536)
    overrides = [f"data.n={n}", f"data.d={d}", f"model.width={m}", "epochs=1"]
    overrides += [f"ntk.every={every}", f"device={a.device}"]
    out = run_child(["--train", json.dumps(overrides)])
    return {**out, "n": n, "d": d, "m": m}


def case_wide_epoch(a: argparse.Namespace) -> dict:
    on, off = train_epoch_child(a, 1), train_epoch_child(a, 0)
    n, d, m = on["n"], on["d"], on["m"]
    jac_gib = n * m * d * 4 / GiB
    note = (
        f"target peak ≤4 GiB; tracking off: {off['peak'] / GiB:.2f} GiB; J alone {jac_gib:.0f} GiB"
    )
    return row(
        f"1 epoch train + NTK (vs ntk.every=0), n={n} d={d} m={m}",
        on["time"],
        off["time"],
        on["peak"],
        note,
    )


def extremes(op, n: int, device: str, tol: float, max_iter: int):
    t0 = time.perf_counter()
    top = lanczos(op, n, largest=True, tol=tol, max_iter=max_iter, device=device)
    bottom = lanczos(op, n, largest=False, tol=tol, max_iter=max_iter, device=device)
    return top, bottom, time.perf_counter() - t0


def case_validate(a: argparse.Namespace) -> dict:
    n, d, m = (1024, 32, 1024) if a.quick else (8192, 64, 4096)
    X, model = problem(n, d, m, a.device)
    op = StructuredOperator(X, model.W, model.v, 0.1)
    top, bottom, t = extremes(op, n, a.device, a.tol, a.max_iter)
    peak = peak_bytes(a.device)
    t0 = time.perf_counter()
    K = structured_ntk(X.double(), model.W.detach().double(), model.v.double(), 0.1)
    ev = torch.linalg.eigvalsh(K)
    tb = time.perf_counter() - t0
    e_min = abs(bottom.value - float(ev[0])) / float(ev[0])
    e_max = abs(top.value - float(ev[-1])) / float(ev[-1])
    note = (
        f"1 run each; rel err λ_min {e_min:.1e}, λ_max {e_max:.1e}; "
        f"{top.iterations}+{bottom.iterations} products; "
        f"converged {top.converged and bottom.converged}"
    )
    return row(
        f"λ_min, λ_max matrix-free vs dense f64 eigvalsh, n={n} d={d} m={m}", t, tb, peak, note
    )


def cli_run(overrides: list[str]) -> dict:
    """One `ntklab` command (Hydra start-up and all) in a temporary run folder: its wall time
    and its epoch-0 record."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ntklab", *overrides, f"hydra.run.dir={tmp}/run"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        t = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        with open(f"{tmp}/run/metrics.jsonl", encoding="utf-8") as f:
            record = json.loads(f.readline())
    return {"time": t, "record": record}


def thread_overrides(a: argparse.Namespace) -> list[str]:
    return [f"threads={a.threads}"] if a.threads else []


def cli_sizes(a: argparse.Namespace, n: int, d: int, m: int) -> list[str]:
    return [
        f"data.n={n}", f"data.d={d}", f"model.width={m}", "epochs=0", f"device={a.device}",
        *thread_overrides(a),
    ]  # fmt: skip


def case_cli_spectra(a: argparse.Namespace) -> dict:
    """λ_min and λ_max of K_0 through the CLI: matrix-free (`ntk=ntvp ntk.tol=…`) against the
    dense route (`ntk=structured`), the commands alternated, medians of `--cli-repeats`."""
    n, d, m = (1024, 32, 1024) if a.quick else (8192, 64, 4096)
    sizes = cli_sizes(a, n, d, m)
    free, dense = [], []
    for _ in range(a.cli_repeats):
        free.append(cli_run(["ntk=ntvp", f"ntk.tol={a.tol}", f"ntk.max_iter={a.max_iter}", *sizes]))
        dense.append(cli_run(["ntk=structured", *sizes]))
    bad = [r["error"] for r in free + dense if "error" in r]
    if bad:
        return {"error": bad[0]}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    f, g = free[-1]["record"], dense[-1]["record"]
    e_min = abs(f["ntk/lambda_min"] - g["ntk/lambda_min"]) / g["ntk/lambda_min"]
    e_max = abs(f["ntk/lambda_max"] - g["ntk/lambda_max"]) / g["ntk/lambda_max"]
    note = (
        f"whole commands, {a.cli_repeats} each, alternated; rel. difference λ_min {e_min:.1e}, "
        f"λ_max {e_max:.1e}; bounds λ_min ± {f['ntk/lambda_min_err']:.1e}, λ_max ± "
        f"{f['ntk/lambda_max_err']:.1e}; {f['ntk/eig_iterations']:.0f} products at epoch 0; "
        f"converged {bool(f['ntk/eig_converged'])}; times {[round(r['time'], 1) for r in free]} "
        f"vs {[round(r['time'], 1) for r in dense]} s"
    )
    t = statistics.median(r["time"] for r in free)
    tb = statistics.median(r["time"] for r in dense)
    return row(f"CLI epochs=0: ntk=ntvp vs ntk=structured, n={n} d={d} m={m}", t, tb, peak, note)


def case_cli_large_n(a: argparse.Namespace) -> dict:
    """The same matrix-free command where no dense kernel fits (10 GB in float32)."""
    n, d, m = (4096, 32, 1024) if a.quick else (50000, 64, 4096)
    r = cli_run(["ntk=ntvp", f"ntk.tol={a.tol}", f"ntk.max_iter={a.max_iter}",
                 *cli_sizes(a, n, d, m)])  # fmt: skip
    if "error" in r:
        return {"error": r["error"]}
    f = r["record"]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    note = (
        f"whole command, 1 run; λ_min {f['ntk/lambda_min']:.6g} ± {f['ntk/lambda_min_err']:.1e}, "
        f"λ_max {f['ntk/lambda_max']:.6g} ± {f['ntk/lambda_max_err']:.1e}; "
        f"{f['ntk/eig_iterations']:.0f} products at epoch 0; converged "
        f"{bool(f['ntk/eig_converged'])}; target ≤ 120 s, peak ≤ 4 GiB"
    )
    return row(f"CLI epochs=0: ntk=ntvp, n={n} d={d} m={m}", r["time"], math.nan, peak, note)


def case_large_n(a: argparse.Namespace) -> dict:
    n, d, m = (4096, 32, 1024) if a.quick else (50000, 64, 4096)
    X, model = problem(n, d, m, a.device)
    op = StructuredOperator(X, model.W, model.v, 0.1)
    top, bottom, t = extremes(op, n, a.device, a.tol, a.max_iter)
    note = (
        f"1 run; λ_min {bottom.value:.6g} λ_max {top.value:.6g}; {top.iterations}+"
        f"{bottom.iterations} products; rel. residual λ_min {bottom.residual / bottom.value:.1e}; "
        f"converged {top.converged and bottom.converged}; target peak ≤4 GiB"
    )
    return row(
        f"λ_min, λ_max matrix-free (no dense baseline fits), n={n} d={d} m={m}",
        t,
        math.nan,
        peak_bytes(a.device),
        note,
    )


def case_overhead(a: argparse.Namespace) -> dict:
    on, off = [], []
    for _ in range(a.repeats):  # alternated, so both see the same machine load
        for every, times in ((1, on), (0, off)):
            overrides = [f"ntk.every={every}", f"device={a.device}", *thread_overrides(a)]
            times.append(run_child(["--train", json.dumps(overrides)])["time"])
    note = (
        "wall time of the training loop, default experiment (200 epochs, n=128, m=512), "
        f"{a.repeats} runs each alternated, threads={a.threads or 'default'}"
    )
    return row(
        "default experiment: ntk.every=1 vs ntk.every=0",
        statistics.median(on),
        statistics.median(off),
        math.nan,
        note,
    )


CASES: dict[str, Callable[[argparse.Namespace], dict]] = {
    "vs_jacobian": case_vs_jacobian,
    "vs_matmul": case_vs_matmul,
    "vs_int8": case_vs_int8,
    "wide_epoch": case_wide_epoch,
    "validate": case_validate,
    "large_n": case_large_n,
    "overhead": case_overhead,
    "cli_spectra": case_cli_spectra,
    "cli_large_n": case_cli_large_n,
}


def row(workload: str, t: float, tb: float, peak: float, note: str) -> dict:
    return {"workload": workload, "time": t, "baseline": tb, "peak": peak, "note": note}


def train_once(overrides: list[str]) -> dict:
    """Compose the default config with `overrides`, run it in a temporary folder."""
    from hydra import compose, initialize_config_module

    from ntklab.config import load, register_configs
    from ntklab.experiment import run_experiment

    register_configs()
    with initialize_config_module("ntklab.conf", version_base="1.3"):
        cfg = load(compose("config", overrides=overrides))
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_experiment(cfg, tmp)
    return {"time": summary["wall_time_s"], "peak": peak_bytes("cpu")}


def run_child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args, *CHILD_ARGS], capture_output=True, text=True
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1])


CHILD_ARGS: list[str] = []


def fmt_time(t: float) -> str:
    return "—" if not math.isfinite(t) else f"{t:.3g} s"


def print_header() -> None:
    print("| workload | ntklab (median) | baseline (same process) | ratio | peak memory | notes |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)


def print_row(r: dict) -> None:
    """One table row, printed as soon as its case finishes (a killed run keeps the others)."""
    if "error" in r:
        print(f"| {r['workload']} | error | | | | {r['error']} |", flush=True)
        return
    ratio = r["baseline"] / r["time"] if math.isfinite(r["baseline"]) else math.nan
    if not math.isfinite(ratio):
        ratio_s = "—"
    else:
        ratio_s = f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× the baseline time"
    peak = "—" if not math.isfinite(r["peak"]) else f"{r['peak'] / GiB:.2f} GiB"
    print(
        f"| {r['workload']} | {fmt_time(r['time'])} | {fmt_time(r['baseline'])} | {ratio_s} "
        f"| {peak} | {r['note']} |",
        flush=True,
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=5, help="timed runs of ntklab (median)")
    p.add_argument("--baseline-repeats", type=int, default=3, help="timed runs of slow baselines")
    p.add_argument("--tol", type=float, default=1e-4, help="Lanczos relative residual")
    p.add_argument("--max-iter", type=int, default=600, help="Lanczos products per eigenvalue")
    p.add_argument("--cli-repeats", type=int, default=3, help="runs of each cli_spectra command")
    p.add_argument(
        "--threads", type=int, default=0, help="threads=N for the runs (0: torch's default)"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--train", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> int:
    a = parse()
    if a.train is not None:
        print(json.dumps(train_once(json.loads(a.train))))
        return 0
    if a.child is not None:
        if a.threads:
            torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        print(json.dumps(CASES[a.child](a)))
        return 0
    CHILD_ARGS[:] = [
        "--device",
        a.device,
        "--repeats",
        str(a.repeats),
        "--tol",
        str(a.tol),
        "--baseline-repeats",
        str(a.baseline_repeats),
        "--max-iter",
        str(a.max_iter),
        "--cli-repeats",
        str(a.cli_repeats),
        "--threads",
        str(a.threads),
    ]
    CHILD_ARGS.extend(["--quick"] if a.quick else [])
    print_header()
    for name in a.cases.split(","):
        if name not in CASES:
            print(f"unknown case {name!r}; choose from {', '.join(CASES)}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        r = run_child(["--child", name])
        r.setdefault("workload", name)
        print_row(r)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"\ndevice {a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
