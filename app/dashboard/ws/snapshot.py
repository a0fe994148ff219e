"""Reading the cluster for the stream: the coalesced slots and the snapshot a client gets first.

Nothing here mutates the cluster or runs the simulator. The snapshot carries, besides the
cluster's state and what the stream model kept, the facts the page would otherwise have to
copy from the server:

- `bounds`: how many recent writes and messages in flight the stream's model keeps (the
  page's recorder keeps the same, to rebuild a snapshot for any recorded moment);
- `strategies`: the dissemination strategies, the default first (the toolbar's picker);
- `server`: an id drawn when this server started, and again when its cluster is reset
  (`POST /api/reset`), so that a page which reconnects knows whether it reached the same run
  or a new one (whose clock and events start afresh); the snapshot sent to every client on a
  reset also carries `"reset": true`;
- `cuts`: the groups each of the toolbar's cuts makes on this cluster
  (`replication.scenarios.cuts.offered`: the named cuts, and each region isolated), so the
  page's "Cut the Atlantic" is the scenarios' `partition: atlantic`, computed in one place.
"""

from __future__ import annotations

import secrets
from typing import Callable, Protocol

from replication.contract import ClusterObserver, CoordinationInputs
from replication.derived import agree
from replication.dissemination import STRATEGIES
from replication.scenarios.cuts import offered

from .encoding import dumps
from .model import ANIMATED, StreamModel


class StreamSource(ClusterObserver, CoordinationInputs, Protocol):
    """What the stream reads of a cluster: the observer's role, and the placements for the cuts."""


class ClusterReader:
    def __init__(self, live: StreamSource, model: StreamModel, wall_ms: Callable[[], float], frame_s: float) -> None:
        self.live = live
        self.model = model
        self.wall_ms = wall_ms
        self.frame_s = frame_s
        self._topology: dict | None = None
        self._cuts: dict | None = None
        # which server this is: a page that reconnects to another one (a restart) starts afresh
        # instead of mixing two servers' clocks and event logs
        self.server = secrets.token_hex(8)

    def new_run(self) -> None:
        """The cluster was reset: a page holding the old run's events must start afresh."""
        self.server = secrets.token_hex(8)

    # placements never change while a cluster runs: the topology and the cuts are made once

    def topology(self) -> dict:
        if self._topology is None:
            self._topology = self.live.topology()
        return self._topology

    def cuts(self) -> dict:
        if self._cuts is None:
            self._cuts = offered(self.live.placements)
        return self._cuts

    def state_of(self, nid: str) -> dict:
        return {"kind": "state", "node": nid, **self.live.state_of(nid)}

    def convergence(self) -> dict:
        digests = self.live.digests()
        distinct = len(set(digests.values()))
        return {"kind": "convergence", "converged": agree(digests), "distinct": distinct, "up": len(digests)}

    def clock(self) -> dict:
        return {"kind": "clock", **self.live.clock_info(), "w": self.wall_ms()}

    def counters(self, *, forwarded: int, clients: int) -> dict:
        st = self.live.stats()
        return {
            "kind": "counters", "sent": st["sent"], "delivered": st["delivered"], "dropped": st["dropped"],
            "dropped_by_reason": st["dropped_by_reason"], "in_flight": st["in_flight"], "writes": st["writes"],
            "unshown": st["unshown"], "membership": self.model.membership_changes, "events": self.model.events_total,
            "forwarded": forwarded, "clients": clients, "w": self.wall_ms(),
        }

    def detail_of(self, nid: str) -> dict:
        """One replica's keyspace, most recently touched keys first (at most DETAIL_KEYS)."""
        return {"kind": "detail", "node": nid, **self.live.detail(nid, self.model.recent_keys)}

    def snapshot(self, counters: dict, *, reset: bool = False) -> dict:
        model = self.model
        out = {
            "kind": "snapshot", "w": self.wall_ms(), "topology": self.topology(),
            "replicas": [self.state_of(n) for n in self.live.ids],
            "convergence": self.convergence(), "clock": self.clock(), "counters": counters,
            "groups": model.groups, "groups_t": model.groups_t, "writes": [_rounded(w.to_json()) for w in model.writes], "animated": sorted(ANIMATED),
            "frame_ms": self.frame_s * 1000.0,
            "bounds": model.bounds(), "strategies": list(STRATEGIES), "cuts": self.cuts(),
            "server": self.server,
        }
        if reset:
            out["reset"] = True
        return out

    def snapshot_bytes(self, counters: dict, *, reset: bool = False) -> bytes:
        """`[snapshot]`, with the in-flight messages spliced in as the bytes already made."""
        body = dumps(self.snapshot(counters, reset=reset))
        flying = b",".join(self.model.in_flight.values())
        return b"[" + body[:-1] + b',"in_flight":[' + flying + b"]}]"


def _rounded(write: dict) -> dict:
    """A write with its times at the stream's resolution (events' times are rounded to the
    microsecond), so a write made in a cut's own instant never sorts before the cut."""
    write["t"] = round(write["t"], 3)
    write["arrivals"] = {n: round(t, 3) for n, t in write["arrivals"].items()}
    return write
