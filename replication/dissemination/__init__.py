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
    graft_retry_ms: float = 400.0
    lazy_flush_ms: float = 20.0  # batch IHAVE announcements
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
