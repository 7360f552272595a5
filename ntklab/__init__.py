"""ntklab: watch one-hidden-layer nets train through their empirical Neural Tangent Kernel."""

from __future__ import annotations

__all__ = ["OneHiddenLayer", "empirical_ntk"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # torch is imported on first use, so that `ntklab --help` and a signal during start-up
    # are answered before the heavy imports.
    if name == "OneHiddenLayer":
        from ntklab.models import OneHiddenLayer

        return OneHiddenLayer
    if name == "empirical_ntk":
        from ntklab.ntk import empirical_ntk

        return empirical_ntk
    raise AttributeError(f"module 'ntklab' has no attribute {name!r}")
