"""The simulation layer: a deterministic discrete-event WAN and the replicas on it."""
