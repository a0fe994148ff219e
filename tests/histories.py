"""Operations of generated histories, for every registered CRDT type (shared by the property tests).

An operation is `(namespace, key, op)` with `op` drawn from the type's own `EXAMPLES`: data, as
the HTTP API takes it. A type registered tomorrow is in every history at once.
"""

from __future__ import annotations

from hypothesis import strategies as st

from replication import Replica
from replication.crdts import types
from replication.crdts.base import FROM_READ
from replication.errors import InvalidOperation


def ops(keys: list[str]):
    """One operation of any registered type on one of `keys`."""
    return st.one_of(*(st.tuples(st.just(t.NAME), st.sampled_from(keys), st.sampled_from(t.EXAMPLES)) for t in types()))


def do(r: Replica, op, now):
    """Apply `(namespace, key, op)` at `r`; returns its delta, or None when nothing changed. An
    operation the type refuses here (a map field holding the other type) must change nothing."""
    ns, key, data = op
    if data.get("context") == FROM_READ:
        data = {**data, "context": r.read(ns, key).context}
    before = (r.digest(), r.hlc.last, r.version_vector)
    try:
        return r.write(ns, key, data, now=now)[1]
    except InvalidOperation:
        assert (r.digest(), r.hlc.last, r.version_vector) == before, "a refused write changed the replica"
        return None
