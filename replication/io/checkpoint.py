"""A checkpoint in two halves: what the driver's thread captures, and what any thread packs.

Writing a checkpoint down is mostly CPU (msgpack and a checksum per key row and per dot row,
which of the logged deltas the state holds) and then one SQLite transaction. Done on the
event loop it held writes for hundreds of milliseconds. So the driver only *captures* the
state (`capture`: references and shallow copies, a few milliseconds), and a worker thread
packs it (`pack`) and commits it (`Storage.write_checkpoint`) while the loop keeps answering.

Why a capture is enough: a store never edits a key's state in place, it replaces it (an
outgoing delta may still hold the old one), so the captured key states stay as they were.
The contexts, the dot -> key map and the seals are edited in place: those are copied. Logged
deltas are never changed once made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..clocks import CausalContext, Dot
from ..delta import Delta, KeyRef
from ..seals import to_row
from ..store import Store, held_by
from .integrity import manifest, meta_row, pack, record_sum

FREE_CHUNK = 256  # objects freed per step when a big capture is let go (see `let_go`)
STEP = 64  # rows packed between two chances for the event loop to take the GIL (`yielding`)
PICK_RATIO = 20  # keys to write picked on the loop while fewer than 1/20 of the store (see `capture`)


@dataclass
class Capture:
    """The state one checkpoint writes, as it was at one instant on the driver's thread."""

    states: dict[KeyRef, object] | dict[str, dict[str, object]]  # `entries`, or `Store.key_states` to pick from
    picked: bool  # `states` are the entries already
    refs: set[KeyRef] | None  # the keys asked for (None: every key, the table is rewritten whole)
    ctx: CausalContext
    applied: CausalContext
    key_of: dict[Dot, KeyRef]
    seals: dict[Dot, bytes]
    hlc: list
    replica_id: str
    actor: str
    retained: list[tuple[int, Delta]]  # the log then: those the state holds are dropped
    rewritten: set[KeyRef]  # keys repairs changed (logged nowhere), written by this checkpoint
    expire_records_before: int | None
    need: int  # the last sequence number appended then: the state may hold any of them

    def entries(self) -> dict[KeyRef, object]:
        """The keys to write that hold something, with their states."""
        if self.picked:
            return self.states
        states = self.states
        if self.refs is None:
            return {(ns, key): s for ns, m in states.items() for key, s in m.items() if s}
        return {(ns, key): s for ns, key in self.refs if (s := states.get(ns, {}).get(key))}


@dataclass
class Packed:
    """What the transaction writes, made from a capture (`pack`), and the sums it leads to."""

    rows: list[tuple]  # keyspace rows
    gone: list[KeyRef]  # keys that hold nothing now: their rows go
    new_dots: list[tuple]  # dot_keys rows to insert
    old_dots: list[Dot]  # dots whose rows go
    meta: list[tuple]
    done: list[int]  # log rows the state holds
    kept: list[tuple[int, Delta]]  # log rows it does not hold yet


def capture(store: Store, dirty: set[KeyRef], everything: bool, *, hlc: list, replica_id: str, actor: str,
            retained: list[tuple[int, Delta]], rewritten: set[KeyRef], expire_records_before: int | None,
            need: int) -> Capture:
    """Take what a checkpoint writes out of the live store: no packing, no I/O. The keys' states
    are picked here when they are few beside the whole store, else the whole map is copied
    (cheaper, in C) and they are picked in the worker."""
    refs = None if everything else dirty
    picked = refs is not None and len(refs) * PICK_RATIO < len(store)
    states = store.snapshot(refs).entries if picked else store.key_states()
    return Capture(states, picked, refs, store.ctx.copy(), store.applied.copy(), dict(store.key_of),
                   dict(store.seals), hlc, replica_id, actor, list(retained), set(rewritten), expire_records_before,
                   need)


def key_row(ns: str, key: str, raw: bytes) -> tuple[str, str, bytes, int]:
    return ns, key, raw, record_sum("keyspace", (ns, key), raw)


def dot_row(replica: str, counter: int, ns: str, key: str) -> tuple[str, int, str, str, int]:
    return replica, counter, ns, key, record_sum("dot_keys", (replica, counter, ns, key))


def pause() -> None:
    """Let another thread take the GIL now if it waits for it. A worker thread that keeps the GIL
    until it is made to drop it (the switch interval) makes the event loop wait that long each
    time it gets it back after I/O, many times per write: a 0.5 s packing slowed writes for
    hundreds of ms. Dropping it every few rows makes the packing yield to the loop."""
    time.sleep(0)


def yielding(items: Iterable, step: Callable[[], None] | None) -> Iterator:
    """`items`, calling `step` every STEP of them."""
    if step is None:
        yield from items
        return
    for i, item in enumerate(items):
        if i % STEP == STEP - 1:
            step()
        yield item


def pack_capture(cap: Capture, key_sums: dict[KeyRef, int], dot_sums: dict[Dot, int],
                 step: Callable[[], None] | None = None) -> Packed:
    """Everything the transaction writes. Brings `key_sums` and `dot_sums` (the stored sums the
    manifest is made of) to what they will be once it commits: the caller drops them if it
    does not. `step`: called every few rows (`pause`, in a worker thread)."""
    seals, entries = cap.seals, cap.entries()
    rows = sorted(key_row(ns, key, pack(to_row(ns, key, s, seals)))
                  for (ns, key), s in yielding(entries.items(), step))
    gone = [] if cap.refs is None else sorted(r for r in cap.refs if r not in entries)
    done: list[int] = []
    kept: list[tuple[int, Delta]] = []
    for seq, d in yielding(cap.retained, step):
        if held_by(cap.applied, cap.ctx, d):
            done.append(seq)
        else:
            kept.append((seq, d))
    if cap.refs is None:
        key_sums.clear()
    for ref in gone:
        key_sums.pop(ref, None)
    key_sums.update(((ns, key), s) for ns, key, _raw, s in rows)
    current = cap.key_of
    new_dots = [dot_row(d[0], d[1], k[0], k[1]) for d, k in yielding(current.items(), step) if d not in dot_sums]
    old_dots = [d for d in dot_sums if d not in current]
    for d in old_dots:
        del dot_sums[d]
    dot_sums.update((Dot(r, n), s) for r, n, _ns, _k, s in new_dots)
    meta = [
        meta_row("ctx", cap.ctx.to_wire()),
        meta_row("applied", cap.applied.to_wire()),
        meta_row("hlc", cap.hlc),
        meta_row("replica_id", cap.replica_id),
        meta_row("actor", cap.actor),
        meta_row("manifest", manifest(key_sums, dot_sums)),
    ]
    return Packed(rows, gone, new_dots, old_dots, meta, done, kept)


def let_go(cap: Capture, packed: Packed | None, step: Callable[[], None] | None = None) -> None:
    """Drop what a checkpoint held, a piece at a time. Freeing thousands of logged deltas is one
    long step of the interpreter that keeps the GIL throughout (35 ms for 9,000 of them): in
    pieces, a worker thread lets the event loop in between."""
    for big in (cap.retained, *((packed.rows, packed.new_dots, packed.kept) if packed is not None else ())):
        while big:
            del big[-FREE_CHUNK:]
            if step is not None:
                step()
    cap.states = {}
    cap.key_of = {}
    cap.seals = {}
