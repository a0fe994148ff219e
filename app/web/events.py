"""The cluster's event stream, as plain JSON-ready dicts, fanned out to subscribers.

The simulator calls `EventBus.sim_sink` synchronously for every observable step. Each
event becomes one dict, built once, and every subscriber (metrics, WebSocket clients)
gets the same object: subscribers must not mutate it and must not block. A subscriber
that raises is dropped, so one broken consumer cannot stop the cluster.

Event shape: `{"t": virtual ms, "kind": str, "node": replica id or None, ...fields}`.
Kinds: sent, delivered, dropped (src, dst, msg, payloads, mid, deliver_at / reason),
applied (dots as [actor, n], keys as [ns, key], via: local|payload|ae), membership (peer,
status), write (ns, key), crash, recover, partition (groups), heal.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

Subscriber = Callable[[dict], object]  # what it returns is ignored


def to_json_event(ev) -> dict:
    """A SimEvent as a JSON-ready dict (dots and key refs become lists)."""
    out = {"t": ev.t, "kind": ev.kind, "node": ev.node}
    for k, v in ev.data.items():
        if k == "kind":  # the message kind of traffic events
            out["msg"] = v
        elif k in ("dots", "keys"):
            out[k] = [list(x) for x in v]
        else:
            out[k] = v
    return out


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)

        def unsubscribe() -> None:
            if fn in self._subs:
                self._subs.remove(fn)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: dict) -> None:
        for fn in list(self._subs):
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber failed; dropping it")
                if fn in self._subs:
                    self._subs.remove(fn)

    def sim_sink(self, ev) -> None:
        if self._subs:
            self.publish(to_json_event(ev))
