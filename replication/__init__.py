"""edgestate's replication core: causal clocks, delta-state CRDTs and a sans-IO replica.

Nothing here imports a web framework, reads a clock, or opens a socket.
"""

from .clocks import CausalContext, Dot, HybridLogicalClock, Timestamp, VersionVector
from .delta import Delta
from .errors import EdgeStateError
from .replica import KvView, Replica, Sibling

__all__ = [
    "CausalContext",
    "Delta",
    "Dot",
    "EdgeStateError",
    "HybridLogicalClock",
    "KvView",
    "Replica",
    "Sibling",
    "Timestamp",
    "VersionVector",
]
