"""The stream's model: which events go to the page, and what a snapshot needs that only the
stream knows.

`StreamModel.take(ev)` is called synchronously from inside the simulator loop for every event
on the bus. It keeps, from the events themselves:

- the animated messages in flight (their serialised "sent" events, so a snapshot splices
  the bytes already made), at most `MAX_IN_FLIGHT`, the oldest forgotten first;
- the partition groups in force;
- the recent writes and their arrivals (`replication.writes.WriteTracker`, the
  `RECENT_WRITES` most recent), which the page's convergence chart draws;
- the keys touched most recently (at most `RECENT_KEYS`), the order of a replica's detail;
- the replicas whose state changed since the last frame (`dirty`).

and returns the bytes to forward for the events the page draws one by one (see the package
doc for which, and why), or None.

The page keeps the same model of the stream (to replay any recorded moment); it takes the
bounds from the snapshot (`bounds()`), so they are written here only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from replication.writes import WriteTracker

from .encoding import dumps

ANIMATED = frozenset({"payload", "ihave", "graft", "ae_reply"})
MAX_IN_FLIGHT = 4000  # animated messages remembered for the snapshot
RECENT_WRITES = 12
RECENT_KEYS = 2000

_NODE_EVENTS = frozenset({"crash", "recover"})


class StreamModel:
    def __init__(self, wall_ms: Callable[[], float]) -> None:
        self.wall_ms = wall_ms
        self.in_flight: dict[int, bytes] = {}  # mid -> its serialised "sent" event
        self.groups: list[list[str]] | None = None
        self.groups_t: float | None = None  # when the cut in force began: a page that joins later draws it from there
        self.writes = WriteTracker(keep=RECENT_WRITES)
        self.recent_keys: OrderedDict[tuple, None] = OrderedDict()
        self.dirty: set[str] = set()
        self.events_total = 0
        self.membership_changes = 0

    @staticmethod
    def bounds() -> dict:
        """What the page's copy of this model keeps, as the snapshot tells it."""
        return {"recent_writes": RECENT_WRITES, "in_flight": MAX_IN_FLIGHT}

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def take(self, ev: dict, forwarding: bool) -> bytes | None:
        """One event from the bus: update the model; the bytes to forward, if `forwarding` (a
        client is connected) and the page draws this event."""
        self.events_total += 1
        kind = ev["kind"]
        if kind == "sent":
            msg = ev["msg"]
            if msg not in ANIMATED:
                return None
            at = ev["deliver_at"]
            data = dumps({
                "kind": "sent", "t": round(ev["t"], 3), "src": ev["src"], "dst": ev["dst"], "msg": msg,
                "mid": ev["mid"], "deliver_at": None if at is None else round(at, 3), "w": self.wall_ms(),
            })
            if at is not None:
                fl = self.in_flight
                fl[ev["mid"]] = data
                if len(fl) > MAX_IN_FLIGHT:
                    del fl[next(iter(fl))]
            return data if forwarding else None
        if kind == "delivered":
            if ev["msg"] in ANIMATED:
                self.in_flight.pop(ev["mid"], None)
            return None
        if kind == "dropped":
            msg = ev["msg"]
            if msg not in ANIMATED:
                return None
            self.in_flight.pop(ev["mid"], None)
            out = {"kind": "dropped", "t": round(ev["t"], 3), "src": ev["src"], "dst": ev["dst"], "msg": msg,
                   "mid": ev["mid"], "reason": ev["reason"]}
        elif kind == "applied":
            node = ev["node"]
            self.dirty.add(node)
            self._applied(ev)
            out = {"kind": "applied", "t": round(ev["t"], 3), "node": node, "dots": ev["dots"], "keys": ev["keys"],
                   "via": ev["via"]}
            if ev.get("sib"):  # registers' sibling counts here after it (simulated clusters; the space-time diagram)
                out["sib"] = ev["sib"]
        elif kind == "status":  # a replica process reported a new version vector or digest
            self.dirty.add(ev["node"])
            return None
        elif kind in _NODE_EVENTS:
            self.dirty.add(ev["node"])
            out = {"kind": kind, **ev, "t": round(ev["t"], 3)}  # every event object starts with its kind
        elif kind == "partition":
            # rounded as writes' times are: a write made in the cut's own instant must not
            # appear to come before it (the space-time diagram's band would miss it)
            self.groups = [list(g) for g in ev["groups"]]
            self.groups_t = round(ev["t"], 3)
            out = {"kind": "partition", "t": self.groups_t, "groups": self.groups}
        elif kind == "heal":
            self.groups = self.groups_t = None
            out = {"kind": "heal", "t": round(ev["t"], 3)}
        elif kind == "membership":
            self.membership_changes += 1
            return None
        elif kind == "scenario":  # a scripted scenario's progress: captions, checks, the verdict
            out = dict(ev)
        else:  # "write" (its "applied" says the same) and kinds added later
            return None
        if not forwarding:
            return None
        out["w"] = self.wall_ms()
        return dumps(out)

    def _applied(self, ev: dict) -> None:
        recent = self.recent_keys
        for k in ev["keys"]:
            ref = (k[0], k[1])
            recent[ref] = None
            recent.move_to_end(ref)
        while len(recent) > RECENT_KEYS:
            recent.popitem(last=False)
        self.writes.observe(ev)
