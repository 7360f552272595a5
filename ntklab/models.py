"""One-hidden-layer nets h(x) = <v, σ(W x)>: the activation σ, its slope σ′, init, options."""

from __future__ import annotations

import math

import torch
from torch import nn

# Each activation is its slope on the negative half-line: σ(z) = max(z, εz) with
# ε = 1 for the linear net, so one closed form covers both (σ'(z) ∈ {1, ε}). The value is
# that slope, fixed by the activation, or None where `negative_slope` chooses it.
ACTIVATIONS: dict[str, float | None] = {"linear": 1.0, "leaky_relu": None}

# Where the output layer's 1/√m lives when v is trained (with v fixed both are the same
# function with the same W-gradients): "ntk" trains a = ±1 and multiplies by 1/√m in the
# forward pass; "standard" trains v itself, initialised at ±1/√m. The value says whether
# the 1/√m sits in the forward pass (True) or in the initial v (False).
PARAMETERIZATIONS: dict[str, bool] = {"ntk": True, "standard": False}


def sigma(Z: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """σ(z) = max(z, εz) elementwise (σ(z) = z when ε = 1, the linear net)."""
    if negative_slope == 1.0:
        return Z
    return torch.where(Z >= 0, Z, negative_slope * Z)


def sigma_prime(Z: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """σ'(z) = 1 for z ≥ 0, else ε, elementwise (the lecture notes' 1_{z≥0} + ε 1_{z<0})."""
    one = torch.ones((), dtype=Z.dtype, device=Z.device)
    return torch.where(Z >= 0, one, one * negative_slope)


class OneHiddenLayer(nn.Module):
    """h(x; W) = Σ_k v_k σ(w_k·x), W is (m, d), v_k = ±1/√m fixed (Rademacher signs).

    `negative_slope` is ε of the leaky ReLU (ignored, and 1, for `activation="linear"`).
    The init draws W ~ N(0, I) and the signs from `generator` (or `seed`).

    Options beyond the lecture notes (the defaults are docs/theory.md's model, bit for bit):
    `train_output` trains the output layer too; `alpha` scales the output, f = α h (the loss
    divides by α², Chizat et al.); `center` subtracts the output at init, f = α (h − h_0), so
    that f(W_0) = 0 (lazy training needs it for large α); `parameterization` ("ntk" or
    "standard", see PARAMETERIZATIONS) says how a trained output layer is parameterized.
    """

    def __init__(
        self,
        d: int,
        width: int,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        train_output: bool = False,
        alpha: float = 1.0,
        center: bool = False,
        parameterization: str = "ntk",
    ) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization={parameterization!r} is unknown; "
                f"choose one of {sorted(PARAMETERIZATIONS)}"
            )
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha={alpha} must be a positive finite number")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}"
            )
        if d <= 0 or width <= 0:
            raise ValueError(f"d and width must be positive, got d={d}, width={width}")
        fixed = ACTIVATIONS[activation]
        eps = float(negative_slope) if fixed is None else fixed
        if fixed is None and not 0.0 <= eps < 1.0:
            raise ValueError(f"negative_slope={negative_slope} must lie in [0, 1)")
        self.activation = activation
        self.negative_slope = eps
        self.d, self.width = int(d), int(width)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        # Draw on the CPU from one generator so a seed gives the same net on every device.
        W = torch.randn(width, d, generator=generator, dtype=torch.float64)
        signs = torch.randint(0, 2, (width,), generator=generator, dtype=torch.int64) * 2 - 1
        v = signs.to(torch.float64) / math.sqrt(width)
        self.W = nn.Parameter(W.to(device=device, dtype=dtype))
        self.train_output, self.alpha, self.center = bool(train_output), float(alpha), bool(center)
        self.parameterization = parameterization
        ntk_param = PARAMETERIZATIONS[parameterization]
        # ∂h/∂(output parameter)_k = output_multiplier · σ(w_k·x)
        self.output_multiplier = 1.0 / math.sqrt(width) if ntk_param else 1.0
        if not self.train_output:
            self.register_buffer("v", v.to(device=device, dtype=dtype))
        elif ntk_param:
            self.a = nn.Parameter(signs.to(device=device, dtype=dtype))
        else:
            self.v = nn.Parameter(v.to(device=device, dtype=dtype))
        if self.center:
            self.register_buffer("W0", self.W.detach().clone())
            self.register_buffer("v0", self.v.detach().clone())

    def __getattr__(self, name: str) -> torch.Tensor | nn.Module:
        # NTK-parameterized trained output layer: the parameter is a, and v = a/√m stays the
        # output weights every reader (kernels, checkpoints) takes from `model.v`.
        if name == "v" and "a" in self._parameters:
            return self._parameters["a"] * self.output_multiplier
        return super().__getattr__(name)

    def sigma(self, Z: torch.Tensor) -> torch.Tensor:
        """σ applied elementwise, with this net's ε."""
        return sigma(Z, self.negative_slope)

    def sigma_prime(self, Z: torch.Tensor) -> torch.Tensor:
        """σ' applied elementwise, with this net's ε."""
        return sigma_prime(Z, self.negative_slope)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X (n, d) → f (n,); also accepts a single sample (d,) → scalar."""
        h = self.sigma(X @ self.W.T) @ self.v
        if self.center:
            h = h - self.sigma(X @ self.W0.T) @ self.v0
        return h if self.alpha == 1.0 else self.alpha * h

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, width={self.width}, activation={self.activation}, "
            f"negative_slope={self.negative_slope}, train_output={self.train_output}, "
            f"alpha={self.alpha}, center={self.center}, parameterization={self.parameterization}"
        )


def output_scale(model: nn.Module) -> float:
    """α of f = α h for a OneHiddenLayer; 1 for any other module (its loss is the plain MSE)."""
    return model.alpha if isinstance(model, OneHiddenLayer) else 1.0


def trains_only_W(model: nn.Module) -> bool:
    """A OneHiddenLayer whose only trained tensor is W, with no output scale: the case the
    fast closed forms (integer co-activation counts, the two-GEMM product u ↦ K u) cover."""
    if not isinstance(model, OneHiddenLayer):
        return False
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    return trained == ["W"] and model.alpha == 1.0
