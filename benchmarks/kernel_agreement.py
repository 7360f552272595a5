"""How closely every route of `empirical_ntk` agrees with the explicit Jacobian contraction on
the kinds of modules users bring, in float64: a Markdown table. Plain script; exits 0.

    python benchmarks/kernel_agreement.py

For each module, kernel (symmetric K(X, X) and cross K(X1, X2)) and output mode, the largest
relative Frobenius error ‖K − K_ref‖ / ‖K_ref‖ of each method against the reference (one
autograd gradient per sample and output, stacked into J, then J Jᵀ), and the largest
difference between two methods.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ntklab.models import MLP, OneHiddenLayer
from ntklab.ntk import Method, empirical_ntk

F64 = torch.float64


def explicit_ntk(model: nn.Module, X1, X2, output):
    params = [p for p in model.parameters() if p.requires_grad]

    def jac(X):
        rows = []
        for x in X:
            out = model(x[None]).reshape(-1)
            grads = [torch.autograd.grad(f, params, retain_graph=True) for f in out]
            rows.append(torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads]))
        return torch.stack(rows)  # (n, k, p)

    J1 = jac(X1)
    J2 = J1 if X2 is None else jac(X2)
    if output == "full":
        return torch.einsum("iap,jbp->ijab", J1, J2)
    return torch.einsum("iap,jap->ij", J1, J2)


class Residual(nn.Module):
    """A residual block with LayerNorm and a scalar head."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.inp, self.norm = nn.Linear(d, 16), nn.LayerNorm(16)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 1)

    def forward(self, X):
        h = self.inp(X)
        return self.head(h + self.block(self.norm(h))).squeeze(-1)


class Conv(nn.Module):
    """A 1-d convolution over the input's coordinates, then two outputs."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=3, padding=1)
        self.head = nn.Linear(4 * d, 2)

    def forward(self, X):
        return self.head(torch.tanh(self.conv(X[:, None, :])).flatten(1))


def modules(d: int) -> list[tuple[str, nn.Module, list]]:
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(d, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    bn(torch.randn(32, d, dtype=F64))
    frozen = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    frozen[0].requires_grad_(False)
    one = OneHiddenLayer(d, 32, seed=1, dtype=F64, train_output=True, alpha=2.0)
    return [
        ("nn.Sequential, Linear(…, 1): (n, 1)", nn.Sequential(nn.Linear(d, 16), nn.Tanh(),
                                                            nn.Linear(16, 1)).double(), [None]),
        ("nn.Sequential, 3 outputs", nn.Sequential(nn.Linear(d, 16), nn.ReLU(),
                                                   nn.Linear(16, 3)).double(), ["trace", "full"]),
        ("BatchNorm1d (eval), 3 outputs", bn.eval(), ["trace", "full"]),
        ("frozen first layer, 2 outputs", frozen, ["trace", "full"]),
        ("residual block + LayerNorm + GELU", Residual(d).double(), [None]),
        ("Conv1d, 2 outputs", Conv(d).double(), ["trace", "full"]),
        ("OneHiddenLayer, trained output, α = 2", one, [None]),
        ("MLP depth 3, ReLU", MLP(d, 24, 3, "relu", seed=2, dtype=F64), [None]),
        ("MLP depth 2, tanh, 4 outputs", MLP(d, 24, 2, "tanh", seed=3, dtype=F64, outputs=4),
         ["trace", "full"]),
    ]  # fmt: skip


def rel_err(A: torch.Tensor, B: torch.Tensor) -> float:
    return float((A - B).norm() / B.norm())


def main() -> int:
    d = 5
    g = torch.Generator().manual_seed(0)
    X1 = torch.randn(9, d, generator=g, dtype=F64)
    X2 = torch.randn(6, d, generator=g, dtype=F64)
    print("| module | output | kernel | methods | auto takes | worst vs J Jᵀ | worst pair |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, model, outputs in modules(d):
        closed = isinstance(model, (OneHiddenLayer, MLP))
        methods = [Method.STRUCTURED] if closed else []
        methods += [Method.JACOBIAN, Method.NTVP]
        for output, cross in itertools.product(outputs, (False, True)):
            Xb = X2 if cross else None
            ref = explicit_ntk(model, X1, Xb, output)
            K = {m: empirical_ntk(model, X1, Xb, method=m, output=output) for m in methods}
            worst = max(rel_err(k, ref) for k in K.values())
            pair = max(rel_err(a, b) for a, b in itertools.combinations(K.values(), 2))
            shape = "×".join(str(s) for s in ref.shape)
            names, auto = ", ".join(m.value for m in methods), methods[0].value
            kernel = f"{'cross' if cross else 'sym'} {shape}"
            print(f"| {name} | {output or '—'} | {kernel} | {names} | {auto} | "
                  f"{worst:.1e} | {pair:.1e} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
