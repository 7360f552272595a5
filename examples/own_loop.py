"""Track the NTK of your own model in your own training loop: a small nn.Sequential trained with
torch.optim.SGD in a plain PyTorch loop, measured by ntklab's NTKMonitor into TensorBoard.

    python examples/own_loop.py                       # writes runs/own_loop/
    python examples/own_loop.py --logdir /tmp/x --epochs 20 --width 64
    tensorboard --logdir runs/own_loop --host 127.0.0.1
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from ntklab.monitor import NTKMonitor


def make_data(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n points on the unit sphere in R^d, labelled by a random two-layer teacher."""
    g = torch.Generator().manual_seed(seed)
    X = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    teacher = torch.randn(d, 4, generator=g)
    y = torch.tanh(X @ teacher).sum(dim=1)
    return X, (y - y.mean()) / y.std()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logdir", default="runs/own_loop")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--every", type=int, default=10)
    a = p.parse_args()

    torch.manual_seed(0)
    X, y = make_data(n=64, d=8)
    model = nn.Sequential(
        nn.Linear(8, a.width), nn.ReLU(), nn.Linear(a.width, a.width), nn.ReLU(),
        nn.Linear(a.width, 1),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    writer = SummaryWriter(a.logdir)
    monitor = NTKMonitor(model, X, y, every=a.every, writer=writer)

    print(f"{'epoch':>5} {'loss':>10} {'λ_min(K)':>10} {'λ_max(K)':>10} {'kernel dist':>12}")
    for epoch in range(a.epochs + 1):
        if epoch > 0:  # your training step(s), exactly as you would write them
            opt.zero_grad()
            loss = (model(X).squeeze(-1) - y).pow(2).mean()
            loss.backward()
            opt.step()
        m = monitor.step(epoch, force=epoch == a.epochs)
        if "ntk/lambda_min" in m:
            print(
                f"{epoch:>5} {m['loss/train']:>10.4g} {m['ntk/lambda_min']:>10.4g} "
                f"{m['ntk/lambda_max']:>10.4g} {m['ntk/kernel_distance']:>12.3g}"
            )
    writer.close()
    holds = all(r["pl/ratio"] >= r["pl/mu"] for r in monitor.history if "pl/mu" in r)
    print(f"pl/ratio ≥ pl/mu at every tracked epoch: {holds}")
    print(f"TensorBoard: tensorboard --logdir {a.logdir} --host 127.0.0.1")


if __name__ == "__main__":
    main()
