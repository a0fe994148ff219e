"""The coordinated baseline: Raft-style consensus on the same simulator, and what it would cost."""
