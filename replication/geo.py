"""Edge locations (POPs), shipped as package data from the shared pops.csv."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# About 20 POPs spread over every continent: enough to see an update cross oceans.
DEFAULT_POPS = (
    "lhr", "fra", "mad", "arn",
    "iad", "ord", "dfw", "sjc", "yyz", "mex",
    "gru", "scl", "bog",
    "jnb", "los", "nbo",
    "dxb", "bom", "sin", "nrt",
    "syd", "akl",
)


@dataclass(frozen=True)
class Pop:
    id: str
    city: str
    country: str
    region: str
    lat: float
    lon: float


@lru_cache(maxsize=1)
def all_pops() -> tuple[Pop, ...]:
    text = resources.files("replication").joinpath("data/pops.csv").read_text("utf-8")
    return tuple(
        Pop(r["id"], r["city"], r["country"], r["region"], float(r["lat"]), float(r["lon"]))
        for r in csv.DictReader(io.StringIO(text))
    )


def select_pops(spec: str = "default") -> list[Pop]:
    """`all`, `default`, or a comma-separated list of POP ids (order kept, duplicates refused)."""
    by_id = {p.id: p for p in all_pops()}
    if spec == "all":
        return list(all_pops())
    ids = DEFAULT_POPS if spec == "default" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"unknown POP id(s): {', '.join(unknown)}; known: {', '.join(sorted(by_id))}")
    if len(set(ids)) != len(ids):
        raise ValueError("a POP id is listed twice")
    if not ids:
        raise ValueError("no POPs selected")
    return [by_id[i] for i in ids]
