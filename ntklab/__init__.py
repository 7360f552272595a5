"""ntklab: watch nets train through their empirical Neural Tangent Kernel: the lecture's
one-hidden-layer nets, deep MLPs, and any PyTorch module in its own training loop."""

from ntklab.models import MLP, OneHiddenLayer
from ntklab.monitor import NTKMonitor
from ntklab.ntk import empirical_ntk

__all__ = ["MLP", "NTKMonitor", "OneHiddenLayer", "empirical_ntk"]
__version__ = "0.1.0"
