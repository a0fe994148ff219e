"""A typed keyspace of causal CRDTs sharing one causal context.

Per key only the dots of live values are kept. Per replica: the join context (every dot
whose fate is known), the applied context (dots whose effects are held: this is the
version vector the replica advertises), and a dot -> key map for dots not yet known to be
everywhere, which lets anti-entropy turn "you lack these dots" into "here are those keys"
without scanning the keyspace. Once every member has a dot, its map entry is dropped.

Content, not only contexts. Two replicas with equal contexts should hold equal keyspaces;
when they do not (a damaged value, a bug, a dot minted twice) version vectors cannot tell.
So the store also keeps:

- `seals`: for every live dot, the 8-byte seal its writer made over its content
  (`replication.seals`). A copy that fails its seal is damaged; outgoing deltas never carry
  one (`_drop_bad`: the dot is dropped here and taken out of both contexts, so ordinary
  anti-entropy fetches it back from a peer; the hole costs a cloud entry per later dot of
  that actor until then);
- a content digest by key range, Merkle-style but additive: each key hashes to a number, the
  sum mod 2^256 of a number per live dot (its seal, which binds namespace, key, dot and
  content, spread over 256 bits), kept up to date as dots come and go (`_reseal`, `_drop_bad`), so a
  write costs in proportion to the dots it changes, not to the key's size; each of `NBUCKETS`
  buckets (by a hash of namespace and key) sums its keys' hashes mod 2^256, and the root is
  the sum of the buckets (AdHash). A change costs O(changed keys), folded in only when a
  digest is asked for; two replicas compare roots, then
  bucket sums, then the per-key hashes of differing buckets, then exchange the key states
  that differ (`antientropy`);
- a scrub: the cached per-key hashes are what the store *meant* to hold. Memory that
  changed behind its back (the thing this is for) shows only when a key is hashed again
  from its actual content and its seals checked, so each anti-entropy period re-hashes a
  few keys (`scrub`),
  sweeping the keyspace in keys/budget periods, as Riak's active anti-entropy rebuilds its
  hash trees from the data now and then.

Repairs (`repair`) can only add: a repair delta's context is exactly the live dots it
carries, so a replica that lost a live dot can never spread that loss as a removal. For a
dot both sides hold with different content, the copy whose seal verifies wins; if both
verify (a dot minted twice, or a forged seal), every replica keeps the one with the lower
seal, so they converge on one of them. A dot a peer holds live while this replica's own
context says it is dead is not resurrected (the other side may be the damaged one): it is
counted as disputed and reported. What was found is in `integrity` (counters) and
`findings` (for the node's event stream).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Container, Iterable, NamedTuple

import msgpack

from . import seals as _seals
from .clocks import CausalContext, Dot, VersionVector
from .crdts import BY_NAMESPACE
from .delta import Delta, KeyRef
from .errors import StaleDelta

_MOD = 2**256
NBUCKETS = 256
HASH_BYTES = 8  # how much of a root, a bucket sum or a key hash goes on the wire
MAX_FINDINGS = 256  # kept for a node to report; older ones go first


def held_by(applied: CausalContext, ctx: CausalContext, delta: Delta) -> bool:
    """`Store.holds` for a store whose contexts were these (a checkpoint's copies of them)."""
    return applied.covers(delta.applied) and ctx.covers(delta.ctx)


@dataclass
class Snapshot:
    """A store's state as a checkpoint holds it: live keys, both contexts, the dot -> key map,
    and the seals of (at least) the live dots of `entries`. From `Store.snapshot` it is a view
    of the live store, not a copy: read it before the store changes again."""

    entries: dict[KeyRef, object]
    ctx: CausalContext
    applied: CausalContext
    key_of: dict[Dot, KeyRef]
    seals: dict[Dot, bytes]


class Applied(NamedTuple):
    """What joining a delta changed: keys whose state moved, and dots newly applied."""

    keys: list[KeyRef]
    dots: list[Dot]


@dataclass
class IntegrityStats:
    """What content checks found and repaired at this replica (for a metrics layer)."""

    root_mismatches: int = 0  # digests from a peer with our contexts and other content
    mismatched_buckets: int = 0  # buckets found different in those exchanges
    repaired_keys: int = 0  # keys a content repair changed here
    bad_seals: int = 0  # damaged copies found here (replaced by a peer's, or dropped and refetched)
    conflicts: int = 0  # one dot, two contents that both verify: minted twice, or a forged seal
    disputed: int = 0  # dots a peer holds live that our context says are dead: reported, not repaired
    silent_changes: int = 0  # keys whose content changed without passing through the store
    scrubbed: int = 0  # keys re-hashed from their content by the scrub


@functools.lru_cache(maxsize=1 << 16)  # a hash per key folded into the root, on every digest that follows a write
def bucket_of(ns: str, key: str) -> int:
    """A key's bucket: the same on every replica, whatever its content."""
    return hashlib.blake2b(f"{ns}/{key}".encode(), digest_size=1).digest()[0]


# Spreads a dot's number over 256 bits: odd, so multiplying by it is one-to-one mod 2^256, and a
# root or bucket sum shortened to its top bytes (`short`) still moves with every change.
_SPREAD = int.from_bytes(hashlib.blake2b(b"edgestate/spread1", digest_size=32).digest(), "big") | 1


def _dot_hash(seal: bytes) -> int:
    """One live dot of a key as a number, from its seal alone: the seal already binds namespace,
    key, dot and content (`seals`). One more than the seal, so an unsealed dot still counts, spread
    over 256 bits. A key's hash is the sum of its dots' (`_key_hash`), so it is kept up to date one
    dot at a time."""
    return (int.from_bytes(seal, "big") + 1) * _SPREAD % _MOD


def _key_hash(ns: str, key: str, store, seals: dict[Dot, bytes]) -> int:
    """A key's state as a number, from scratch: the sum mod 2^256 of its live dots' numbers.
    Equal states have equal hashes; a changed seal, a dot more or less, changes it. The store
    keeps this sum incrementally (`Store._khash`) and the scrub compares the two. Summed at C
    speed (the scrub re-hashes whole keys): the multiplication distributes over the sum."""
    dots = list(BY_NAMESPACE[ns].dots(store))
    raw = _seals.blob(dots, seals)
    if len(raw) != 8 * len(dots):  # a seal of another length (damage in memory): one at a time
        return sum(_dot_hash(seals.get(d, _seals.NO_SEAL)) for d in dots) % _MOD
    total = sum(v for (v,) in struct.iter_unpack(">Q", raw)) + len(dots)
    return total * _SPREAD % _MOD


# A delta whose context names more dots than this is joined over whole keys (an anti-entropy
# reply or a full state carries the sender's whole context); below it, only over the entries the
# delta can change (`Store._join_entries`).
SMALL_CTX_DOTS = 8192


def short(h: int) -> bytes:
    return h.to_bytes(32, "big")[:HASH_BYTES]


def _newest(ctx: CausalContext, d: Dot) -> bool:
    """`d` is the highest dot of its actor in `ctx`: taking it out would let the actor's
    next dot be minted again, so the store's own join context never loses such a dot."""
    r, n = d
    return n >= ctx.vv.get(r) and not any(c[0] == r and c[1] > n for c in ctx.cloud)


def _punch(ctx: CausalContext, d: Dot) -> None:
    """Take one dot out of a context. Below the vector's top this moves every later dot of
    that actor into the cloud (O(those dots)); they fold back once the dot returns."""
    if d in ctx.cloud:
        ctx.cloud.discard(d)
        return
    r, n = d
    top = ctx.vv.get(r)
    if n > top:
        return
    ctx.cloud.update(Dot(r, k) for k in range(n + 1, top + 1))
    if n > 1:
        ctx.vv._v[r] = n - 1
    else:
        ctx.vv._v.pop(r, None)


def _few_dots(ctx: CausalContext, limit: int) -> set[Dot] | None:
    """The dots of `ctx` when there are at most `limit` of them, else None."""
    if sum(ctx.vv._v.values()) + len(ctx.cloud) > limit:
        return None
    return set(ctx.dots())


def _holding(mod, state, dots: set[Dot], skip) -> list:
    """The entries of a key's state (not in `skip`) that hold one of `dots`: a type may answer
    faster (`holding`); otherwise each entry is looked at."""
    fast = getattr(mod, "holding", None)
    if fast is not None:
        return [n for n in fast(state, dots) if n not in skip]
    return [n for n, part in state.items() if n not in skip and not dots.isdisjoint(mod.dots({n: part}))]


class _Minus:
    """A context seen without some dots: lets a join take a peer's copy of a dot we hold."""

    __slots__ = ("base", "gone")

    def __init__(self, base: CausalContext, gone: Container[Dot]) -> None:
        self.base, self.gone = base, gone

    def contains(self, d: Dot) -> bool:
        return d not in self.gone and self.base.contains(d)

    def __contains__(self, d: Dot) -> bool:  # not an alias: compiled (replication/native.py), none is made
        return self.contains(d)


def _rank(s: bytes | None, content) -> tuple[bytes | None, bytes]:
    return s, msgpack.packb(content, use_bin_type=True)


@dataclass
class _Scan:
    """The scrub inside one big key: its entries as listed when the scan began, how far it got,
    and the sum of the seal numbers seen so far (`_key_hash` before its spreading)."""

    ref: KeyRef
    names: list
    at: int = 0
    total: int = 0
    seen: set = field(default_factory=set)  # entries already summed
    listed: set = field(default_factory=set)  # entries in `names`

    def __post_init__(self) -> None:
        self.listed = set(self.names)

    def number(self, mod, part: dict, names, seals: dict[Dot, bytes]) -> int:
        """The seal numbers of these entries of `part` (those it has), as `total` counts them."""
        no = _seals.NO_SEAL
        return sum(int.from_bytes(seals.get(d, no), "big") + 1
                   for n in names if n in part for d in mod.dots({n: part[n]}))

    def moved(self, mod, new: dict, names: list, pre: int, seals: dict[Dot, bytes]) -> None:
        """The store changed entries the scan has summed (`names`; `pre`: what they counted
        before): keep the sum right, and list entries the scan has not listed."""
        self.total += self.number(mod, new, names, seals) - pre
        for n in new:
            if n not in self.listed:
                self.listed.add(n)
                self.names.append(n)


class Store:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, object]] = {ns: {} for ns in BY_NAMESPACE}
        self.ctx = CausalContext()
        self.applied = CausalContext()
        self.key_of: dict[Dot, KeyRef] = {}
        self.seals: dict[Dot, bytes] = {}
        # The AdHash by bucket: per-key hashes as last folded in, the bucket sums, and their
        # sum (the root). Keys changed since the last digest wait in _dirty.
        self._hashes: list[dict[KeyRef, int]] = [{} for _ in range(NBUCKETS)]
        self._khash: dict[KeyRef, int] = {}  # each live key's hash, kept as its dots change
        self._buckets = [0] * NBUCKETS
        self._sum = 0
        self._dirty: set[KeyRef] = set()
        self._digest: str | None = None
        self._scrub_at = 0  # the bucket the scrub is in, and its keys still to re-hash
        self._scrub_todo: list[KeyRef] = []
        self._scan: _Scan | None = None  # a big key the scrub is inside, a slice per call
        self._disputed: set[Dot] = set()
        # Damaged dots dropped here that the join context still names (the newest of their
        # actor: see _newest): joins let a peer's copy in anyway, and outgoing deltas leave
        # them out of their context, until the dot returns or its fate arrives.
        self._refetch: dict[Dot, KeyRef] = {}
        # Keys changed by a repair or a dropped damaged dot: no logged delta says so, so a
        # checkpoint must write their rows (storage clears what it wrote).
        self.rewritten: set[KeyRef] = set()
        self.integrity = IntegrityStats()
        self.findings: deque[dict] = deque(maxlen=MAX_FINDINGS)

    # -- reading -----------------------------------------------------------------

    def get(self, ns: str, key: str):
        s = self.data[ns].get(key)
        return s if s is not None else BY_NAMESPACE[ns].empty()

    def keys(self) -> Iterable[KeyRef]:
        for ns, m in self.data.items():
            for key in m:
                yield ns, key

    def __len__(self) -> int:
        return sum(len(m) for m in self.data.values())

    def holds(self, delta: Delta) -> bool:
        """Everything `delta` says is known here already (its dots applied, its context seen):
        joining it would change nothing, so a durable driver need not log it, and a log
        need not keep it once this state is written down."""
        return held_by(self.applied, self.ctx, delta)

    # -- snapshots: what storage writes down and reads back ----------------------------

    def snapshot(self, refs: Iterable[KeyRef] | None = None) -> Snapshot:
        """Every live key, or those of `refs` that are live (a ref missing from `entries`
        holds nothing here now), with the contexts, the dot -> key map and the seals."""
        if refs is None:
            entries = {(ns, key): s for ns, m in self.data.items() for key, s in m.items()}
        else:
            entries = {}
            for ns, key in refs:
                s = self.data[ns].get(key)
                if s:
                    entries[(ns, key)] = s
        return Snapshot(entries, self.ctx, self.applied, self.key_of, self.seals)

    def key_states(self) -> dict[str, dict[str, object]]:
        """Every key's state, by namespace: copies of the maps, not of the states (a state is
        replaced when it changes, never edited in place), so they stay as they are now. In C:
        a fraction of a microsecond a key, where picking keys one by one costs a microsecond each."""
        return {ns: dict(m) for ns, m in self.data.items() if m}

    def restore(self, snap: Snapshot) -> None:
        """Fill this empty store with a checkpoint's state (a replica starting from disk)."""
        if len(self) or self.ctx.vv or self.ctx.cloud or self.applied.vv or self.applied.cloud:
            raise ValueError("restore() fills an empty store")
        if snap.entries or snap.ctx.vv or snap.ctx.cloud or snap.applied.vv or snap.applied.cloud:
            # As one full delta through the store's own join (which keeps its digest right). It
            # walks every dot of the applied context: O(writes ever made), ~1.5 s for 100k;
            # setting the fields directly would make it O(keys).
            self.apply(Delta(entries=snap.entries, ctx=snap.ctx, applied=snap.applied, keys=snap.key_of, full=True,
                             seals=snap.seals))

    def mark_written(self, refs: Iterable[KeyRef]) -> None:
        """These keys, once in `rewritten`, are written down as they are now (a checkpoint)."""
        self.rewritten.difference_update(refs)

    # -- writing -----------------------------------------------------------------

    def local_delta(self, ns: str, key: str, store, ctx_dots: Iterable[Dot], new_dots: Iterable[Dot]) -> Delta:
        """Package a mutator's output as a single-key delta (not yet applied), sealing the
        dots it makes live: this is the only place a seal is ever made."""
        new = list(new_dots)
        return Delta(
            entries={(ns, key): store},
            ctx=CausalContext.of(ctx_dots),
            applied=CausalContext.of(new),
            keys={d: (ns, key) for d in new},
            seals=_seals.mint(ns, key, BY_NAMESPACE[ns].contents(store)),
        )

    def apply(self, delta: Delta) -> Applied:
        """Join a delta in. Idempotent, commutative: any order, any duplicates."""
        if delta.repair:
            return Applied(self.repair(delta), [])
        if delta.basis is not None and not self.applied.covers(delta.basis):
            raise StaleDelta("this anti-entropy reply was computed for state this replica no longer has")
        if not delta.full and self.holds(delta):
            return Applied([], [])  # a duplicate
        refset = set(delta.entries)
        if delta.full:
            refset.update(self.keys())
        refs = sorted(refset)  # a stable order: observers see the same event stream in every process
        changed = []
        ca = _Minus(self.ctx, self._refetch) if self._refetch else self.ctx
        # the delta context's dots, when few: looked up at the first key joined entry by entry
        cdots: set[Dot] | None = None
        looked = delta.full
        for ns, key in refs:
            mod = BY_NAMESPACE[ns]
            mine = self.data[ns].get(key) or mod.empty()
            theirs = delta.entries.get((ns, key)) or mod.empty()
            if mine and getattr(mod, "JOIN_BY_ENTRY", False):
                if not looked:
                    cdots, looked = _few_dots(delta.ctx, SMALL_CTX_DOTS), True
                if cdots is not None:
                    if self._join_entries(ns, key, mod, mine, ca, theirs, delta, cdots):
                        changed.append((ns, key))
                    continue
            joined = mod.join(mine, ca, theirs, delta.ctx)
            if joined != mine:
                self._reseal(ns, key, mod, mine, joined, delta.seals, ())
                self._replace(ns, key, mine, joined)
                changed.append((ns, key))
        fresh = list(delta.applied.dots_not_in(self.applied))
        for d in fresh:
            k = delta.key_of(d)
            if k is not None:
                self.key_of[d] = k
        self.ctx.merge(delta.ctx)
        self.applied.merge(delta.applied)
        self._digest = None
        if self._refetch:
            self._settle_refetch(delta)
        return Applied(changed, fresh)

    def _join_entries(self, ns: str, key: str, mod, mine, ca, theirs, delta: Delta, cdots: set[Dot]) -> bool:
        """Join a small delta into a large key entry by entry: the same result as `mod.join` over
        the whole key for a type whose join works entry by entry (`JOIN_BY_ENTRY`: an entry
        neither side's delta names, with no dot the delta's context knows, stays as it is), at a
        cost in proportion to the delta. The entries joined are those the delta carries and
        those holding a dot its context names (a removal). Returns whether the key changed."""
        names = set(theirs)
        own = set(mod.dots(theirs))
        own.update(mod.dots({n: mine[n] for n in names if n in mine}))
        # Dots the context names outside the entries it carries: only one held here (in our
        # context) can be live in `mine`, so a fresh remove event or an add's own dot costs no scan.
        rest = {d for d in cdots if d not in own and self.ctx.contains(d)}
        if rest:
            names.update(_holding(mod, mine, rest, names))
        before = {n: mine[n] for n in names if n in mine}
        after = mod.join(before, ca, theirs, delta.ctx)
        if after == before:
            return False
        joined = dict(mine)  # a new dict: an outgoing delta may still hold the old one
        for n in before:
            if n not in after:
                del joined[n]
        joined.update(after)
        self._reseal(ns, key, mod, before, after, delta.seals, ())
        self._replace(ns, key, mine, joined)
        return True

    def _settle_refetch(self, delta: Delta) -> None:
        """A dropped dot's fate is known again once a delta carrying its key names it in its
        context: live there (and so here now), or removed. Until then a peer's live copy may
        come in whatever the join context says."""
        self._refetch = {
            d: ref for d, ref in self._refetch.items()
            if d not in self.seals and not ((delta.full or ref in delta.entries) and delta.ctx.contains(d))
        }

    def _outgoing_ctx(self) -> CausalContext:
        ctx = self.ctx.copy()
        for d in self._refetch:
            _punch(ctx, d)  # this store dropped it: a peer must not read its absence as a removal
        return ctx

    def _reseal(self, ns: str, key: str, mod, old, new, theirs: dict[Dot, bytes], replaced) -> None:
        """Seals follow live dots: a dot that died loses its seal, a dot that arrived (or
        whose damaged copy was replaced) takes the one that came with it. The key's hash moves
        with them, dot by dot. `old` and `new` may be the whole key or the entries that changed."""
        before = set(mod.dots(old))
        after = set(mod.dots(new))
        seals = self.seals
        no = _seals.NO_SEAL
        sc = self._scan
        if sc is not None and sc.ref == (ns, key):
            # entries the scrub already summed that change here (a replaced dot may leave its entry equal)
            moved = [n for n in sc.seen.intersection(old.keys() | new.keys()) if replaced or old.get(n) != new.get(n)]
            pre = sc.number(mod, old, moved, seals)  # before the seals move
        else:
            sc = None
        h = self._khash.get((ns, key), 0)
        for d in before - after:
            h -= _dot_hash(seals.pop(d, no))
        for d in (after if replaced else after - before):  # only new dots move, unless some are replaced
            if d not in before or d in replaced:
                if d in before:
                    h -= _dot_hash(seals.get(d, no))
                s = seals[d] = theirs.get(d, no)
                h += _dot_hash(s)
        self._set_khash((ns, key), h)
        if sc is not None:
            sc.moved(mod, new, moved, pre, seals)

    def _set_khash(self, ref: KeyRef, h: int) -> None:
        h %= _MOD
        if h:
            self._khash[ref] = h
        else:
            self._khash.pop(ref, None)

    def _replace(self, ns: str, key: str, old, new) -> None:
        self._dirty.add((ns, key))
        if new:
            self.data[ns][key] = new
        else:
            self.data[ns].pop(key, None)

    # -- anti-entropy -------------------------------------------------------------

    def deltas_since(self, remote: CausalContext | VersionVector, hold=None) -> Delta | None:
        """What a replica whose applied context is `remote` lacks; None when it lacks nothing.

        `hold(dot)` may say a dot is still on its way by other means (just disseminated): when
        every missing dot is held, nothing is sent, and a later exchange will catch up.
        """
        if isinstance(remote, VersionVector):
            remote = CausalContext(remote)
        if not self.applied.cloud and remote.vv._v == self.applied.vv._v:
            return None  # the usual answer between converged replicas, decided by one C-level compare
        refs: set[KeyRef] = set()
        hints: dict[Dot, KeyRef] = {}
        held = 0
        for d in self.applied.dots_not_in(remote):
            if hold is not None and hold(d):
                held += 1
            k = self.key_of.get(d)
            if k is None:
                # Forgotten as stable, or learnt from a full state without its key: only a
                # full state transfer is sure to carry its effects.
                return self.full_delta(remote)
            refs.add(k)
            hints[d] = k
        if len(hints) == held:
            return None
        if self._drop_bad(refs):
            hints = {d: k for d, k in hints.items() if self.applied.contains(d)}
        entries = {r: self.get(*r) for r in sorted(refs)}
        return Delta(
            entries=entries,
            ctx=self._outgoing_ctx(),
            applied=self.applied.copy(),
            keys=hints,
            basis=remote.copy(),
            seals=self._seals_of(entries),
        )

    def against(self, remote: VersionVector, hold) -> tuple[bool, bool]:
        """For an anti-entropy digest when neither context has a cloud, one pass over the vectors
        answers both questions that would otherwise take a loop each: whether every dot the remote
        lacks is held (`hold(dot)`) with its key known, so that `deltas_since` would answer None;
        and whether this store's vector covers the remote's, so that there is nothing to ask for."""
        theirs = remote._v
        get = theirs.get
        key_of = self.key_of
        held = covered = True
        for r, top in self.applied.vv._v.items():
            low = get(r, 0)
            if low > top:
                covered = False
            elif held and low < top:
                while low < top:
                    low += 1
                    d = (r, low)
                    if d not in key_of or not hold(d):
                        held = False
                        break
        mine = self.applied.vv._v
        return held, covered and (len(theirs) <= len(mine) and theirs.keys() <= mine.keys())

    def full_delta(self, remote: CausalContext | None = None) -> Delta:
        self._drop_bad(list(self.keys()))
        missing = self.applied.dots_not_in(remote) if remote is not None else self.applied.dots()
        entries = {(ns, key): s for ns, m in self.data.items() for key, s in m.items()}
        return Delta(
            entries=entries,
            ctx=self._outgoing_ctx(),
            applied=self.applied.copy(),
            keys={d: self.key_of[d] for d in missing if d in self.key_of},
            full=True,
            seals=self._seals_of(entries),
        )

    def _seals_of(self, entries: dict[KeyRef, object]) -> dict[Dot, bytes]:
        seals = self.seals
        return {d: seals[d] for (ns, _k), s in entries.items() for d in BY_NAMESPACE[ns].dots(s)}

    def forget_stable(self, stable: VersionVector) -> int:
        """Drop dot -> key entries every member already holds. Returns how many went."""
        gone = [d for d in self.key_of if stable.contains(d)]
        for d in gone:
            del self.key_of[d]
        return len(gone)

    # -- content: seals, digests by bucket, repair ----------------------------------

    def _verifies(self, ns: str, key: str, state) -> bool:
        seals = self.seals
        return all(_seals.verifies(ns, key, d, c, seals.get(d)) for d, c in BY_NAMESPACE[ns].contents(state))

    def _drop_bad(self, refs: Iterable[KeyRef]) -> bool:
        """Check the seals of these keys' live dots. A damaged copy is dropped from the
        store and from both contexts: then this replica neither serves nor sends it, and
        its own anti-entropy fetches the dot back from a peer that holds it. (Sending it
        without its dot while the context still named the dot would tell peers it was
        removed.) The newest dot of an actor stays in the join context, or that actor's
        next dot could be minted twice; `_refetch` stands in for the hole. Returns whether
        anything was dropped."""
        seals = self.seals
        bad: dict[KeyRef, set[Dot]] = {}
        for ref in refs:
            ns, key = ref
            s = self.data[ns].get(key)
            if not s:
                continue
            for d, content in BY_NAMESPACE[ns].contents(s):
                if not _seals.verifies(ns, key, d, content, seals.get(d)):
                    bad.setdefault(ref, set()).add(d)
        if self._scan is not None and self._scan.ref in bad:
            self._scan = None  # its seals were all just checked; the next sweep hashes it again
        for (ns, key), dots in sorted(bad.items()):
            mod = BY_NAMESPACE[ns]
            mine = self.data[ns][key]
            self._replace(ns, key, mine, mod.without(mine, dots))
            self.rewritten.add((ns, key))
            h = self._khash.get((ns, key), 0)
            for d in sorted(dots):
                h -= _dot_hash(seals.pop(d, _seals.NO_SEAL))
                self.key_of.pop(d, None)
                if _newest(self.ctx, d):
                    self._refetch[d] = (ns, key)
                else:
                    _punch(self.ctx, d)
                _punch(self.applied, d)
                self._found("bad_seal", ns, key, d, action="dropped; anti-entropy fetches it back")
            self._set_khash((ns, key), h)
        if bad:
            self._digest = None
        return bool(bad)

    def repair_delta(self, refs: Iterable[KeyRef]) -> Delta:
        """These keys' states as a repair: only live dots, each sealed, nothing else claimed."""
        refs = sorted(r for r in set(refs) if self.data[r[0]].get(r[1]))
        self._drop_bad(refs)
        entries = {r: s for r in refs if (s := self.data[r[0]].get(r[1]))}
        seals = self._seals_of(entries)
        return Delta(entries=entries, ctx=CausalContext.of(seals), applied=CausalContext(), seals=seals, repair=True)

    def repair(self, delta: Delta, peer_applied: CausalContext | None = None, peer: str | None = None) -> list[KeyRef]:
        """Join a content repair (see the module docstring). `peer_applied`: the sender's
        applied context when it built the repair; a dispute is only one when it equals ours.
        Returns the keys whose state changed."""
        same = peer_applied is not None and peer_applied == self.applied
        changed = []
        for ref in sorted(delta.entries):
            ns, key = ref
            mod = BY_NAMESPACE[ns]
            theirs = delta.entries[ref]
            mine = self.data[ns].get(key) or mod.empty()
            my = dict(mod.contents(mine)) if mine else {}
            losers: set[Dot] = set()
            for d, content in mod.contents(theirs):
                s = delta.seals.get(d) or _seals.NO_SEAL
                if d in my:
                    mc, ms = my[d], self.seals.get(d)
                    if mc == content and ms == s:
                        continue
                    if not _seals.verifies(ns, key, d, mc, ms):
                        self._found("bad_seal", ns, key, d, peer, action="replaced by the peer's copy")
                        losers.add(d)
                    elif _rank(s, content) < _rank(ms, mc):
                        self._found("conflict", ns, key, d, peer, action="took the peer's copy (lower seal)")
                        losers.add(d)
                    else:
                        self._found("conflict", ns, key, d, peer, action="kept ours (lower seal)")
            ca = _Minus(self.ctx, losers | self._refetch.keys()) if losers or self._refetch else self.ctx
            base = mod.without(mine, losers) if losers else mine
            joined = mod.join(base, ca, theirs, delta.ctx)
            if same and mod.CONTEXT_REMOVES:
                # a dot they hold live that the join left out: our context says it is dead
                kept = set(mod.dots(joined))
                for d in sorted(set(mod.dots(theirs)) - kept - self._disputed):
                    self._disputed.add(d)
                    self._found("disputed", ns, key, d, peer, action="kept as dead here; not repaired")
            if joined != mine or losers:
                self._reseal(ns, key, mod, mine, joined, delta.seals, losers)
                self._replace(ns, key, mine, joined)
                self.rewritten.add(ref)
                changed.append(ref)
                self._found("repaired", ns, key, None, peer)
        self.ctx.merge(delta.ctx)
        self._digest = None
        if self._refetch:
            self._settle_refetch(delta)
        self.integrity.repaired_keys += len(changed)
        return changed

    def _found(self, what: str, ns: str, key: str, dot: Dot | None, peer: str | None = None, **more) -> None:
        st = self.integrity
        if what == "bad_seal":
            st.bad_seals += 1
        elif what == "conflict":
            st.conflicts += 1
        elif what == "disputed":
            st.disputed += 1
        elif what == "silent_change":
            st.silent_changes += 1
        f = {"what": what, "ns": ns, "key": key, "dot": None if dot is None else [dot[0], dot[1]], "peer": peer}
        f.update(more)
        self.findings.append(f)

    def drain_findings(self) -> list[dict]:
        out = list(self.findings)
        self.findings.clear()
        return out

    def _refresh(self) -> None:
        """Fold keys changed since the last digest into their buckets and the root."""
        if not self._dirty:
            return
        khash, hashes, buckets = self._khash, self._hashes, self._buckets
        total = self._sum
        for ref in self._dirty:
            ns, key = ref
            b = bucket_of(ns, key)
            hb = hashes[b]
            old = hb.pop(ref, 0)
            new = khash.get(ref, 0)
            if new:
                hb[ref] = new
            if new != old:
                buckets[b] = (buckets[b] + new - old) % _MOD
                total += new - old
        self._sum = total % _MOD
        self._dirty.clear()

    def content_root(self) -> bytes:
        """The keyspace's content hash (seals included), as anti-entropy digests carry it."""
        self._refresh()
        return short(self._sum)

    def bucket_sums(self) -> dict[int, bytes]:
        """Non-empty buckets and their (shortened) sums."""
        self._refresh()
        return {b: short(self._buckets[b]) for b in range(NBUCKETS) if self._hashes[b]}

    def key_hashes(self, buckets: Iterable[int]) -> dict[KeyRef, bytes]:
        """The keys of these buckets with their (shortened) hashes."""
        self._refresh()
        return {ref: short(h) for b in buckets for ref, h in self._hashes[b].items()}

    def bucket_size(self, b: int) -> int:
        return len(self._hashes[b])

    def scrub(self, budget: int) -> int:
        """Re-hash keys from their actual content and check their seals, up to `budget` units of
        work (a key costs one, each live dot checked one more), and compare with what the digest
        holds. A cursor walks the buckets, so a sweep takes about (keys + dots)/budget calls. A
        key with more entries than the budget left is scanned a slice of entries per call (the
        cursor stays inside it: `_scan_big`), so no call costs more than the budget whatever a
        key's size. A key that changed behind the store's back is folded in anew (so the root
        shows it to peers) and its seals checked (a damaged copy is dropped and refetched).
        Returns how many keys were finished."""
        self._refresh()
        done = 0
        work = 0
        turned = 0
        changed: list[KeyRef] = []
        data, seals, hashes = self.data, self.seals, self._hashes
        while work < budget:
            scan = self._scan  # tested through a local: `_scan_big` may end the scan, and a test of the
            if scan is not None:  # attribute itself would stay narrowed past that call (mypyc checks it)
                work, found = self._scan_big(budget, work)
                if found is not None:
                    changed.append(found)
                if self._scan is None:
                    done += 1
                continue
            b, todo = self._scrub_at, self._scrub_todo
            if not todo:
                if turned == NBUCKETS:
                    break  # the whole keyspace in one call: a small store
                turned += 1
                b = self._scrub_at = (b + 1) % NBUCKETS
                self._scrub_todo = list(hashes[b])
                continue
            ref = todo.pop()
            h = hashes[b].get(ref)
            if h is None:
                continue  # gone since the bucket was listed
            ns, key = ref
            s: Any = data[ns].get(key)
            work += 1
            if s and len(s) > budget - work:
                self._scan = _Scan(ref, list(s))  # too big for what is left: a slice at a time
                continue
            if not s or _key_hash(ns, key, s, seals) != h or not self._verifies(ns, key, s):
                changed.append(ref)
            work += len(s) if s else 0  # entries: about one dot each, more for a map's fields
            done += 1
        for ns, key in changed:
            self._found("silent_change", ns, key, None)
            s = data[ns].get(key)
            self._set_khash((ns, key), _key_hash(ns, key, s, seals) if s else 0)  # what it holds now
            self._dirty.add((ns, key))
        if changed:
            self._digest = None
            self._drop_bad(changed)
        self.integrity.scrubbed += done
        return done

    def _scan_big(self, budget: int, work: int) -> tuple[int, KeyRef | None]:
        """One slice of the big key under the scrub's cursor: the next entries (as listed when
        the scan began), their dots' seals checked against their content and their numbers added
        up. Returns the work done so far and the key if it is found changed. At the end the sum
        is compared with the key's cached hash: writes to the key meanwhile keep the sum right
        (`_reseal` moves it for entries already seen and lists new entries), so a key written
        every period is still compared."""
        sc = self._scan
        assert sc is not None  # the caller's test
        ns, key = sc.ref
        mod = BY_NAMESPACE[ns]
        seals = self.seals
        s: Any = self.data[ns].get(key)
        if not s:
            self._scan = None
            return work, None
        bad = False
        while work < budget and sc.at < len(sc.names):
            n = sc.names[sc.at]
            sc.at += 1
            sc.seen.add(n)
            work += 1
            part = s.get(n)
            if part is None:
                continue  # gone since the scan began
            for d, c in mod.contents({n: part}):
                work += 1
                got = seals.get(d)
                if not _seals.verifies(ns, key, d, c, got):
                    bad = True
                sc.total += int.from_bytes(got or _seals.NO_SEAL, "big") + 1
        if bad:
            self._scan = None
            return work, sc.ref
        if sc.at < len(sc.names):
            return work, None
        self._scan = None
        if sc.total * _SPREAD % _MOD != self._khash.get(sc.ref, 0):
            return work, sc.ref
        return work, None

    # -- identity -----------------------------------------------------------------

    def digest(self) -> str:
        """Equal on two replicas exactly when keyspace, join context and applied context are
        equal. Keys count by their live dots' seals, which bind the content: a copy damaged
        behind the store's back changes the digest once the scrub has re-hashed it."""
        if self._digest is None:
            self._refresh()
            raw = msgpack.packb(
                [self._sum.to_bytes(32, "big"), self.ctx.to_packable(), self.applied.to_packable()], use_bin_type=True
            )
            self._digest = hashlib.sha256(raw).hexdigest()
        return self._digest

    def key_metadata_bytes(self, ns: str, key: str) -> int:
        """Bytes of causal metadata stored for one key: its live dots, encoded."""
        dots = sorted(BY_NAMESPACE[ns].dots(self.get(ns, key)))
        return len(msgpack.packb([list(d) for d in dots]))
