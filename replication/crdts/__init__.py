"""Delta-state CRDTs, one module per type. Namespaces map to types."""

from . import mvregister, orset, pncounter

BY_NAMESPACE = {m.NAME: m for m in (mvregister, pncounter, orset)}

__all__ = ["mvregister", "pncounter", "orset", "BY_NAMESPACE"]
