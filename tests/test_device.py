"""Device handling that holds on every machine: auto picks what is there, TF32 stays off."""

import re
from pathlib import Path

import pytest
import torch

from ntklab.config import ConfigError
from ntklab.ntk import exact_matmul
from ntklab.problem import resolve_device

PACKAGE = Path(__file__).resolve().parents[1] / "ntklab"


def test_no_hard_coded_cuda_calls_in_library_code():
    for path in PACKAGE.glob("*.py"):
        assert not re.search(r"\.cuda\(", path.read_text()), path.name


def test_auto_device_follows_the_hardware():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="device='cuda': no CUDA GPU is visible"):
        resolve_device("cuda")


def test_tf32_is_off_while_kernels_are_computed_and_restored_after():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with exact_matmul():
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
