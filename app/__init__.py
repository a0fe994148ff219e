"""edgestate's web layer: a FastAPI app over a replication cluster, and the `edgestate` command line."""
