"""Delta-state CRDTs, one module per type. Namespaces map to types.

Every type module offers the same functions, which the store and the wire rely on:
`NAME`, `CONTEXT_REMOVES`, `empty()`, `join(a, ca, b, cb)`, `dots(store)` (the live dots), `contents(store)`
(each live dot with the content its seal covers, by dot: see `replication.seals`),
`without(store, dots)`, `to_wire(store)` and `from_wire(obj)`.
"""

from . import mvregister, orset, pncounter

BY_NAMESPACE = {m.NAME: m for m in (mvregister, pncounter, orset)}

__all__ = ["mvregister", "pncounter", "orset", "BY_NAMESPACE"]
