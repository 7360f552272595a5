"""ntklab: watch one-hidden-layer nets train through their empirical Neural Tangent Kernel."""

from ntklab.models import OneHiddenLayer
from ntklab.ntk import empirical_ntk

__all__ = ["OneHiddenLayer", "empirical_ntk"]
__version__ = "0.1.0"
