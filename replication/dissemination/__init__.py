"""Pluggable dissemination: how a write's delta travels from its origin to every replica.

A strategy is a sans-IO state machine driven by its host node. The host gives it:
`id`, `rng`, `reachable()` (members not declared dead), `view()` (overlay neighbours),
`link_ms(peer)` (estimated one-way latency), `have(mid)` and `deliver(gossip, now, via)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from .direct import Direct
from .gossip import GossipRounds
from .plumtree import Plumtree

# The strategies by name, the default first. Everything that offers a choice (the command
# lines, the API's enum, the page's picker via the /ws snapshot, the benches) takes it from here.
StrategyName = Literal["plumtree", "gossip", "direct"]
STRATEGIES = {"plumtree": Plumtree, "gossip": GossipRounds, "direct": Direct}
assert tuple(STRATEGIES) == get_args(StrategyName), "StrategyName names the strategies of STRATEGIES, in order"


@dataclass
class DisseminationConfig:
    # gossip: the Serf/memberlist defaults
    gossip_interval_ms: float = 200.0
    gossip_fanout: int = 3
    gossip_retransmit_mult: int = 4
    # plumtree
    ihave_timeout_ms: float = 150.0  # wait at most this long for the eager copy before grafting
    graft_slack_ms: float = 30.0  # beyond when our usual path says the eager copy is due
    graft_retry_ms: float = 400.0  # the longest wait before grafting the next offer (it is RTT-based below this)
    # Payload acks (and with them resends, extra copies under loss, stand-ins for a silent child):
    # for links that lose messages with no one to say so. Over TCP (the replica processes) the
    # transport retransmits and a dead peer breaks its connection, so they are off by default;
    # they double the messages per write (one ack per payload), which the live show pays for.
    # The simulator turns them on with its loss knob (SimCluster.set_loss).
    acks: bool = False
    ack_slack_ms: float = 10.0  # beyond a round trip: an eager payload not acknowledged by then is sent again
    redundant_link_ms: float = 0.0  # once acks show loss, an eager push over a link this long (0: any) goes twice...
    redundant_far_ms: float = 30.0  # ...three times over a link this long...
    redundant_loss: float = 0.02  # ...when this share of eager pushes went unacknowledged (recently)
    stand_ins: int = 4  # lazy links added for a child that answered none of its sends
    # on model trees (see roottrees): a payload names up to this many members found silent lately
    # (0: none), and those who hear of it route round them for `silent_hearsay_ms` since it was found
    # (a member wrongly found silent is routed round that long at most, unless it sends to them)
    silent_shared: int = 128
    silent_hearsay_ms: float = 20_000.0
    ack_tries: int = 4  # sends of one eager payload to one child before leaving it to IHAVE, GRAFT and anti-entropy
    lazy_flush_ms: float = 20.0  # batch IHAVE announcements
    lazy_flush_large_ms: float = 200.0  # ...in a large cluster (node.LARGE_CLUSTER), where they are most messages
    model_lazy: int | None = None  # on a root's model tree (see roottrees), IHAVEs to this many lazy links (None: all)
    # ...and in a large cluster (node.LARGE_CLUSTER), where model_lazy is None: IHAVEs to every lazy
    # link were 80 % of the messages at 10,000 replicas, for repairs a few of them make as well
    model_lazy_large: int | None = 3
    optimise_ms: float = 2.0  # regraft when a lazy path is this much faster...
    optimise_ratio: float = 0.01  # ...and this share of the current path
    cache_ms: float = 30_000.0  # keep payloads this long to answer GRAFTs
    # overlay (partial view)
    view_near: int = 4
    view_far: int = 3


def make_strategy(name: str, host, config: DisseminationConfig):
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}") from None
    return cls(host, config)


__all__ = ["STRATEGIES", "DisseminationConfig", "StrategyName", "make_strategy"]
