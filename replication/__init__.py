"""edgestate's replication system: causal clocks, delta-state CRDTs and a sans-IO replica
node; the simulator that drives the node on virtual time; and the real replica that drives
the same node over TCP with its state on disk.

Nothing in this package imports a web framework (or `app/`). The modules fall in four
layers, inner to outer (the core at the top, each outer layer in its own folder); `tests/test_layers.py` holds each module to its layer, and what a
layer may import:

- core, sans-IO: reads no clock, never sleeps, opens no socket and writes no file; callers
  pass time in, and every random choice comes from a generator seeded by the caller.
  `clocks`, `crdts`, `values`, `bounds`, `tokens`, `errors`, `seals`, `delta`, `store`, `replica`,
  `messages`, `wire`, `dissemination`, `antientropy`, `membership`, `node`, `idempotency`,
  `geo`, `contract`, `derived`, `writes`, `listing`, `batch`, `changefeed`, `coalesce`.
- simulation, on virtual time: opens no socket and writes no file. `sim` (the simulator
  and the cluster of replicas on it), `baseline` (the coordinated baseline: consensus on the
  same simulator, and what it would cost), `scenarios` (but its command line). The cluster
  reads a wall clock only to measure the node's own work for a local write, and the live
  scenario driver only to pace itself; neither reading changes the run.
- real I/O, on the wall clock: sockets (asyncio), SQLite and files. `io` (the transport,
  storage and its integrity checks, the write-ahead log, schema migration, the runner).
- tools: the command lines, benches and fault campaigns over the layers above, and the
  compiled build of the simulator's hot modules for batch runs.
  `cliargs`, `scenarios.cli`, `bench`, `native`.
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
