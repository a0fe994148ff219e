"""Plumtree: epidemic broadcast trees (Leitão, Pereira, Rodrigues, SRDS 2007).

Eager push along tree links, lazy IHAVE announcements on the others. A duplicate payload
prunes the link it came on; an IHAVE for a message that does not arrive in time grafts
the announcer's link back. The result is a spanning tree that repairs itself.

Refinements, after the paper's discussion of optimisation:
- A root (a write's origin) follows the shared tree ("*"), the classic one: the first
  broadcast floods the overlay and duplicates prune it to a spanning tree. When a node
  tunes its links for one root, that root gets a tree of its own there, copied from the
  shared one; later changes for that root touch only its own tree.
- Latency optimisation: IHAVEs carry the announcer's path latency. When a lazy neighbour
  would clearly have delivered sooner than the current parent, the node grafts it for
  that root and prunes the old parent for that root only. Each root's tree relaxes
  towards its shortest-latency paths over the overlay, without flooding.
- Each node remembers its chosen parent per root, so the duplicates that cross while a
  link is being swapped are recognised and do not prune the links being kept.
- Where replicas share POPs and every node knows each one's POP (the simulator's `--replicas`),
  a root's tree is its model tree (see roottrees) from its first write, built round the members
  a node knows are down; a child declared dead or found silent hands its model children to us.
  Payloads on model trees name the members their sender found silent (and heard of, with how
  long ago): after a mass failure every sender to a dead POP head would otherwise find it out
  for itself, a round trip each, and membership takes many seconds to declare hundreds dead.

Under loss (the paper assumes reliable links; real ones drop packets):
- Every payload received is acknowledged to its sender with a one-item IHAVE ("I have it"),
  a message every node already understands. An eager push not acknowledged within a round
  trip of that link (plus `ack_slack_ms`) is sent again, up to `ack_tries` sends: a lost
  payload costs one round trip of the link it was lost on, where waiting for an IHAVE from
  a lazy neighbour and grafting cost that neighbour's whole path plus a round trip, and
  reshaped the tree after every random loss. A duplicate from a lost ack is recognised (it
  comes from our parent) and prunes nothing.
- Once more than `redundant_loss` of a node's recent eager pushes needed a resend (until
  fewer than a quarter of that do), it sends each eager payload twice, three times over links
  of at least `redundant_far_ms` (independent losses: all are lost far less often), so that
  a loss seldom costs a round trip of a long link.
- An IHAVE from our own parent for a root means it holds us lazy (a GRAFT or PRUNE was lost
  or crossed): graft it at once rather than wait for an eager copy that will not come.
- A child that answers none of `ack_tries` sends, and has sent us nothing else meanwhile, is probably down, with the part of the tree
  behind it cut off: it goes lazy here, and `stand_ins` members not declared dead become lazy
  links, each told of the message at once (after a mass failure, membership takes seconds to
  declare the dead and replace them in the view; the live stand-ins that lack the message graft).
- IHAVE and GRAFT remain the repair for failures: the wait before grafting allows for one
  retransmission by our parent, and a GRAFT not answered within a round trip is sent to the
  next offer, cycling through the offers a few times before leaving it to anti-entropy.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import count
from typing import Any, NamedTuple

from ..clocks import Dot
from ..messages import Announcement, Envelope, Gossip, Graft, GraftAck, IHave, Prune

SHARED = "*"


@dataclass(slots=True)
class _Cached:
    """A payload held here, to answer GRAFTs and to judge the duplicates that follow it."""

    gossip: Gossip  # as held here: its path_ms is the fastest path from the root we know of
    at: float  # when it came (it is kept `cache_ms`)
    first_from: str | None  # who delivered it first; None where it was written


class _Offer(NamedTuple):
    """An IHAVE's word that `peer` holds a message we lack."""

    peer: str
    root: str
    path_ms: float  # the peer's path from the root, its link to us not included


@dataclass(slots=True)
class _Missing:
    """A message announced by IHAVE that has not come."""

    deadline: float  # when to graft the next offer, unless the message came meanwhile
    offers: list[_Offer]  # in the order they came, grafted in turn
    order: int = 0  # when it was first announced: due ones are grafted in this order
    grafts: int = 0  # sent so far


class _Switch(NamedTuple):
    """A root's parent being replaced, make before break: `old` keeps pushing until `new`
    confirms the graft (or delivers first), so no message falls between."""

    new: str
    old: str


def _window(xs: list, start: int, n: int) -> list:
    """`n` items of `xs` from `start` on, round the end (all of them if there are no more)."""
    if len(xs) <= n:
        return xs
    at = start % len(xs)
    return (xs[at:] + xs[:at])[:n]


class Plumtree:
    name = "plumtree"

    def __init__(self, host, config) -> None:
        self.h = host
        self.cfg = config
        # The latency model's spanning tree, where the host knows it (see seedtree): the shared
        # tree starts as its links, every other overlay link lazy, so no first broadcast floods.
        self.tree = tree = getattr(host, "seed_tree", None)
        self.tree_links = frozenset(tree.neighbours(host.id)) if tree is not None else None
        # Where replicas share POPs, a root's tree of its own from its first write (see roottrees)
        trees = getattr(host, "root_trees", None)
        self.trees = trees if trees is not None and host.id in trees else None
        self._down = getattr(host, "down", None)  # declared dead there (hosts without membership: never)
        view = host.view()
        if self.tree_links is None:  # classic: all eager, the first broadcast's duplicates prune
            self.eager: dict[str, dict[str, None]] = {SHARED: dict.fromkeys(view)}
            self.lazy: dict[str, dict[str, None]] = {SHARED: {}}
        else:
            self.eager = {SHARED: {p: None for p in view if p in self.tree_links}}
            self.lazy = {SHARED: {p: None for p in view if p not in self.tree_links}}
        self.parent: dict[str, str] = {}  # root -> the neighbour we take its messages from
        self.path_of: dict[str, float] = {}  # root -> latency of our latest path from it
        self.switching: dict[str, _Switch] = {}  # root -> the parent change under way
        self.cache: dict[Dot, _Cached] = {}
        self._expiry: deque[_Cached] = deque()  # the cache in the order it was filled
        self.missing: dict[Dot, _Missing] = {}
        # (deadline, seq, mid, entry) for each deadline set in `missing`; stale ones (the message
        # came, or the deadline moved) are skipped when they reach the top. A lagging simulation
        # can hold thousands of announced messages at once: a scan of `missing` per event (the
        # simulator asks next_deadline after every delivery) made each event cost O(missing).
        self._missing_due: list[tuple[float, int, Dot, _Missing]] = []
        self.lazy_q: dict[str, list[Announcement]] = {}  # lazy peer -> what to announce at the next flush
        self.flush_at: float | None = None
        self.unacked: dict[Dot, dict[str, int]] = {}  # mid -> child -> sends so far, while its ack is due
        self._acks_due: list[tuple[float, int, Dot, str]] = []  # heap of (deadline, seq, mid, child)
        self._seq = count()
        self._pushes = 0.0  # eager pushes and, of them, unacknowledged ones (decaying): the loss we see
        self._unanswered = 0.0
        self._redundant = False  # sending two copies of each eager push (see _push)
        self._false_silences = 0.0  # children given up on that spoke again (decaying as _pushes)
        self.silent: set[str] = set()  # children that answered no send lately, until heard from again
        self._stand_in_rng: random.Random | None = None
        self.heard: dict[str, float] = {}  # peer -> when it last sent us anything (a lossy link is not a dead one)
        # model trees only: member -> when someone else found it silent (routed round until then
        # plus silent_hearsay_ms, or until it sends us something)
        self.hearsay: dict[str, float] = {}
        self._purge_at = 0.0
        self._found: dict[str, float] = {}  # member -> when we found it silent (while it is)
        self._news: list[tuple[str, float]] | None = None  # what payloads tell of the silent (None: stale)
        self._news_turn = 0
        self._news_fixed = 0  # how many of `_news` lead it: the exposed (see _silent_news)

    # -- tree state ------------------------------------------------------------------

    def _sets(self, root: str):
        """The tree a root's messages follow here: its own once tuned (or from the model, where
        there is one), else the shared one."""
        e = self.eager.get(root)
        if e is None:
            if self.trees is not None and root in self.trees:
                return self._own(root)
            return self.eager[SHARED], self.lazy[SHARED]
        return e, self.lazy[root]

    def _own(self, root: str):
        """Give a root a tree of its own: its model tree where there is one, else a copy of the
        shared one."""
        e = self.eager.get(root)
        if e is None:
            if self.trees is not None and root in self.trees:
                e = self.eager[root] = dict.fromkeys(self._live_children(root, self.h.id))
                self.lazy[root] = {p: None for p in self.h.view() if p not in e}
            else:
                e = self.eager[root] = dict(self.eager[SHARED])
                self.lazy[root] = dict(self.lazy[SHARED])
        return e, self.lazy[root]

    def _live_children(self, root: str, member: str) -> list[str]:
        """`member`'s children in `root`'s model tree, each one known to be down replaced by its
        own (so a node routes round the dead it knows of, with no one else's agreement)."""
        out: list[str] = []
        trees: Any = self.trees  # set: callers ask only for a modelled root
        for c in trees.children(root, member):
            if self._gone(c):
                out += self._live_children(root, c)
            else:
                out.append(c)
        return out

    def _gone(self, peer: str) -> bool:
        """Known here to be down: declared dead, found silent, or heard of as silent."""
        return peer in self.silent or peer in self.hearsay or (self._down is not None and self._down(peer))

    def _remodel(self, root: str, parent: str | None) -> None:
        """Our parent for a modelled root is down and `parent` takes its place (None: not known
        yet, the next payload sets it): take the model tree's children back, and keep the
        children latency grafts gave us. Such grafts may have moved some of our model children
        under the dead parent (a faster way in to the POP), which the model does not know of: the
        node that adopts its model children cannot reach them, and they would wait for an IHAVE
        and a GRAFT."""
        if self.trees is None or root not in self.trees or root not in self.eager:
            return
        kept = [p for p in self.eager.pop(root) if p != parent and not self._gone(p)]
        del self.lazy[root]
        self.switching.pop(root, None)
        if parent is None:
            self.parent.pop(root, None)
        else:
            self.parent[root] = parent
        e, lz = self._own(root)
        for p in kept:
            e[p] = None
            lz.pop(p, None)
        if parent is not None:
            e.pop(parent, None)

    def members_down(self, peers: list[str]) -> None:
        """Membership declared `peers` dead: in every model tree, their children become ours
        (nothing is sent now: the next message of each root goes to them)."""
        if self.trees is None:
            return
        self._news = None  # the declared dead need no telling
        gone = set(peers)
        self._adopt_all(gone)
        for root in [r for r, up in self.parent.items() if up in gone]:
            self._remodel(root, None)  # (the view change that follows forgets the parent)

    def _adopt_all(self, gone: set[str]) -> dict[tuple[str, str], list[str]]:
        """In every model tree, the live children of the members of `gone` become ours: (root,
        member) -> the children taken."""
        taken: dict[tuple[str, str], list[str]] = {}
        for root, e in self.eager.items():
            if root != SHARED and not gone.isdisjoint(e):
                for p in sorted(gone.intersection(e)):
                    taken[(root, p)] = self._adopt(root, p)
        return taken

    def _forward_in_flight(self, taken: dict[tuple[str, str], list[str]], now: float,
                           mids: list[Dot] | None = None) -> list[Envelope]:
        """Payloads we sent to members now known to be down, unacknowledged (all of them, or
        `mids`, whose wait just ended): the children taken from them get them now, as a give-up
        would have sent them (which, finding the children ours already, sends nothing)."""
        out: list[Envelope] = []
        if not taken:
            return out
        if mids is None:
            pending = [(mid, list(per)) for mid, per in self.unacked.items()]
        else:
            pending = [(mid, [p for _, p in taken]) for mid in mids]
        me, link = self.h.id, self.h.link_ms
        for mid, sent_to in pending:
            entry = self.cache.get(mid)
            if entry is None:
                continue
            g = entry.gossip
            for p in sent_to:
                heirs = taken.get((g.root, p))
                if heirs is None:
                    continue
                self._acked(mid, p)  # down: no ack will come
                for c in heirs:
                    out.append(Envelope(me, c, Gossip(mid, g.root, g.delta, g.hops + 1, g.path_ms + link(c))))
                    self._expect_ack(mid, c, 1, now)
        return out

    def _silent_news(self, now: float) -> tuple[tuple[str, float], ...]:
        """What a payload says of the silent: members this node found silent or heard of within
        `silent_hearsay_ms`, with how long ago, `silent_shared` at most. The exposed lead, those
        whose every ancestor in their POP's tree is down too, shallowest first: a sender in every
        other POP sends to a dead POP head (and to its children, when it is dead), and would find
        it out for itself, a round trip each. The others matter to fewer nodes (a member whose way
        in to its POP, after latency grafts, was one of them: told, it rejoins its model tree).
        Each part takes turns in its slots (three quarters for the exposed, while they fill
        them), windows that move on with every push, so all of it goes out."""
        news = self._news
        if news is None:
            down, ttl = self._down, self.cfg.silent_hearsay_ms
            trees: Any = self.trees  # set: called only where there are model trees
            found = dict(self.hearsay)
            found.update(self._found)
            fresh = {p: t for p, t in found.items() if now - t < ttl and (down is None or not down(p))}

            def gone(a: str) -> bool:
                return a in fresh or a in self.silent or (down is not None and down(a))

            rank = sorted((not all(map(gone, trees.above(p))), trees.depth(p), p, t) for p, t in fresh.items())
            news = self._news = [(p, t) for _, _, p, t in rank]
            self._news_fixed = sum(1 for covered, *_ in rank if not covered)  # the exposed lead
        k = self.cfg.silent_shared
        if len(news) > k:
            first, rest = news[: self._news_fixed], news[self._news_fixed:]
            a = min(len(first), max(k - len(rest), k * 3 // 4))
            self._news_turn += 1
            news = _window(first, self._news_turn * a, a) + _window(rest, self._news_turn * (k - a), k - a)
        return tuple((p, now - t) for p, t in news)

    def _hear_silent(self, src: str, items: tuple[tuple[str, float], ...], now: float) -> list[Envelope]:
        """A payload named members found silent: route round them too (found out first-hand,
        each would cost a round trip to every node that sends to it)."""
        ttl, me, heard, hearsay = self.cfg.silent_hearsay_ms, self.h.id, self.heard, self.hearsay
        new: set[str] = set()
        for p, age in items:
            if age >= ttl or p == me or p == src or p in self._found:
                continue
            t = now - age
            if heard.get(p, -math.inf) >= t:
                continue  # it has sent us something since
            old = hearsay.get(p)
            if old is None or now - old >= ttl:
                new.add(p)
            if old is None or old < t:
                hearsay[p] = t
                self._news = None
        if not new:
            return []
        return self._forward_in_flight(self._adopt_all(new), now) + self._rejoin(new)

    def _rejoin(self, gone: set[str]) -> list[Envelope]:
        """Members of `gone` are down: where one was our parent for a modelled root, graft the
        nearest live ancestor the model gives us, and take our own model children back."""
        out: list[Envelope] = []
        trees: Any = self.trees  # set: silence is heard of only where there are model trees
        me = self.h.id
        for root, up in list(self.parent.items()):
            if up not in gone or root not in trees or root not in self.eager:
                continue
            above = trees.parent(root, me)
            while above is not None and above != root and self._gone(above):
                above = trees.parent(root, above)
            if above is None or above == up:
                continue
            self._remodel(root, above)
            out.append(Envelope(me, above, Graft(root)))
        return out

    def _adopt(self, root: str, dead: str) -> list[str]:
        """`dead`, our child in `root`'s model tree, is down: its live children become ours."""
        e, lz = self.eager[root], self.lazy[root]
        e.pop(dead, None)
        lz.setdefault(dead, None)  # lazy, as a silent child is: if it lives, it grafts back
        taken = []
        for c in self._live_children(root, dead):
            if c != self.h.id and c != self.parent.get(root) and c not in e:
                e[c] = None
                lz.pop(c, None)
                taken.append(c)
        return taken

    def _to_eager(self, root: str, peer: str, shared: bool) -> None:
        roots = [r for r in (SHARED, root) if r in self.eager] if shared else [root]
        for r in roots:
            e, lz = self._own(r)
            e[peer] = None
            lz.pop(peer, None)

    def _to_lazy(self, root: str, peer: str, shared: bool) -> None:
        roots = [r for r in (SHARED, root) if r in self.eager] if shared else [root]
        for r in roots:
            e, lz = self._own(r)
            if peer in e:
                del e[peer]
                lz[peer] = None

    def view_changed(self, added: list[str], removed: list[str]) -> None:
        links = self.tree_links
        for root in self.eager:
            for p in removed:
                self.eager[root].pop(p, None)
                self.lazy[root].pop(p, None)
            modelled = self.trees is not None and root != SHARED and root in self.trees
            for p in added:
                if (links is None or p in links) and not modelled:
                    self.eager[root][p] = None  # redundant links prune themselves on the first duplicate
                    self.lazy[root].pop(p, None)
                elif p not in self.eager[root]:
                    # Not a tree link (a neighbour's announcement, a stand-in for a dead one): made
                    # eager it would only bring duplicates. It carries IHAVEs, and a GRAFT makes it
                    # eager if it is needed to reach the part of the tree cut off by a failure.
                    self.lazy[root][p] = None
        for root in [r for r, p in self.parent.items() if p in removed]:
            del self.parent[root]
        for root in [r for r, sw in self.switching.items() if sw.new in removed or sw.old in removed]:
            del self.switching[root]
        for m in self.missing.values():
            m.offers = [o for o in m.offers if o.peer not in removed]

    # -- sending -------------------------------------------------------------------------

    def _remember(self, g: Gossip, now: float, sender: str | None) -> None:
        self.cache[g.mid] = entry = _Cached(g, now, sender)
        self._expiry.append(entry)

    def _rto(self, peer: str) -> float:
        """How long an ack from `peer` may take: a round trip of the link, and some slack."""
        return 2.0 * self.h.link_ms(peer) + self.cfg.ack_slack_ms

    def _expect_ack(self, mid: Dot, peer: str, sends: int, now: float) -> None:
        per = self.unacked.get(mid)
        if per is None:
            per = self.unacked[mid] = {}
        per[peer] = sends
        heappush(self._acks_due, (now + self._rto(peer), next(self._seq), mid, peer))

    def _acked(self, mid: Dot, peer: str) -> None:
        per = self.unacked.get(mid)
        if per is not None and per.pop(peer, None) is not None and not per:
            del self.unacked[mid]

    def _push(self, g: Gossip, now: float, exclude: str | None) -> list[Envelope]:
        eager, lazy = self._sets(g.root)
        me, link = self.h.id, self.h.link_ms
        up = self.parent.get(g.root)  # upstream already has it: pushing back only makes a duplicate
        news = (self._silent_news(now) if self.trees is not None and (self._found or self.hearsay)
                and self._quiet_links() else ())
        out = [
            Envelope(me, p, Gossip(g.mid, g.root, g.delta, g.hops + 1, g.path_ms + link(p), news))
            for p in eager
            if p != exclude and p != up
        ]
        if self.cfg.acks:
            out += self._acked_pushes(g.mid, out, now)
        if lazy:
            item = Announcement(g.mid, g.root, g.path_ms)
            told = lazy
            k = self.cfg.model_lazy
            if k is None and self.h.large:
                k = self.cfg.model_lazy_large
            if k is not None and self.trees is not None and len(lazy) > k and g.root in self.trees:
                # A model tree needs no IHAVE to find its shape, only to repair it: a few lazy
                # links, rotating with the write, instead of every one (three quarters of all
                # messages at 10,000 replicas; but repairs after a mass failure are slower)
                told = [p for p in lazy if p != exclude]
                at = g.mid[1] % max(1, len(told))
                told = (told[at:] + told[:at])[:k]
            for p in told:
                if p != exclude:
                    self.lazy_q.setdefault(p, []).append(item)
            if self.flush_at is None:
                self.flush_at = now + (self.cfg.lazy_flush_large_ms if self.h.large else self.cfg.lazy_flush_ms)
        return out

    def _quiet_links(self) -> bool:
        """Our links lose nothing, as far as we can tell: a child's silence means it is down, and
        the silent are named to others and routed round when others name them. On lossy links a
        silence is often only the loss, and a name would send everyone round a live member (at
        10 % loss, 120 replicas, that doubled the payloads per receiver)."""
        return not self._redundant and self._false_silences <= self.cfg.redundant_loss * max(1.0, self._pushes)

    def _extra_copies(self, peer: str) -> int:
        """Copies beyond the first of an eager push to `peer` while pushes show loss: one over
        a link of `redundant_link_ms` or more, two over one of `redundant_far_ms` or more."""
        link = self.h.link_ms(peer)
        return (link >= self.cfg.redundant_link_ms) + (link >= self.cfg.redundant_far_ms)

    def _acked_pushes(self, mid: Dot, out: list[Envelope], now: float) -> list[Envelope]:
        """Expect an ack for each eager push in `out`; returns the extra copies to send when
        recent pushes show loss."""
        for env in out:
            self._expect_ack(mid, env.dst, 1, now)
        self._pushes += len(out)
        extra: list[Envelope] = []
        # on above `redundant_loss`, off below a quarter of it: two copies make resends rarer,
        # which must not switch them off while the links still lose as much
        lost = self._unanswered / max(1.0, self._pushes)
        if lost > self.cfg.redundant_loss:
            self._redundant = True
        elif lost < self.cfg.redundant_loss / 4:
            self._redundant = False
        if self._redundant:
            # Lossy links: a resend costs a round trip, on a long link most of a write's time
            # budget. Two copies (three over the longest links) make that wait rare, for more
            # payloads; on links that lose nothing this never starts.
            extra = [env for n in (1, 2) for env in out if self._extra_copies(env.dst) >= n]
        if self._pushes > 1000:  # recent behaviour: halve the history
            self._pushes /= 2
            self._unanswered /= 2
            self._false_silences /= 2
        return extra

    def broadcast(self, g: Gossip, now: float) -> list[Envelope]:
        self._remember(g, now, None)
        return self._push(g, now, None)

    # -- receiving -----------------------------------------------------------------------

    def handle(self, src: str, msg, now: float) -> list[Envelope]:
        kind = msg.kind
        self.heard[src] = now
        if self.silent and src in self.silent:
            self.silent.discard(src)  # alive after all (a partition, a pause): lazy until grafted
            self._found.pop(src, None)
            self._news = None
            if self.trees is not None:
                # on model trees a child is given up after one unanswered send, so no resend shows
                # the loss (see _on_ihave): a child given up on that speaks again is the evidence
                self._false_silences += 1
        if self.hearsay and src in self.hearsay:
            del self.hearsay[src]
            self._news = None
        if kind == "ihave":  # the most frequent message by far
            return self._on_ihave(src, msg, now)
        if kind == "payload" and isinstance(msg, Gossip):
            return self._on_gossip(src, msg, now)
        if kind == "graft":
            return self._on_graft(src, msg, now)
        if kind == "prune":
            self._to_lazy(msg.root, src, shared=not msg.only_root)
        elif kind == "graft_ack":
            sw = self.switching.get(msg.root)
            if sw is not None and sw.new == src:
                return self._break(msg.root)
        return []

    def _on_gossip(self, src: str, g: Gossip, now: float) -> list[Envelope]:
        if g.silent and self.trees is not None and self._quiet_links():
            rejoined = self._hear_silent(src, g.silent, now)
            if rejoined:
                return rejoined + self._take(src, g, now)
        return self._take(src, g, now)

    def _take(self, src: str, g: Gossip, now: float) -> list[Envelope]:
        root = g.root
        # acknowledged whether new or not: a duplicate may be the resend of a payload whose ack was lost
        ack = [Envelope(self.h.id, src, IHave([Announcement(g.mid, root, g.path_ms)]))] if self.cfg.acks else []
        entry = self.cache.get(g.mid)
        if entry is not None or self.h.have(g.mid):
            out = self._on_duplicate(src, root, entry)
            out += ack
            return out
        self.h.deliver(g, now, "payload")
        self._remember(g, now, src)
        self.path_of[root] = g.path_ms
        sw = self.switching.get(root)
        if root not in self.parent:
            self.parent[root] = src
        # Unlike the classic shared tree, the sender is not made eager: in a per-root tree it is
        # upstream, and pushing this root's messages back to it would only make duplicates.
        out = self._push(g, now, src)
        out += ack
        if sw is not None and src == sw.new:
            out += self._break(root)
        announced = self.missing.pop(g.mid, None)
        if announced:  # IHAVEs that beat this payload here name faster paths
            entry = self.cache[g.mid]
            for o in announced.offers:
                out += self._maybe_optimise(o.peer, entry, o.root, o.path_ms + self.h.link_ms(o.peer))
        return out

    def _break(self, root: str) -> list[Envelope]:
        """The new parent has delivered: retire the old one for this root."""
        new, old = self.switching.pop(root)
        if old == new or self.parent.get(root) != new:
            return []
        self._to_lazy(root, old, shared=False)
        return [Envelope(self.h.id, old, Prune(root, only_root=True))]

    def _on_duplicate(self, src: str, root: str, entry: _Cached | None) -> list[Envelope]:
        _, lazy = self._sets(root)
        parent = self.parent.get(root)
        first = entry.first_from if entry is not None else None
        sw = self.switching.get(root)
        if sw is not None and src in sw:
            if src == sw.new:  # the new link works; the old parent's copy simply came first
                return self._break(root)
            return []
        if src in lazy:
            # Lazy here but eager there: our PRUNE crossed this copy, or that node's tree for this
            # root was seeded before the shared link was pruned. Saying it again is cheap.
            return [Envelope(self.h.id, src, Prune(root, only_root=True))]
        if src == parent:
            if first is None or first == src or first in lazy:
                return []  # our chosen parent; the first copy came over a link being retired
            # another eager neighbour is faster than our parent: keep that one
            self.parent[root] = first
            self._to_lazy(root, src, shared=False)
            return [Envelope(self.h.id, src, Prune(root, only_root=True))]
        # A redundant link. While this root still follows the shared tree, that tree has the cycle
        # (a first flood, or a link added by a view change): prune it there, as classic Plumtree
        # does. Unless the link is our way in for some other root: then prune it for this one only.
        shared = root not in self.eager and src not in self.parent.values()
        self._to_lazy(root, src, shared=shared)
        return [Envelope(self.h.id, src, Prune(root, only_root=not shared))]

    def _on_ihave(self, src: str, msg: IHave, now: float) -> list[Envelope]:
        out: list[Envelope] = []
        cache, have = self.cache, self.h.have
        link = self.h.link_ms(src)
        unacked = self.unacked
        for mid, root, path in msg.items:
            if unacked and mid in unacked:  # an ack of our eager push, or word that it has it anyway
                sends = unacked[mid].get(src)
                if sends is not None:
                    # answered after a resend: lost on a live link (a crashed child never answers,
                    # and is no reason to send everyone else two copies)
                    self._unanswered += sends - 1
                    self._acked(mid, src)
            entry = cache.get(mid)
            if entry is not None:
                if entry.first_from is not None and entry.gossip.path_ms > path + link:  # only a faster path can matter
                    out += self._maybe_optimise(src, entry, root, path + link)
                continue
            if have(mid):
                continue
            m = self.missing.get(mid)
            if src == self.parent.get(root):
                # Our parent for this root announces instead of pushing: it holds us lazy (a GRAFT
                # or PRUNE of ours was lost, or crossed). Waiting would not bring the eager copy.
                if m is None:
                    m = self._announced(mid, now, [])
                m.offers.insert(0, _Offer(src, root, path))
                self._due(mid, m, now)
            elif m is None:
                self._announced(mid, now + self._patience(root, path + link), [_Offer(src, root, path)])
            else:
                m.offers.append(_Offer(src, root, path))
        return out

    def _announced(self, mid: Dot, deadline: float, offers: list[_Offer]) -> _Missing:
        m = self.missing[mid] = _Missing(deadline, offers, next(self._seq))
        heappush(self._missing_due, (deadline, m.order, mid, m))
        return m

    def _due(self, mid: Dot, m: _Missing, deadline: float) -> None:
        m.deadline = deadline  # a second entry for one deadline is harmless: `_take_due` takes each once
        heappush(self._missing_due, (deadline, next(self._seq), mid, m))

    def _missing_top(self) -> float | None:
        """The earliest deadline in `missing`, dropping stale heap entries above it."""
        due, missing = self._missing_due, self.missing
        while due:
            deadline, _, mid, m = due[0]
            if missing.get(mid) is m and m.deadline == deadline:
                return deadline
            heappop(due)
        return None

    def _take_due(self, now: float) -> list[Dot]:
        """The announced messages whose deadline has come, in the order they were first announced
        (the order `missing` iterates in, so a run grafts exactly as a scan of it would)."""
        taken: dict[Dot, _Missing] = {}
        due = self._missing_due
        while (top := self._missing_top()) is not None and top <= now:
            _, _, mid, m = heappop(due)
            taken[mid] = m
        if not taken:
            return []  # most ticks: a flush, nothing due
        return [mid for mid, _ in sorted(taken.items(), key=lambda kv: kv[1].order)]

    def _patience(self, root: str, announced_ms: float) -> float:
        """How long to wait for the eager copy after an IHAVE. Our usual path from this root
        says when it is due. A root never heard from has no usual path, and the shared tree
        its first message follows may have lost links to other roots' prunes: graft soon."""
        usual = self.path_of.get(root)
        if usual is None and self.trees is not None:
            usual = self.trees.path_ms(root, self.h.id)
        if usual is None and self.tree is not None:
            model = self.tree.path_ms(root, self.h.id)
            if model is not None:
                # The seed tree's path says when the first copy is due. It can be long (the tree
                # is the shortest in total, not per root), and an IHAVE over a shortcut beats it
                # by more than the usual cap: grafting then would only add a duplicate, and a
                # cycle to the shared tree that every later root's first message pays for.
                return max(0.0, model - announced_ms) + self.cfg.graft_slack_ms
        if usual is None:
            return self.cfg.graft_slack_ms
        return min(self.cfg.ihave_timeout_ms, max(0.0, usual - announced_ms) + self.cfg.graft_slack_ms)

    def _maybe_optimise(self, src: str, entry: _Cached, root: str, alt_ms: float) -> list[Envelope]:
        mine = entry.gossip.path_ms
        if mine - alt_ms <= max(self.cfg.optimise_ms, self.cfg.optimise_ratio * mine):
            return []
        old = self.parent.get(root)
        pending = self.switching.get(root)
        if pending is not None:
            old = pending.old  # still the one pushing to us until the newest link proves itself
        self.parent[root] = src
        g = entry.gossip
        entry.gossip = Gossip(g.mid, root, g.delta, g.hops, alt_ms)
        self.path_of[root] = alt_ms
        self._to_eager(root, src, shared=False)  # kept out of pushes while it is the parent
        if old is not None and old != src:
            self.switching[root] = _Switch(src, old)
        return [Envelope(self.h.id, src, Graft(root))]

    def _on_graft(self, src: str, msg: Graft, now: float) -> list[Envelope]:
        if self.trees is not None and self.parent.get(msg.root) == src and msg.root in self.trees:
            # it takes this root's writes from us now (it rejoined its model tree): it cannot be
            # our way in as well, or each would leave the other out of its pushes
            del self.parent[msg.root]
        self._to_eager(msg.root, src, shared=bool(msg.mids))
        if not msg.mids:  # a latency regraft: confirm, so the grafter can retire its old parent
            return [Envelope(self.h.id, src, GraftAck(msg.root))]
        out = []
        link = self.h.link_ms(src)
        for mid in msg.mids:
            entry = self.cache.get(mid)
            if entry is not None:
                g = entry.gossip
                out.append(Envelope(self.h.id, src, Gossip(g.mid, g.root, g.delta, g.hops + 1, g.path_ms + link)))
        return out

    # -- timers --------------------------------------------------------------------------

    def tick(self, now: float) -> list[Envelope]:
        out: list[Envelope] = []
        me = self.h.id
        if self.flush_at is not None and now >= self.flush_at:
            for p, items in self.lazy_q.items():
                out.append(Envelope(me, p, IHave(items)))
            self.lazy_q = {}
            self.flush_at = None
        for mid in self._take_due(now):
            m = self.missing[mid]
            if self.h.have(mid) or not m.offers:
                del self.missing[mid]  # arrived some other way, or nobody left to ask: anti-entropy
                continue
            if m.grafts >= self.cfg.ack_tries * max(1, len(m.offers)):
                del self.missing[mid]  # nobody answers: anti-entropy will bring it
                continue
            if m.grafts == 0 and self.trees is not None and m.offers[0].root in self.trees:
                # the nearest announcer first: on a model tree the first IHAVE often comes from
                # another POP (its writes arrive early), while a member of ours holds it a hop away
                m.offers.sort(key=lambda o: self.h.link_ms(o.peer))
            offer = m.offers.pop(0)
            m.offers.append(offer)  # tried again after the others: a GRAFT or its answer may be lost
            m.grafts += 1
            src, root, _path = offer
            old = self.parent.get(root)
            self._to_eager(root, src, shared=True)
            self.parent[root] = src
            self.switching.pop(root, None)
            if old is not None and old != src:
                self._to_lazy(root, old, shared=False)  # it failed to deliver: no longer upstream
            out.append(Envelope(me, src, Graft(root, [mid])))
            self._due(mid, m, now + min(self.cfg.graft_retry_ms, self._rto(src)))
        out += self._resend(now)
        if self.hearsay and now >= self._purge_at:
            ttl = self.cfg.silent_hearsay_ms
            for p in [p for p, t in self.hearsay.items() if now - t >= ttl]:
                del self.hearsay[p]
            self._news = None
            self._purge_at = now + ttl / 4
        ttl = self.cfg.cache_ms
        while self._expiry and self._expiry[0].at + ttl <= now:  # the same sum next_deadline() reports
            mid = self._expiry.popleft().gossip.mid
            entry = self.cache.get(mid)
            if entry is not None and entry.at + ttl <= now:
                del self.cache[mid]
        return out

    def _resend(self, now: float) -> list[Envelope]:
        """Eager payloads whose ack is overdue: send again, while the child is still ours to feed."""
        out: list[Envelope] = []
        due, unacked = self._acks_due, self.unacked
        while due and due[0][0] <= now:
            _, _, mid, peer = heappop(due)
            per = unacked.get(mid)
            sends = per.get(peer) if per is not None else None
            if sends is None:
                continue  # acked meanwhile
            entry = self.cache.get(mid)
            root: Any = entry.gossip.root if entry is not None else None  # read below only when there is an entry
            tries = self.cfg.ack_tries
            if self.trees is not None and not self._redundant and root in self.trees:
                # A model tree says who is behind a silent child, and links that lose nothing
                # here say its silence is no loss: route round it after one round trip, not four
                # (after a mass failure every write's tree runs through the dead)
                tries = 1
            if (entry is None or sends >= tries or peer not in self._sets(root)[0]
                    or self.parent.get(root) == peer):
                self._acked(mid, peer)  # gone from the cache, given up on, or no longer our child
                if entry is None:
                    continue
                if self.trees is not None and root in self.trees and peer not in self._sets(root)[0] and self._gone(peer):
                    # known down since we sent it this (declared dead: members_down took its
                    # children and sent them nothing): they get it now
                    e, up = self._sets(root)[0], self.parent.get(root)
                    heirs = [c for c in self._live_children(root, peer) if c in e and c != up and c != self.h.id]
                    out += self._forward_in_flight({(root, peer): heirs}, now, [mid])
                elif (sends >= tries and peer not in self.silent
                        and self.heard.get(peer, -math.inf) < now - tries * self._rto(peer)):
                    out += self._stand_in_for(peer, entry.gossip, now)
                continue
            g = entry.gossip
            env = Envelope(self.h.id, peer, Gossip(mid, root, g.delta, g.hops + 1, g.path_ms + self.h.link_ms(peer)))
            out.append(env)
            if self._redundant:  # as many copies as the first send had
                out += [env] * self._extra_copies(peer)
            self._expect_ack(mid, peer, sends + 1, now)
        return out

    def _stand_in_for(self, peer: str, g: Gossip, now: float) -> list[Envelope]:
        """A child answered none of `ack_tries` sends: it is probably down, and the part of the tree
        behind it cut off. Membership will say so in seconds (after a mass failure, many more);
        meanwhile it goes lazy everywhere here, and a few members not declared dead become lazy
        links, told of this message at once: the live ones that lack it graft, and so join. In
        model trees its model children become ours, and are sent this message at once."""
        self.silent.add(peer)
        if self.trees is not None:
            self.hearsay.pop(peer, None)
            if self._quiet_links():
                # named to others only where our links lose nothing: on lossy ones a live child's
                # silence is often the loss, and everyone would route round a live member
                self._found[peer] = now
                self._news = None
        trees = self.trees
        modelled = [] if trees is None else [r for r, e in self.eager.items() if r != SHARED and r in trees and peer in e]
        for root in list(self.eager):
            self._to_lazy(root, peer, shared=False)
        me = self.h.id
        out: list[Envelope] = []
        taken: dict[tuple[str, str], list[str]] = {}
        for root in modelled:  # the model says who was behind it: they are ours now
            taken[(root, peer)] = self._adopt(root, peer)
            for c in taken[(root, peer)]:
                if root == g.root:
                    out.append(Envelope(me, c, Gossip(g.mid, root, g.delta, g.hops + 1, g.path_ms + self.h.link_ms(c))))
                    self._expect_ack(g.mid, c, 1, now)
        out += self._forward_in_flight(taken, now)  # the others we sent it, their acks not due yet
        if trees is not None:
            out += self._rejoin({peer})  # our way in for some root, after latency grafts
        eager, lazy = self.eager[SHARED], self.lazy[SHARED]
        pool = [p for p in self.h.reachable()
                if p != me and p not in self.silent and p not in eager and p not in lazy]
        if self._stand_in_rng is None:  # its own: drawing from the host's would reshuffle every later choice
            self._stand_in_rng = random.Random(f"stand-ins:{me}")
        picked = self._stand_in_rng.sample(pool, min(self.cfg.stand_ins, len(pool)))
        for p in picked:
            for root in self.lazy:
                if p not in self.eager[root]:
                    self.lazy[root][p] = None
        item = Announcement(g.mid, g.root, g.path_ms)
        return out + [Envelope(me, p, IHave([item])) for p in picked]

    def next_deadline(self) -> float | None:
        t = self.flush_at
        due, unacked = self._acks_due, self.unacked
        while due:  # drop the acked from the top, or each would wake us for nothing
            _, _, mid, peer = due[0]
            per = unacked.get(mid)
            if per is not None and peer in per:
                t = due[0][0] if t is None or due[0][0] < t else t
                break
            heappop(due)
        if self._expiry:
            e = self._expiry[0].at + self.cfg.cache_ms
            t = e if t is None or e < t else t
        if self._missing_due:  # asked after every delivery, and nothing is missing most of the time
            m = self._missing_top()
            if m is not None:
                t = m if t is None or m < t else t
        return t
