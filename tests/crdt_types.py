"""Checked by mypy (tests/test_contract.py), not run: every CRDT type module implements the one
protocol (`replication.crdts.base.CrdtType`). A member missing or of an incompatible type in
one of them is a type error here; `register` refuses a missing member at import as well."""

from __future__ import annotations

from replication.crdts import mvregister, ormap, orset, pncounter
from replication.crdts.base import CrdtType

KV: CrdtType = mvregister
COUNTERS: CrdtType = pncounter
SETS: CrdtType = orset
MAPS: CrdtType = ormap
