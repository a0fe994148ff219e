"""The dashboard server: the page, its live stream, and the API over a cluster (simulated or processes)."""
