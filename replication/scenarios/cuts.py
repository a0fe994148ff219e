"""Named network cuts, computed from where the replicas are, so one scenario fits any set of POPs.

- `atlantic`: Europe, Africa and the Middle East (longitude -30..65) against everyone else
  (the Americas with Asia-Pacific: the Pacific stays intact).
- `pacific`: Asia-Pacific (longitude >= 65 or < -170) against everyone else.
- `americas`: North and South America against the rest of the world (as `bench coordination`).

The dashboard's buttons (cut the Atlantic, cut the Pacific, isolate a region) use these too:
the `/ws` snapshot carries `offered(placements)`, the groups each one makes on this cluster.
"""

from __future__ import annotations

from typing import Callable

from ..geo import AMERICAS, Placement

_Pred = Callable[[Placement], bool]

CUTS: dict[str, _Pred] = {
    "atlantic": lambda p: -30 <= p.pop.lon < 65,
    "pacific": lambda p: not (p.pop.lon >= 65 or p.pop.lon < -170),
    "americas": lambda p: p.pop.region in AMERICAS,
}


def split(placements: list[Placement], pred: _Pred) -> list[list[str]]:
    """The replicas where `pred` holds, and the others; an empty side is left out."""
    a = [p.id for p in placements if pred(p)]
    b = [p.id for p in placements if not pred(p)]
    return [g for g in (a, b) if g]


def cut_groups(placements: list[Placement], name: str) -> list[list[str]]:
    return split(placements, CUTS[name])


def region_groups(placements: list[Placement], region: str) -> list[list[str]]:
    return split(placements, lambda p: p.pop.region == region)


def offered(placements: list[Placement]) -> dict[str, dict[str, list[list[str]]]]:
    """Every cut on this cluster, as the groups it makes: `named` (each of `CUTS`) and
    `regions` (each region isolated from the rest, regions in alphabetical order)."""
    regions = sorted({p.pop.region for p in placements})
    return {"named": {name: cut_groups(placements, name) for name in CUTS},
            "regions": {r: region_groups(placements, r) for r in regions}}
