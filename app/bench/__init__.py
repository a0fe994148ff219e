"""Benches that drive servers and processes: `edgestate bench ws|replica|faults`."""
