"""ntklab: watch nets train through their empirical Neural Tangent Kernel: the lecture's
one-hidden-layer nets, deep MLPs, and any PyTorch module in its own training loop."""

from __future__ import annotations

import importlib

__all__ = ["MLP", "NTKMonitor", "OneHiddenLayer", "empirical_ntk"]
__version__ = "0.1.0"

# name → the module that defines it. Imported on first use: torch and TensorBoard are heavy,
# and `import ntklab` (e.g. for `ntklab --help`) should not wait for them.
_HOMES = {
    "MLP": "ntklab.models",
    "NTKMonitor": "ntklab.monitor",
    "OneHiddenLayer": "ntklab.models",
    "empirical_ntk": "ntklab.ntk",
}


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ntklab' has no attribute {name!r}")
