"""The disk's floor for a durable write, measured where a replica keeps its data.

A replica answers a write once SQLite has committed it with `synchronous=FULL` in WAL mode
(`replication.io.storage`): one fsync of the WAL per commit. Nothing over HTTP can be faster
than that commit on the same disk, so `edgestate bench replica` measures it in the same run,
beside the replica's own figures, and states its targets as ratios to it: figures from two runs
(or two machines) are not comparable, a ratio in one run is.

The floor: a fresh database in the given directory, the replica's own settings (WAL,
`synchronous=FULL`), one 100-byte row per transaction, committed one after another.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path

ROW_BYTES = 100
WARMUP = 20  # commits before timing: the WAL file grows to its working size first


def pct(xs: list[float], p: float) -> float:
    """The nearest-rank `p`th percentile (0-100). `bench replica` takes its writes' percentiles
    with this one too: they are compared with the floor's."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))]


def open_db(path: str | os.PathLike, **connect) -> sqlite3.Connection:
    """A database of `floor` rows with the replica's settings (WAL, `synchronous=FULL`), in
    autocommit mode: each caller says BEGIN IMMEDIATE ... COMMIT itself."""
    conn = sqlite3.connect(path, isolation_level=None, **connect)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS floor (seq INTEGER PRIMARY KEY, row BLOB NOT NULL)")
    return conn


def measure(directory: str | os.PathLike, commits: int) -> dict:
    """p50 and p99 of one commit (ms) and commits per second, one after another (and the samples,
    for `combine`)."""
    path = Path(directory) / "fsync-floor.db"
    conn = open_db(path)
    try:
        row = os.urandom(ROW_BYTES)
        for _ in range(WARMUP):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO floor (row) VALUES (?)", (row,))
            conn.execute("COMMIT")
        lat: list[float] = []
        t_start = time.perf_counter()
        for _ in range(commits):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO floor (row) VALUES (?)", (row,))
            conn.execute("COMMIT")
            lat.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - t_start
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"floor_p50_ms": statistics.median(lat), "floor_p99_ms": pct(lat, 99),
            "floor_commits_per_s": commits / elapsed, "samples_ms": lat, "elapsed_s": elapsed}


def combine(runs: list[dict]) -> dict:
    """One floor from several runs of `measure` (before and after the load): pooled samples."""
    lat = [x for r in runs for x in r["samples_ms"]]
    elapsed = sum(r["elapsed_s"] for r in runs)
    return {"floor_p50_ms": statistics.median(lat), "floor_p99_ms": pct(lat, 99),
            "floor_commits_per_s": len(lat) / elapsed, "floor_commits": len(lat)}
