"""Named network cuts, computed from where the replicas are, so one scenario fits any set of POPs.

- `atlantic`: Europe, Africa and the Middle East (longitude -30..65) against everyone else
  (the Americas with Asia-Pacific: the Pacific stays intact). Same split as the page's button.
- `pacific`: Asia-Pacific (longitude >= 65 or < -170) against everyone else.
- `americas`: North and South America against the rest of the world (as `bench coordination`).
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
