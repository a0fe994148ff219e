"""Benchmarks behind `edgestate bench ...`. Figures come from virtual time where the claim is
about the protocol, and from wall time only where the claim is about this implementation."""
