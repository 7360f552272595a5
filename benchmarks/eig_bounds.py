"""Do the matrix-free eigenvalues' error bounds cover their true errors? The Davidson solver (as
the tracker runs it: int8 fast products, exact certification, the feature preconditioner for
λ_min) on NTKs and synthetic kernels, against float64 `eigvalsh` of the same matrix, as a
Markdown table. Plain script; exits 0.

    python benchmarks/eig_bounds.py            # n = 1024 (the clustered kernels take longest)
    python benchmarks/eig_bounds.py --quick    # n = 200, about a minute

Columns: the true error |θ − λ| against eigvalsh, the reported bound (`ExtremeEig.error`,
r or r²/gap) and the residual r; `covered` is error ≤ bound + the reference's own round-off
n·eps·‖K‖ (eigvalsh is backward stable to about that).
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from ntklab.data import make_synthetic
from ntklab.davidson import davidson
from ntklab.fixedpoint import PatternOperator
from ntklab.models import OneHiddenLayer
from ntklab.precondition import FeatureDeflation
from ntklab.structured import structured_ntk

F64 = torch.float64


def ntk_case(n: int, d: int, m: int):
    """A leaky-ReLU net's NTK at init on the sphere: its product and the dense kernel."""
    X, _ = make_synthetic("sphere", n, d, seed=0)
    X = X.to(F64)
    model = OneHiddenLayer(d, m, seed=1, dtype=F64)
    op = PatternOperator(X, model.W, model.v, 0.1)
    return op, op.fast, structured_ntk(X, model.W.detach(), model.v, 0.1), X


def clustered(n: int, kappa: float, seed: int = 1, size: int = 20, width: float = 0.01):
    """Q diag(λ) Qᵀ, λ log-spaced in [1/κ, 1] with a tight cluster of `size` at the bottom."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    lam = torch.logspace(-math.log10(kappa), 0, n, dtype=F64)
    c = min(size, n // 4)
    lam[:c] = lam[0] * (1 + width * torch.linspace(0, 1, c, dtype=F64))
    K = (Q * lam) @ Q.T
    return (lambda U: K @ U), None, K, None


def cases(quick: bool) -> dict:
    n = 200 if quick else 1024
    return {
        f"NTK n={n} d=16 m={2 * n} (κ ≈ 10²)": lambda: ntk_case(n, 16, 2 * n),
        f"NTK n={n} d=4 m={2 * n}, crowded sphere (ill-conditioned)": lambda: ntk_case(n, 4, 2 * n),
        f"clustered n={n}, κ = 1e4": lambda: clustered(n, 1e4),
        f"clustered n={n}, κ = 1e8": lambda: clustered(n, 1e8),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tols", default="1e-2,1e-3,1e-6")
    a = p.parse_args()
    tols = [float(t) for t in a.tols.split(",")]
    print("| kernel | end | tol | θ | true error | bound | residual r | bound kind | covered |"
          " products |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, make in cases(a.quick).items():
        op, fast, K, X = make()
        ev = torch.linalg.eigvalsh(K)
        n = K.shape[0]
        floor = n * torch.finfo(F64).eps * float(ev.abs().max())
        for largest in (False, True):
            ref = float(ev[-1] if largest else ev[0])
            for tol in tols:
                precond = FeatureDeflation(X) if X is not None and not largest else None
                eig = davidson(
                    op, n, largest=largest, tol=tol, max_iter=2000, fast=fast, precond=precond
                )
                err = abs(eig.value - ref)
                kind = "r²/gap" if eig.error < eig.residual else "r"
                ok = "yes" if err <= eig.error + floor else "**no**"
                print(
                    f"| {name} | {'λ_max' if largest else 'λ_min'} | {tol:g} | {eig.value:.6g} "
                    f"| {err:.1e} | {eig.error:.1e} | {eig.residual:.1e} | {kind} | {ok} "
                    f"| {eig.iterations} |",
                    flush=True,
                )
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
