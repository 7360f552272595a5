"""Callbacks of the training loop: weight and PL metrics, NTK tracking, checkpoints, guards."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ntklab.logger import RunLogger, atomic_torch_save
from ntklab.ntk import MATRIX_FREE, choose_method, empirical_ntk, ntk_operator
from ntklab.spectrum import ExtremeEig, Spectrum, dense_spectrum, lanczos
from ntklab.theory import pl_mu
from ntklab.train import Callback, TrainState


class WeightMetrics(Callback):
    """weights/* (distance of W_t from W_0) and pl/ratio = ‖∇L(W_t)‖² / L(W_t), every epoch."""

    def on_train_start(self, state: TrainState) -> None:
        if not hasattr(self, "W0"):
            self.W0 = state.model.W.detach().clone()
            self.W0_norm = float(self.W0.norm())

    def on_epoch_end(self, state: TrainState) -> None:
        diff = state.model.W.detach() - self.W0
        dist = float(diff.norm())
        grad_sq = sum(float(g.pow(2).sum()) for g in state.full_grads())
        state.metrics.update(
            {
                "weights/dist_from_init": dist,
                "weights/rel_dist_from_init": dist / self.W0_norm,
                "weights/max_neuron_dist": float(diff.norm(dim=1).max()),
                "pl/ratio": grad_sq / state.loss if state.loss > 0 else math.nan,
            }
        )

    def state_dict(self) -> dict[str, object]:
        return {"W0": self.W0, "W0_norm": self.W0_norm} if hasattr(self, "W0") else {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "W0" in state:
            self.W0, self.W0_norm = state["W0"], float(state["W0_norm"])


class NTKTracker(Callback):
    """K_t = JᵀJ every `every` epochs (and always at epoch 0 and the last epoch): its extreme
    eigenvalues in float64, its relative change from K_0 and the PL constant μ_t.

    `method` is a key of ntk.METHODS. Dense methods form K (shared on the train state);
    "ntvp" never forms it: λ_max and λ_min come from Lanczos on u ↦ K u (tolerance `tol` on
    the relative residual, at most `max_iter` products, warm-started from the previous
    tracked epoch's eigenvectors), and ntk/rel_change is not logged (it needs K_t − K_0).
    "auto" picks dense when the kernel and its eigvalsh fit `memory_budget_mb`.
    After the first use `method` names the method that actually ran.
    """

    def __init__(
        self,
        method: str = "structured",
        every: int = 1,
        memory_budget_mb: float = 2048.0,
        tol: float = 1e-4,
        max_iter: int = 500,
    ) -> None:
        self.requested = self.method = method
        self.every = int(every)
        self.budget = float(memory_budget_mb) * 2**20
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.K0: torch.Tensor | None = None
        self.vectors: dict[str, torch.Tensor] = {}  # warm starts: "max", "min"
        self.last: dict[str, float] = {}
        # K_0 and its spectrum from the theory step's λ_max, reused at epoch 0: computing the
        # initial kernel once at start-up, not twice.
        self._initial: tuple[torch.Tensor, Spectrum] | None = None

    def resolve(self, model: torch.nn.Module, X: torch.Tensor) -> str:
        if self.requested == "auto":
            self.method = choose_method(model, X, self.budget)
        return self.method

    @property
    def matrix_free(self) -> bool:
        return self.method in MATRIX_FREE

    def due(self, state: TrainState) -> bool:
        if self.every <= 0:
            return False
        return (
            state.epoch % self.every == 0 or state.epoch == state.epochs or state.stop is not None
        )

    def on_train_start(self, state: TrainState) -> None:
        self.resolve(state.model, state.X)
        if self.every <= 0:
            self._initial = None  # tracking off: nothing will reuse K_0
        if self.matrix_free and self.every > 0:
            warnings.warn(
                f"ntk.method={self.method}: K is never formed, so ntk/rel_change "
                "(‖K_t − K_0‖_F / ‖K_0‖_F) is not logged",
                stacklevel=2,
            )

    def lambda_max(self, model: torch.nn.Module, X: torch.Tensor) -> float:
        """λ_max(K) of `model` on X by the resolved method (for the theory step size)."""
        if self.resolve(model, X) in MATRIX_FREE:
            return self._lanczos(ntk_operator(model, X), X, largest=True).value
        K = empirical_ntk(model, X, method=self.method)
        spec = dense_spectrum(K)
        self._initial = (K, spec)
        return spec.lambda_max

    def _lanczos(self, apply, X: torch.Tensor, largest: bool) -> ExtremeEig:
        key = "max" if largest else "min"
        eig = lanczos(
            apply,
            X.shape[0],
            largest=largest,
            tol=self.tol,
            max_iter=self.max_iter,
            v0=self.vectors.get(key),
            device=X.device,
        )
        self.vectors[key] = eig.vector
        return eig

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.due(state):
            return
        self.resolve(state.model, state.X)
        metrics = self._matrix_free(state) if self.matrix_free else self._dense(state)
        alpha = getattr(state.model, "alpha", 1.0)
        metrics["pl/mu"] = pl_mu(metrics["ntk/lambda_min"], state.n, alpha)
        # κ is only meaningful when λ_min rises above round-off; otherwise it is not logged.
        if metrics["ntk/lambda_min_resolved"]:
            metrics["ntk/condition_number"] = metrics["ntk/lambda_max"] / metrics["ntk/lambda_min"]
        state.metrics.update(metrics)
        self.last = metrics

    def _dense(self, state: TrainState) -> dict[str, float]:
        initial, self._initial = self._initial, None
        if initial is not None and state.epoch == 0 and self.K0 is None:
            K, spec = initial  # the parameters have not moved since lambda_max computed it
        else:
            K = empirical_ntk(state.model, state.X, method=self.method)
            spec = dense_spectrum(K)
        if self.K0 is None:
            self.K0 = K
        state.K, state.K0, state.spectrum = K, self.K0, spec
        return {
            "ntk/lambda_min": spec.lambda_min,
            "ntk/lambda_max": spec.lambda_max,
            "ntk/rel_change": float((K - self.K0).norm() / self.K0.norm()),
            "ntk/roundoff_floor": spec.roundoff,
            "ntk/lambda_min_resolved": float(spec.resolved),
        }

    def _matrix_free(self, state: TrainState) -> dict[str, float]:
        apply = ntk_operator(state.model, state.X)
        top = self._lanczos(apply, state.X, largest=True)
        bottom = self._lanczos(apply, state.X, largest=False)
        converged = top.converged and bottom.converged
        if not converged:
            warnings.warn(
                f"epoch {state.epoch}: Lanczos did not reach ntk.tol={self.tol:g} in "
                f"ntk.max_iter={self.max_iter} products (relative residuals "
                f"{top.residual / abs(top.value):.2g} for λ_max, "
                f"{bottom.residual / abs(bottom.value):.2g} for λ_min); "
                "raise ntk.max_iter or ntk.tol",
                stacklevel=2,
            )
        floor = state.n * torch.finfo(torch.float64).eps * abs(top.value)
        return {
            "ntk/lambda_min": bottom.value,
            "ntk/lambda_max": top.value,
            "ntk/roundoff_floor": floor,
            "ntk/lambda_min_resolved": float(bottom.value > floor),
            "ntk/eig_converged": float(converged),
            "ntk/eig_iterations": float(top.iterations + bottom.iterations),
        }

    def state_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "K0": self.K0,
            "last": dict(self.last),
            **{f"v_{k}": v for k, v in self.vectors.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.method = str(state.get("method", self.method))
        self.K0 = state.get("K0")
        self.last = dict(state.get("last", {}))
        self.vectors = {k[2:]: v for k, v in state.items() if k.startswith("v_") and v is not None}


class DivergenceGuard(Callback):
    """Stops the run when the loss is NaN/inf or exceeds `factor` × L_0, and remembers the last
    finite loss (and its epoch) for the run's summary."""

    def __init__(self, factor: float = 1e6) -> None:
        self.factor = float(factor)
        self.L0: float | None = None
        self.last_finite: float | None = None
        self.last_finite_epoch: int | None = None
        self.diverged_epoch: int | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        if self.L0 is None:
            self.L0 = state.loss
        loss = state.loss
        if math.isfinite(loss) and loss <= self.factor * max(self.L0, 1e-300):
            self.last_finite, self.last_finite_epoch = loss, state.epoch
            return
        self.diverged_epoch = state.epoch
        state.stop = "diverged"
        why = (
            f"loss {loss:.4g}"
            if not math.isfinite(loss)
            else f"loss {loss:.4g} > {self.factor:g} × L_0"
        )
        before = (
            "no finite loss before it"
            if self.last_finite is None
            else f"last finite loss {self.last_finite:.6g} at epoch {self.last_finite_epoch}"
        )
        state.message = (
            f"diverged at epoch {state.epoch}: {why} (L_0 {self.L0:.4g}, {before}); "
            f"lower optim.lr (it was {state.lr:.4g})"
        )

    def report(self) -> dict[str, object] | None:
        """The summary's account of a divergence (None when the run did not diverge)."""
        if self.diverged_epoch is None:
            return None
        return {
            "epoch": self.diverged_epoch,
            "last_finite_loss": self.last_finite,
            "last_finite_epoch": self.last_finite_epoch,
            "initial_loss": self.L0,
            "factor": self.factor,
        }

    def state_dict(self) -> dict[str, object]:
        keys = ("L0", "last_finite", "last_finite_epoch", "diverged_epoch")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why and what to do."""


def _named(callbacks: Sequence[Callback]) -> dict[str, Callback]:
    """Callbacks keyed by class name (a repeated class gets #2, #3, …) for the checkpoint."""
    named: dict[str, Callback] = {}
    for cb in callbacks:
        name = base = type(cb).__name__
        k = 1
        while name in named:
            k += 1
            name = f"{base}#{k}"
        named[name] = cb
    return named


class Checkpointer(Callback):
    """checkpoints/init.pt at the start, checkpoints/last.pt every `every` epochs (0: never),
    when the run ends for any reason (completed, diverged, interrupted); each write atomic.

    last.pt holds the loop's state (TrainState.state_dict: W, v, momentum buffers, step-size
    schedule, epoch, RNG states), every other callback's `state_dict()` and the run's config,
    all loadable with torch.load(..., weights_only=True). Put it after the LogWriter: a
    checkpoint of epoch t then always has epoch t's records on disk before it."""

    def __init__(
        self,
        run_dir: str | Path,
        every: int = 10,
        callbacks: Sequence[Callback] = (),
        config: dict[str, object] | None = None,
    ) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.every = int(every)
        self.callbacks = callbacks  # read at save time: callbacks added later are included
        self.config = config or {}

    @property
    def last_path(self) -> Path:
        return self.dir / "last.pt"

    def payload(self, state: TrainState) -> dict[str, object]:
        others = {k: cb for k, cb in _named(self.callbacks).items() if cb is not self}
        return {
            **state.state_dict(),
            "callbacks": {k: cb.state_dict() for k, cb in others.items()},
            "config": self.config,
        }

    def save(self, state: TrainState, name: str = "last.pt") -> None:
        atomic_torch_save(self.payload(state), self.dir / name)

    def on_train_start(self, state: TrainState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if state.epoch == 0:
            self.save(state, "init.pt")

    def on_epoch_end(self, state: TrainState) -> None:
        # The last epoch and a stopped run are saved by on_train_end.
        due = self.every > 0 and state.epoch > 0 and state.epoch % self.every == 0
        if due and state.epoch < state.epochs and not state.stop:
            self.save(state)

    def on_train_end(self, state: TrainState) -> None:
        self.save(state)

    def load(self, device: torch.device | str = "cpu") -> dict:
        """last.pt with its tensors on `device` (weights_only: no code runs while loading)."""
        try:
            return torch.load(self.last_path, map_location=device, weights_only=True)
        except Exception as err:  # torch raises several types for a damaged or foreign file
            detail = str(err).split(". ")[0].splitlines()[0] if str(err) else "no detail"
            raise CheckpointError(
                f"{self.last_path} cannot be loaded ({type(err).__name__}: {detail}); "
                "start the run afresh with overwrite=true"
            ) from None

    def restore(self, payload: dict, state: TrainState) -> None:
        """Put the loop and every other callback back where the checkpoint left them."""
        saved = payload["callbacks"]
        others = {k: cb for k, cb in _named(self.callbacks).items() if cb is not self}
        missing = sorted(set(others) - set(saved))
        if missing:
            raise CheckpointError(
                f"{self.last_path} holds no state for {', '.join(missing)}, so the run cannot "
                "continue exactly; start it afresh with overwrite=true"
            )
        state.load_state_dict(payload)
        for key, cb in others.items():
            cb.load_state_dict(saved[key])


class LogWriter(Callback):
    """Hands each epoch's metrics to the run's logger (runs after every callback that adds
    metrics; only the Checkpointer comes later)."""

    def __init__(self, logger: RunLogger) -> None:
        self.logger = logger

    def on_epoch_end(self, state: TrainState) -> None:
        self.logger.log(state.epoch, state.metrics)

    def on_train_end(self, state: TrainState) -> None:
        self.logger.writer.flush()
