"""Values every cluster derives the same way, computed here once.

The simulated cluster, the dashboard over replica processes and one replica process each
answer some of the contract's questions (`contract`) from what they hold; where the answer
follows from that by a rule, the rule is here, so the three cannot drift apart:

- `topology`: the replicas, where they are, and the modelled round trip between each pair;
- `convergence`: the replicas that are up agree when their state digests are equal;
- `partition_groups`: the groups a partition puts in force: the listed ones, and every
  replica not listed as one more group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .contract import Convergence, Topology
from .errors import UnknownReplica
from .geo import LatencyModel, Placement


def topology(placements: Sequence[Placement], model: LatencyModel) -> Topology:
    """Where each replica is, and the modelled round-trip time (ms, to 0.1) between each pair."""
    return {
        "replicas": [{"id": p.id, "city": p.pop.city, "region": p.pop.region, "lat": p.pop.lat, "lon": p.pop.lon}
                     for p in placements],
        "rtt_ms": {a.id: {b.id: round(model.rtt_ms(a.pop, b.pop), 1) for b in placements if b.id != a.id}
                   for a in placements},
    }


def agree(digests: dict[str, str]) -> bool:
    """The replicas these digests are of hold the same state (none or one: trivially)."""
    return len(set(digests.values())) <= 1


def convergence(digests: dict[str, str], in_flight: int) -> Convergence:
    """`digests`: of every replica that is up; `in_flight`: messages still on the wire."""
    return {"converged": agree(digests), "digests": digests, "in_flight": in_flight}


def _unknown(replica_id: str, ids: Sequence[str]) -> Exception:
    return UnknownReplica(f"no replica {replica_id!r} in this cluster (known: {', '.join(ids)})")


def partition_groups(groups: object, ids: Sequence[str], *,
                     unknown: Callable[[str, Sequence[str]], Exception] = _unknown) -> list[list[str]]:
    """The groups in force when `groups` are asked for among the replicas `ids`: each listed
    group in its order (empty ones dropped), then the replicas not listed, in `ids` order,
    as one more group. Raises before anything changed: ValueError for anything but a list of
    lists of ids, or an id listed twice; `unknown(id, ids)` (default UnknownReplica) for an
    id not in `ids`."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (list, tuple)):
        raise ValueError("groups must be a list of lists of replica ids")
    known = set(ids)
    seen: set[str] = set()
    final: list[list[str]] = []
    for group in groups:
        if isinstance(group, (str, bytes)) or not isinstance(group, (list, tuple)):
            raise ValueError(f"each group must be a list of replica ids, got {group!r}")
        members: list[str] = []
        for rid in group:
            if rid not in known:
                raise unknown(rid, ids)
            if rid in seen:
                raise ValueError(f"replica {rid!r} is listed twice in the partition")
            seen.add(rid)
            members.append(rid)
        if members:
            final.append(members)
    rest = [rid for rid in ids if rid not in seen]
    if rest:
        final.append(rest)
    return final


__all__ = ["agree", "convergence", "partition_groups", "topology"]
