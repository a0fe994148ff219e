"""What every HTTP server here shares: the data API, errors, limits, access control, metrics, docs, events."""
