"""The hand-written updates against autograd and their recurrences, in float64."""

import copy

import pytest
import torch

from ntklab.config import load
from ntklab.optim import draws, full_batch, reshuffled, with_replacement
from ntklab.problem import minibatches, steps_per_epoch
from ntklab.train import Callback, fit, loss_and_grads, mse

from conftest import compose_config

F64 = torch.float64


def test_gd_step_is_W_minus_lr_grad(make_state):
    state = make_state(epochs=1)
    W0 = state.model.W.detach().clone()
    W = W0.clone().requires_grad_(True)
    Z = state.X @ W.T
    loss = ((torch.where(Z >= 0, Z, 0.1 * Z) @ state.model.v - state.y) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, W)
    fit(state)
    assert torch.allclose(state.model.W.detach(), W0 - 0.3 * grad, rtol=0, atol=1e-14)


def test_sgd_with_full_batch_equals_gd(make_state):
    gd = make_state(epochs=8)
    sgd = make_state(epochs=8, batches=lambda n, g: reshuffled(n, n, g))
    fit(gd)
    fit(sgd)
    assert torch.allclose(gd.model.W, sgd.model.W, rtol=0, atol=1e-12)
    assert gd.loss == pytest.approx(sgd.loss, rel=1e-12)


def test_momentum_matches_recurrence(make_state):
    state = make_state(epochs=6, lr=0.1, momentum=0.9)
    model, X, y = state.model, state.X, state.y
    W, b = model.W.detach().clone(), torch.zeros_like(model.W)
    reference = copy.deepcopy(state.model)
    for _ in range(6):  # b_{t+1} = μ b_t + ∇L(W_t);  W_{t+1} = W_t − lr b_{t+1}
        with torch.no_grad():
            reference.W.copy_(W)
        _, (g,) = loss_and_grads(reference, X, y)
        b = 0.9 * b + g
        W = W - 0.1 * b
    fit(state)
    assert torch.allclose(model.W.detach(), W, rtol=0, atol=1e-12)
    assert torch.allclose(state.optimizer.buffers[0], b, rtol=0, atol=1e-12)


def test_reshuffled_covers_every_sample_once_per_epoch():
    g = torch.Generator().manual_seed(0)
    batches = reshuffled(10, 3, g)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches), torch.cat(reshuffled(10, 3, g)))


def test_sgd_minibatch_step_uses_the_batch_gradient(make_state):
    state = make_state(epochs=1, lr=0.05, batches=lambda n, gen: reshuffled(n, 5, gen))
    W0 = state.model.W.detach().clone()
    order = reshuffled(12, 5, torch.Generator().manual_seed(2))  # the state's generator
    ref = copy.deepcopy(state.model)
    W = W0.clone()
    for idx in order:
        with torch.no_grad():
            ref.W.copy_(W)
        (g,) = torch.autograd.grad(mse(ref, state.X[idx], state.y[idx]), ref.W)
        W = W - 0.05 * g
    fit(state)
    assert torch.allclose(state.model.W.detach(), W, rtol=0, atol=1e-13)


def _counts(state, resume: bool = False) -> list[tuple[int, int]]:
    """(optim/steps, optim/grad_evals) of every record of a run of `state`."""
    seen = []

    class Record(Callback):
        def on_epoch_end(self, s) -> None:
            seen.append((s.metrics["optim/steps"], s.metrics["optim/grad_evals"]))

    fit(state, [Record()], resume=resume)
    return seen


def test_gd_counts_n_gradients_per_step(make_state):
    assert _counts(make_state(epochs=3)) == [(0, 0), (1, 12), (2, 24), (3, 36)]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_counts_each_minibatch_it_draws(make_state, momentum):
    # n = 12, b = 5: reshuffled passes have batches 5, 5, 2; with replacement ⌈12/5⌉ = 3 draws
    # of 5 each; momentum changes the update, never what was evaluated
    shuffled = make_state(epochs=2, momentum=momentum, batches=lambda n, g: reshuffled(n, 5, g))
    assert _counts(shuffled) == [(0, 0), (3, 12), (6, 24)]
    drawn = make_state(epochs=2, momentum=momentum,
                       batches=lambda n, g: with_replacement(n, 5, g))  # fmt: skip
    assert _counts(drawn) == [(0, 0), (3, 15), (6, 30)]


def test_the_counts_are_part_of_the_state_a_run_resumes_from(make_state):
    state = make_state(epochs=2, batches=lambda n, g: reshuffled(n, 5, g))
    fit(state)
    saved = state.state_dict()
    assert (saved["steps"], saved["grad_evals"]) == (6, 24)
    again = make_state(epochs=3, batches=lambda n, g: reshuffled(n, 5, g))
    again.load_state_dict(saved)
    assert _counts(again, resume=True) == [(9, 36)]  # epoch 3 only, counted on from epoch 2


def test_an_epoch_with_replacement_may_be_a_fraction_of_a_pass():
    cfg = load(compose_config("optim=sgd", "optim.sampling=replacement",
                              "optim.pass_fraction=0.25", "optim.batch_size=3"))  # fmt: skip
    short = minibatches(cfg, 3)(40, torch.Generator().manual_seed(5))
    assert [len(b) for b in short] == [3] * 4  # ⌈0.25 · 40/3⌉ = 4 draws of 3
    assert steps_per_epoch(cfg, 40, 3) == 4
    whole = with_replacement(40, 3, torch.Generator().manual_seed(5))
    assert len(whole) == 14
    assert all(torch.equal(a, b) for a, b in zip(short, whole[:4], strict=True))
    assert draws(40, 3) == 14 and draws(40, 3, 2.0) == 27 and draws(40, 3, 1e-9) == 1
    gd = load(compose_config("optim.pass_fraction=0.25"))  # SGD's key: GD takes one step
    assert minibatches(gd, 40) is full_batch and steps_per_epoch(gd, 40, 40) == 1
