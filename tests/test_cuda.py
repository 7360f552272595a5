"""The CUDA path agrees with the CPU (skipped without a GPU, with the reason shown)."""

import pytest
import torch

from ntklab.models import OneHiddenLayer
from ntklab.ntk import empirical_ntk

from conftest import read_metrics, run_cli

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible"),
]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("activation", ["leaky_relu", "linear"])
def test_structured_ntk_on_cuda_matches_float64_cpu(activation, dtype, tol):
    X = torch.randn(96, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cpu = OneHiddenLayer(12, 300, activation, 0.1, seed=1, dtype=torch.float64)
    gpu = OneHiddenLayer(12, 300, activation, 0.1, seed=1, dtype=dtype, device="cuda")
    assert torch.equal(gpu.W.detach().cpu().double(), cpu.W.detach().to(dtype).double())
    K_ref = empirical_ntk(cpu, X)
    for method in ("structured", "jacobian"):
        K = empirical_ntk(gpu, X.to("cuda", dtype), method=method)
        assert K.device.type == "cuda"
        err = float((K.double().cpu() - K_ref).norm() / K_ref.norm())
        assert err < tol, (method, err)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-3)])
def test_cuda_run_matches_cpu_run(tmp_path, dtype, rtol):
    args = ["data.n=64", "data.d=8", "model.width=256", "epochs=20", f"dtype={dtype}"]
    for device in ("cpu", "cuda"):
        proc = run_cli(*args, f"device={device}", f"hydra.run.dir={device}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    cpu, gpu = read_metrics(tmp_path / "cpu"), read_metrics(tmp_path / "cuda")
    assert [r["step"] for r in cpu] == [r["step"] for r in gpu]
    for a, b in zip(cpu, gpu, strict=True):
        for tag in ("loss/train", "ntk/lambda_min", "ntk/lambda_max", "weights/dist_from_init"):
            assert b[tag] == pytest.approx(a[tag], rel=rtol), (tag, a["step"])


def test_auto_device_picks_cuda(tmp_path):
    proc = run_cli("data.n=16", "model.width=8", "epochs=2", "hydra.run.dir=out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads((tmp_path / "out/summary.json").read_text())["hparams"]["device"].startswith(
        "cuda"
    )


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_mlp_kernel_on_cuda_matches_float64_cpu(dtype, tol):
    """The deep MLP's closed form and the generic route on the GPU, against the CPU in float64."""
    from ntklab.models import MLP

    X = torch.randn(80, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cpu = MLP(10, 256, 3, "relu", seed=2, dtype=torch.float64)
    gpu = MLP(10, 256, 3, "relu", seed=2, dtype=dtype, device="cuda")
    K_ref = empirical_ntk(cpu, X)
    for method in ("structured", "jacobian"):
        K = empirical_ntk(gpu, X.to("cuda", dtype), method=method)
        err = float((K.double().cpu() - K_ref).norm() / K_ref.norm())
        assert K.device.type == "cuda" and err < tol, (method, err)
