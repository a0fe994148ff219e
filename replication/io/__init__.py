"""Real I/O on the wall clock: the TCP transport, SQLite storage and its integrity, the replica runner."""
