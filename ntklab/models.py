"""The nets: one-hidden-layer h(x) = <v, σ(W x)> with its options, the deep MLP, and the plain
linear model ⟨w, x⟩; the activations σ, their slopes σ′, init."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

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
    """σ(z) = max(z, εz) elementwise (σ(z) = z when ε = 1, the linear net), by torch's own
    kernel: the values of torch.where(z ≥ 0, z, εz) bit for bit (±0 and NaN included) at a
    twentieth of its cost on the CPU. Autograd's slope at z = 0 exactly is then ε where
    `sigma_prime` says 1: they differ only where a pre-activation is exactly 0, and for a
    sample x = 0 that changes nothing (its gradient σ'(z) v x is 0 either way)."""
    if negative_slope == 1.0:
        return Z
    return torch.nn.functional.leaky_relu(Z, negative_slope)


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

    def linearization(
        self, X: torch.Tensor, params0: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        """f(X; θ_0), (n, 1), and a function that returns J_0 (θ − θ_0), (n, 1), for the net's
        current θ, in closed form: θ_0 = `params0` (the trained tensors' values at init, by
        name: W, and a or v when the output layer is trained). With Z_0 = X W_0ᵀ,

            J_0 (θ − θ_0) = α [ (σ'(Z_0) ⊙ (X ΔWᵀ)) v_0 + σ(Z_0) Δv ],

        the row-wise dot of X with (σ'(Z_0) ⊙ v_0) ΔW: one GEMM per call once what depends
        on θ_0 and X alone is kept, and no autodiff (torch.func.jvp's first call alone takes
        about a second). The centring term is a constant, so it enters f(θ_0) only."""
        with torch.no_grad():
            W0 = params0["W"].to(self.W.dtype)
            if not self.train_output:
                v0 = self.v
            elif "a" in params0:
                v0 = params0["a"].to(self.W.dtype) * self.output_multiplier
            else:
                v0 = params0["v"].to(self.W.dtype)
            Z0 = X @ W0.T
            S0 = self.sigma(Z0)
            f0 = S0 @ v0
            if self.center:
                f0 = f0 - self.sigma(X @ self.W0.T) @ self.v0
            P0 = self.sigma_prime(Z0) * v0  # ∂f_i/∂w_k = P0_ik x_i (before α)
            del Z0

        def change() -> torch.Tensor:
            with torch.no_grad():
                out = (P0 @ (self.W - W0) * X).sum(dim=1)
                if self.train_output:
                    out = out + S0 @ (self.v - v0)
                return (out if self.alpha == 1.0 else self.alpha * out).reshape(-1, 1)

        return (f0 if self.alpha == 1.0 else self.alpha * f0).reshape(-1, 1), change

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, width={self.width}, activation={self.activation}, "
            f"negative_slope={self.negative_slope}, train_output={self.train_output}, "
            f"alpha={self.alpha}, center={self.center}, parameterization={self.parameterization}"
        )


class PlainLinear(nn.Module):
    """f(x) = ⟨w, x⟩, w ∈ R^d: a linear model with no hidden layer and no bias, the model of
    the lecture notes' regularised logistic regression (loss=logistic with optim.weight_decay).
    Its kernel is X Xᵀ whatever w is. Init w ~ N(0, I_d), drawn on the CPU in float64 from
    `generator` (or `seed`), as the hidden rows of OneHiddenLayer are."""

    def __init__(
        self,
        d: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if int(d) != d or d <= 0:
            raise ValueError(f"d={d} must be a positive integer")
        self.d = int(d)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        w = torch.randn(self.d, generator=generator, dtype=torch.float64)
        self.w = nn.Parameter(w.to(device=device, dtype=dtype))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X (n, d) → f (n,); a single sample (d,) → scalar."""
        return X @ self.w

    def extra_repr(self) -> str:
        return f"d={self.d}"


def output_magnitude(model: nn.Module, X: torch.Tensor) -> torch.Tensor | None:
    """Σ_k |term_k| of the sum that forms each output, (n,) or (n, k): the scale of the output's
    rounding error (eps times it). None for a module whose last sum is not known here."""
    with torch.no_grad():
        if isinstance(model, OneHiddenLayer):
            mag = model.sigma(X @ model.W.T).abs() @ model.v.abs()
            if model.center:
                mag = mag + model.sigma(X @ model.W0.T).abs() @ model.v0.abs()
            return mag * model.alpha
        if isinstance(model, MLP):
            mag = model.layers(X)[1][-1].abs() @ (model.out.abs() * model.multiplier).T
            return mag.squeeze(-1) if model.outputs == 1 else mag
        if isinstance(model, PlainLinear):
            return X.abs() @ model.w.abs()
    return None


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


def relu(Z: torch.Tensor, negative_slope: float | None = None) -> torch.Tensor:
    """σ(z) = max(z, 0): `sigma` at ε = 0, by torch's own kernel (the slope is ignored)."""
    return torch.relu(Z)


def step(Z: torch.Tensor, negative_slope: float | None = None) -> torch.Tensor:
    """σ'(z) = 1 for z ≥ 0, else 0: `sigma_prime` at ε = 0."""
    return (Z >= 0).to(Z.dtype)


def tanh(Z: torch.Tensor, negative_slope: float | None = None) -> torch.Tensor:
    """σ(z) = tanh z (the slope argument is ignored: tanh has none)."""
    return torch.tanh(Z)


def tanh_prime(Z: torch.Tensor, negative_slope: float | None = None) -> torch.Tensor:
    """σ'(z) = 1 − tanh² z."""
    return 1 - torch.tanh(Z).square()


class Activation(NamedTuple):
    """An MLP's σ and σ′, each called as f(Z, ε). `slope` is ε where the activation fixes it,
    None where `negative_slope` chooses it; `piecewise_linear` (σ(z) = max(z, εz)) is what the
    arc-cosine closed form of the infinite-width kernel needs."""

    sigma: Callable[..., torch.Tensor]
    prime: Callable[..., torch.Tensor]
    slope: float | None
    piecewise_linear: bool = True


MLP_ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(relu, step, 0.0),
    "leaky_relu": Activation(sigma, sigma_prime, None),
    "linear": Activation(sigma, sigma_prime, 1.0),
    "tanh": Activation(tanh, tanh_prime, None, piecewise_linear=False),
}


def _mlp_activation(activation: str, negative_slope: float, sizes: dict[str, int]) -> Activation:
    """The MLP's activation, after checking its arguments (ValueError naming the bad one)."""
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is unknown; choose one of {sorted(MLP_ACTIVATIONS)}"
        )
    for name, value in sizes.items():
        if int(value) != value or value <= 0:
            raise ValueError(f"{name}={value} must be a positive integer")
    if activation == "leaky_relu" and not 0.0 <= negative_slope < 1.0:
        raise ValueError(f"negative_slope={negative_slope} must lie in [0, 1)")
    return MLP_ACTIVATIONS[activation]


class MLP(nn.Module):
    """A deep net in the NTK parameterization, every layer trained, no biases (docs/theory.md):

        h¹ = W¹ x,   h^{l+1} = W^{l+1} σ(h^l) / √m,   f(x) = V σ(h^L) / √m,

    `depth` = L hidden layers of `width` m; W¹ (m, d) and W^l (m, m) have N(0, 1) entries, the
    output layer V (k, m) Rademacher signs ±1, k = `outputs`. The first layer keeps the data's
    scale (no 1/√d), as the one-hidden-layer net does: depth 1 is `OneHiddenLayer` with
    `train_output=True` (NTK parameterization), drawn from the same seed. f is (n,) for one
    output and (n, k) for k. `negative_slope` is ε of "leaky_relu" (ignored otherwise).
    """

    def __init__(
        self,
        d: int,
        width: int,
        depth: int,
        activation: str = "relu",
        negative_slope: float = 0.1,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        *,
        outputs: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        sizes = {"d": d, "width": width, "depth": depth, "outputs": outputs}
        act = _mlp_activation(activation, negative_slope, sizes)
        self.activation, self.act = activation, act
        self.negative_slope = act.slope if activation != "leaky_relu" else float(negative_slope)
        self.d, self.width, self.depth, self.outputs = int(d), int(width), int(depth), int(outputs)
        # Draw on the CPU from one generator, in the one-hidden-layer net's order (W¹, then
        # the signs), so that a seed gives the same net on every device and at depth 1.
        g = torch.Generator().manual_seed(int(seed))
        shapes = [(width, d)] + [(width, width)] * (depth - 1)
        hidden = [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes]
        signs = torch.randint(0, 2, (outputs, width), generator=g, dtype=torch.int64) * 2 - 1
        to = {"device": device, "dtype": dtype}
        self.hidden = nn.ParameterList([nn.Parameter(W.to(**to)) for W in hidden])
        self.out = nn.Parameter(signs.to(**to))
        self.multiplier = 1.0 / math.sqrt(width)  # the 1/√m of every layer after the first

    def sigma(self, Z: torch.Tensor) -> torch.Tensor:
        return self.act.sigma(Z, self.negative_slope)

    def sigma_prime(self, Z: torch.Tensor) -> torch.Tensor:
        return self.act.prime(Z, self.negative_slope)

    def layer_multipliers(self) -> list[float]:
        """c_l of h^l = c_l W^l σ(h^{l−1}) for l = 1 … L + 1 (the output layer last)."""
        return [1.0] + [self.multiplier] * self.depth

    def layers(self, X: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The pre-activations h¹ … h^L and the activations a⁰ = X, a¹ … a^L on X (n, d)."""
        H, A = [], [X]
        for W, c in zip(self.hidden, self.layer_multipliers(), strict=False):
            Z = A[-1] @ W.T
            H.append(Z if c == 1.0 else Z * c)
            A.append(self.sigma(H[-1]))
        return H, A

    def preactivations(self, X: torch.Tensor) -> list[torch.Tensor]:
        """h¹ … h^L on X (n, d): L tensors (n, m)."""
        return self.layers(X)[0]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X (n, d) → f (n,) for one output, (n, k) for k; a single sample (d,) → () or (k,)."""
        A = self.layers(X)[1][-1]
        f = A @ (self.out * self.multiplier).T
        return f.squeeze(-1) if self.outputs == 1 else f

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, width={self.width}, depth={self.depth}, activation={self.activation}, "
            f"negative_slope={self.negative_slope}, outputs={self.outputs}"
        )
