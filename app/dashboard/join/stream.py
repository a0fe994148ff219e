"""The light stream for `/join` (WebSocket `/ws/join`): the talk's totals and the journey of
this phone's own writes, nothing else.

`/ws` carries every message the map animates (thousands a second with a busy hall): far too
much for a phone, and the cost grows with phones x events. Here each phone gets at most one
message per `PERIOD_S` (4 a second), made of:

- `totals`: the votes counter, the emoji set and the words in the register (at most
  `MAX_WORDS`, each at most `talk.MAX_WORD_CHARS`) as read at the reference replica, the
  first POP listed that is up. Read at most once a second (`TOTALS_EVERY` ticks) and only when
  an "applied" event touched one of the talk's keys there, serialised once and the same bytes
  given to every phone: with a hall tapping, totals to every phone at 4 a second were most of
  the server's sends.
- `journeys`: for each write this phone asked to follow (`{"watch": "<write id>"}`, at most
  `MAX_WATCH` at once, the oldest forgotten), how many of the replicas that are up have it and,
  once all of them do, `everywhere_ms`: virtual ms from the write until the last had it.
  Followed with `replication.writes.WriteTracker` (the `KEEP` most recent writes).

Every message: `{"w": server wall ms, "totals"?: {...}, "journeys"?: [...]}` as a text frame.

Bounded per connection: what waits for a phone is the latest totals and at most `MAX_WATCH`
journeys (latest wins), never a backlog. A phone whose send has waited `SEND_DEADLINE_S` (its
socket's buffers, bounded by `ws.limits`, are full: it does not read) is dropped with close code
1013, as on `/ws`; past `MAX_CLIENTS` phones a new one is refused with 1013 too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket

from replication.writes import Write, WriteTracker

from ..ws.client import wake_in_groups
from ..ws.encoding import wall_ms
from ..ws.endpoint import run_client
from ..ws.limits import MAX_MESSAGE
from . import talk

log = logging.getLogger(__name__)

PERIOD_S = 0.25  # at most 4 messages a second per phone
TOTALS_EVERY = 4  # ticks between totals sent to every phone: once a second (a journey still goes at once)
FULL_PASS_EVERY = 4  # ticks between looks at every followed write (else only those that moved)
MAX_WATCH = 16
WAKE_GROUP = 20  # phones woken per loop turn (ws.client.wake_in_groups)
KEEP = 8192  # writes followed: ~25 s of a 1000-phone hall writing every 3 s
MAX_WORDS = 12
MAX_CLIENTS = 5000
SEND_DEADLINE_S = 3.0
CLOSE_TOO_SLOW = 1013
_TALK = frozenset(talk.KEYS)


class JoinClient:
    """One phone: the latest totals and its journeys waiting to be sent, and its sender."""

    def __init__(self) -> None:
        self.totals: bytes | None = None
        self.watch: OrderedDict[str, tuple[Write, int]] = OrderedDict()  # id -> (write, reached last sent)
        self.journeys: dict[str, dict] = {}  # id -> latest update not yet sent
        self.wake = asyncio.Event()
        self.sending = False
        self.send_since = 0.0
        self.dropped = False
        self.closed = False
        self.sender: asyncio.Task | None = None
        self.messages = 0

    def take(self) -> bytes | None:
        if self.totals is None and not self.journeys:
            return None
        parts = [b'"w":' + str(round(wall_ms())).encode()]
        if self.totals is not None:
            parts.append(b'"totals":' + self.totals)
        if self.journeys:
            parts.append(b'"journeys":' + orjson.dumps(list(self.journeys.values())))
        self.totals, self.journeys = None, {}
        return b"{" + b",".join(parts) + b"}"

    async def run(self, websocket: WebSocket) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.dropped or self.closed:
                return
            data = self.take()
            if data is None:
                continue
            self.send_since, self.sending = time.monotonic(), True
            try:
                await websocket.send_text(data.decode())
            finally:
                self.sending = False
            self.messages += 1


class JoinHub:
    def __init__(self, live: Any, *, period_s: float = PERIOD_S, send_deadline_s: float = SEND_DEADLINE_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.live = live
        self.period_s = period_s
        self.send_deadline_s = send_deadline_s
        self.max_clients = max_clients
        self.tracker = WriteTracker(keep=KEEP)
        self.clients: set[JoinClient] = set()
        # Who follows which write, and the writes that got an arrival since the last tick: a tick
        # then looks only at those (with 1,000 phones each following up to 16 writes, looking at
        # every one 4 times a second held the loop for tens of ms). Every FULL_PASS_EVERY ticks,
        # and when the replicas that are up change, it looks at all of them.
        self.watchers: dict[str, set[JoinClient]] = {}
        self.moved: set[str] = set()
        self._ticks = 0
        self._since_totals = TOTALS_EVERY  # ticks since the totals were last read: the first tick reads them
        self._up_before: list[str] | None = None
        self.dirty = True  # the totals need reading
        self.totals: bytes = b"{}"
        self.totals_obj: dict = {}
        self.dropped_clients = 0
        self._task: asyncio.Task | None = None
        self._unsubscribe = live.bus.subscribe(self.on_event)

    def close(self) -> None:
        self._unsubscribe()

    def reset(self) -> None:
        """The cluster was reset: its writes and totals are gone."""
        self.tracker = WriteTracker(keep=KEEP)
        for c in self.clients:
            c.watch.clear()
        self.watchers.clear()
        self.moved.clear()
        self.dirty = True

    # -- the bus: synchronous, inside the simulator loop ---------------------------------------

    def on_event(self, ev: dict) -> None:
        if ev.get("kind") != "applied":
            return
        try:
            self.tracker.observe(ev)
            if self.watchers:
                for d in ev.get("dots") or ():
                    w = self.tracker.get(tuple(d))
                    if w is not None and w.id in self.watchers:
                        self.moved.add(w.id)
            if not self.dirty:
                for k in ev.get("keys") or ():
                    if (k[0], k[1]) in _TALK:
                        self.dirty = True
                        break
        except Exception:  # never let the join stream take the bus subscriber down
            log.exception("join stream: could not handle an event")

    # -- what the routes ask -------------------------------------------------------------------

    def latest_write(self, origin: str, ns: str, key: str) -> Write | None:
        """The most recent write `origin` made itself, if it was to (ns, key)."""
        w = self.tracker.latest(origin)
        if w is not None and any((k[0], k[1]) == (ns, key) for k in w.keys):
            return w
        return None

    def reference(self) -> str | None:
        down = set(self.live.down())
        return next((r for r in self.live.ids if r not in down), None)

    async def read_totals(self) -> dict:
        ref = self.reference()
        if ref is None:
            return {"replica": None}
        live = self.live
        votes = await live.aread(ref, *talk.VOTES)
        emoji = await live.aread(ref, *talk.EMOJIS)
        word = await live.aread(ref, *talk.WORD)
        words = [v for v in word.values if isinstance(v, str)][-MAX_WORDS:]
        return {"replica": ref, "votes": votes, "emoji": [e for e in emoji if e in talk.EMOJI], "words": words}

    # -- phones --------------------------------------------------------------------------------

    def connect(self) -> JoinClient | None:
        if len(self.clients) >= self.max_clients:
            return None
        c = JoinClient()
        c.totals = self.totals if self.totals_obj else None
        self.clients.add(c)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self.dirty = True
            self._task = loop.create_task(self._loop())
        c.wake.set()
        return c

    def disconnect(self, c: JoinClient) -> None:
        c.closed = True
        c.wake.set()
        self.clients.discard(c)
        self._unwatch_all(c)

    def _unwatch(self, c: JoinClient, wid: str) -> None:
        followers = self.watchers.get(wid)
        if followers is not None:
            followers.discard(c)
            if not followers:
                del self.watchers[wid]

    def _unwatch_all(self, c: JoinClient) -> None:
        for wid in list(c.watch):
            self._unwatch(c, wid)
        c.watch.clear()

    def drop(self, c: JoinClient) -> None:
        if c.dropped:
            return
        c.dropped = True
        self.clients.discard(c)
        self._unwatch_all(c)
        self.dropped_clients += 1
        c.wake.set()
        if c.sending and c.sender is not None:
            c.sender.cancel()
        log.info("join stream: dropped a phone that does not read")

    def watch(self, c: JoinClient, write_id: object) -> None:
        """Follow one of this phone's writes (an id the join write answered)."""
        if not isinstance(write_id, str) or len(write_id) > 200 or write_id in c.watch:
            return
        actor, _, n = write_id.rpartition(":")
        if not actor or not n.isdigit():
            return
        w = self.tracker.get((actor, int(n)))
        if w is None or w.id != write_id:
            c.journeys[write_id] = {"id": write_id, "unknown": True}
            c.wake.set()
            return
        c.watch[write_id] = (w, -1)
        self.watchers.setdefault(write_id, set()).add(c)
        while len(c.watch) > MAX_WATCH:
            old, _ = c.watch.popitem(last=False)
            self._unwatch(c, old)
        self._journey(c, write_id, self._up())
        c.wake.set()

    def _up(self) -> list[str]:
        down = set(self.live.down())
        return [r for r in self.live.ids if r not in down]

    def _journeys(self, c: JoinClient, up: list[str]) -> None:
        for wid in list(c.watch):
            self._journey(c, wid, up)

    def _journey(self, c: JoinClient, wid: str, up: list[str]) -> None:
        """What changed in one followed write's journey, queued for its phone."""
        held = c.watch.get(wid)
        if held is None:
            return
        w, last = held
        reached, of, everywhere = w.spread(up)
        if everywhere is not None:
            c.journeys[wid] = {"id": wid, "origin": w.origin, "reached": reached, "of": of,
                               "everywhere_ms": round(everywhere, 1)}
            del c.watch[wid]
            self._unwatch(c, wid)
        elif self.tracker.get(w.dots[0]) is not w:  # no longer followed: it will not complete here
            c.journeys[wid] = {"id": wid, "origin": w.origin, "reached": reached, "of": of, "lost": True}
            del c.watch[wid]
            self._unwatch(c, wid)
        elif reached != last:
            c.journeys[wid] = {"id": wid, "origin": w.origin, "reached": reached, "of": of}
            c.watch[wid] = (w, reached)

    async def _loop(self) -> None:
        try:
            while self.clients:
                started = time.monotonic()
                try:
                    await self.tick()
                except Exception:
                    log.exception("join stream: tick failed")
                await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - started)))
        finally:
            self._task = None

    async def tick(self) -> None:
        self._ticks += 1
        self._since_totals += 1
        if self.dirty and self._since_totals >= TOTALS_EVERY:
            self.dirty, self._since_totals = False, 0
            obj = await self.read_totals()
            if obj != self.totals_obj:
                self.totals_obj, self.totals = obj, orjson.dumps(obj)
                for c in self.clients:
                    c.totals = self.totals
        now = time.monotonic()
        if self.watchers:
            up = self._up()
            if up != self._up_before or self._ticks % FULL_PASS_EVERY == 0:
                for c in self.clients:
                    if c.watch:
                        self._journeys(c, up)
            else:
                for wid in self.moved:
                    for c in list(self.watchers.get(wid, ())):
                        self._journey(c, wid, up)
            self._up_before = up
        self.moved.clear()
        woken = []
        for c in list(self.clients):
            if c.sending and now - c.send_since > self.send_deadline_s:
                self.drop(c)
                continue
            if c.totals is not None or c.journeys:
                woken.append(c)
        await wake_in_groups(woken, WAKE_GROUP)


router = APIRouter()


async def _receive(websocket: WebSocket, hub: JoinHub, client: JoinClient) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text") or message.get("bytes")
        if not data or len(data) > MAX_MESSAGE:
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "watch" in obj:
            hub.watch(client, obj["watch"])


@router.websocket("/ws/join")
async def join_stream(websocket: WebSocket) -> None:
    hub: JoinHub = websocket.app.state.join_hub
    await websocket.accept()
    client = hub.connect()
    if client is None:
        await websocket.close(code=CLOSE_TOO_SLOW, reason="too many phones: try again later")
        return
    await run_client(websocket, client, _receive(websocket, hub, client), hub.disconnect, "too slow: not reading")
