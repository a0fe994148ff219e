"""Disk-fault campaign: damage a replica's files, start it, and see whether anyone is told.

Three kinds of damage, each trial on its own copy of a real data directory:

- `db-flip`: 1-16 random bytes of the main database flipped after a clean stop (the WAL is
  folded in and gone then): bit rot, a bad sector, a misdirected write.
- `wal-flip`: one byte of `edgestate.db-wal` flipped after a child process that was
  acknowledging writes (each one flushed) was SIGKILLed.
- `value-edit`: one character of a stored kv value changed in the database file, as a hex
  editor or a stray `sed -i` would.

Every trial runs the real start-up path (`Storage.open`, then `restore`) and ends as one of:

- detected: the storage named the damage (file and record); the trial also repairs it and
  checks the salvaged state is a valid lower state (joined with the undamaged state it gives
  exactly that state: nothing wrong is ever served to peers, nothing lacking passes for
  removed). A repair that fails this is `bad_repair`, a failure;
- harmless: nothing said, and the state is exactly the undamaged one (a flip in free space,
  in an old WAL generation, in a torn tail SQLite ignores anyway);
- SILENT: started, nothing said, and the state differs. The failure this campaign hunts.

`run(trials, seed, kind)` returns the counts; the same seed gives the same trials.
`python -m replication.bench.disk_faults [TRIALS] [SEED] [KIND ...]` prints them.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..replica import Replica
from ..errors import StorageError
from ..io.storage import DB_NAME, Storage, describe
from .workload import Workload

KINDS = ("db-flip", "wal-flip", "value-edit")
WAL = DB_NAME + "-wal"
ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `replication` package
MAX_EXAMPLES = 3


@dataclass
class Trial:
    n: int
    outcome: str  # detected | harmless | silent | bad_repair
    damage: str  # what was done to the files
    message: str = ""  # what the storage said (detected), or how the state differs (silent)


@dataclass
class Report:
    kind: str
    trials: int
    seed: int
    detected: int = 0
    harmless: int = 0
    silent: int = 0
    bad_repair: int = 0
    seconds: float = 0.0
    failures: list[Trial] = field(default_factory=list)  # every silent and bad_repair trial
    examples: list[Trial] = field(default_factory=list)  # a few detected ones, for the record

    @property
    def ok(self) -> bool:
        return not self.silent and not self.bad_repair

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def line(self) -> str:
        return (f"{self.kind:>10}: {self.trials} trials in {self.seconds:.1f} s: {self.detected} detected, "
                f"{self.harmless} harmless, {self.silent} SILENT, {self.bad_repair} bad repairs")


# -- a workload: local writes, a peer's deltas, anti-entropy replies, checkpoints ----------------


def acknowledged_digests(seed: str, batches: int) -> list[str]:
    """The digest after each of the first `batches` batches of `_child_main`'s run."""
    w = Workload(seed, keys=120)
    lhr = Replica("lhr", members=["lhr", "fra"])
    out = []
    for _ in range(batches):
        w.run_batch(lhr, None, w.rng.choice([1, 1, 4]))
        out.append(lhr.digest())
    return out


def build_clean(path: Path, seed: str, batches: int = 150) -> None:
    """A data directory after some life and a clean stop."""
    w = Workload(seed, keys=120)
    st = Storage.open(path, synchronous="NORMAL")  # a clean close syncs; durability is not on trial here
    lhr = st.restore("lhr", members=["lhr", "fra"])
    for b in range(batches):
        w.run_batch(lhr, st, w.rng.choice([1, 4, 10]))
        if w.rng.random() < 0.1:
            st.checkpoint(lhr)
        if w.rng.random() < 0.05:
            lhr.observe_peer("fra", w.fra.applied_context)  # forget dot->key entries both hold
    st.close(lhr)


def _child_main(path: str, seed: str, every: int) -> None:
    """Acknowledge batches on stdout until killed (each line: batch number, digest)."""
    w = Workload(seed, keys=120)
    st = Storage.open(path)
    lhr = st.restore("lhr", members=["lhr", "fra"])
    b = 0
    while True:
        w.run_batch(lhr, st, w.rng.choice([1, 1, 4]))
        b += 1
        if b % every == 0:
            st.checkpoint(lhr)
        print(b, lhr.digest(), flush=True)


def build_crashed(path: Path, seed: str, acks: int, every: int) -> list[str]:
    """A data directory as SIGKILL leaves it, in the middle of acknowledged writes.
    Returns the digests acknowledged, in order."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from replication.bench.disk_faults import _child_main; "
            f"_child_main({str(path)!r}, {seed!r}, {every})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    digests: list[str] = []
    try:
        while len(digests) < acks:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the writing child died: {proc.stderr.read()}")
            digests.append(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        digests += [line.split()[1] for line in proc.stdout.read().splitlines() if len(line.split()) == 2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    (path / "LOCK").unlink(missing_ok=True)
    (path / (DB_NAME + "-shm")).unlink(missing_ok=True)  # SQLite rebuilds it from the WAL
    return digests


# -- one trial --------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in (DB_NAME, WAL):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    return dst


def restore_pristine(image: Path, scratch: Path) -> Replica:
    """The state the undamaged image restores to (from a copy: a clean close folds the WAL in)."""
    with Storage.open(_copy(image, scratch)) as st:
        if st.damage:
            raise RuntimeError(f"the undamaged image reports damage: {describe(st.damage)}")
        rep = st.restore("lhr", members=["lhr", "fra"])
    shutil.rmtree(scratch)
    return rep


def _differs(a: Replica, b: Replica) -> str:
    s, t = a.store, b.store
    if s.data != t.data:
        keys = sorted({(ns, k) for ns in s.data for k in {*s.data[ns], *t.data[ns]} if s.data[ns].get(k) != t.data[ns].get(k)})
        return f"{len(keys)} keys differ, e.g. {keys[:3]}"
    if s.ctx != t.ctx or s.applied != t.applied:
        return "the contexts differ"
    if s.key_of != t.key_of:
        return "the dot -> key map differs"
    if a.actor != b.actor or a.hlc.last < b.hlc.last:
        return f"actor {a.actor} / HLC {a.hlc.last} where {b.actor} / {b.hlc.last} was stored"
    return ""


def _joined_is(salvaged: Replica, reference: Replica) -> bool:
    """salvaged ⊔ reference == reference: a valid lower state."""
    probe = Replica("probe")
    probe.apply(salvaged.store.full_delta())
    probe.apply(reference.store.full_delta())
    return probe.digest() == reference.digest()


def classify(path: Path, reference: Replica, n: int, what: str) -> Trial:
    try:
        st = Storage.open(path)
    except StorageError as e:  # refused outright (a header that no longer says our schema version)
        return Trial(n, "detected", what, e.message)
    with st:
        if st.damage:
            msg = describe(st.damage, limit=2)
            rep = st.restore("lhr", members=["lhr", "fra"], actor="lhr~1.campaign", repair=True)
            if not _joined_is(rep, reference):
                return Trial(n, "bad_repair", what, f"{msg}; the salvaged state is not below the stored one")
            return Trial(n, "detected", what, msg)
        try:
            rep = st.restore("lhr", members=["lhr", "fra"])
        except StorageError as e:
            return Trial(n, "detected", what, e.message)
    diff = _differs(rep, reference)
    return Trial(n, "silent", what, diff) if diff else Trial(n, "harmless", what)


def _flip(path: Path, rng: random.Random, count: int) -> str:
    raw = bytearray(path.read_bytes())
    at = sorted(rng.sample(range(len(raw)), min(count, len(raw))))
    for i in at:
        raw[i] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(raw))
    return f"{path.name}: {len(at)} bytes flipped at {at[:4]}{'...' if len(at) > 4 else ''} of {len(raw)}"


def _edit_value(path: Path, reference: Replica, rng: random.Random) -> str | None:
    raw = bytearray(path.read_bytes())
    values = sorted(v for s in reference.store.data["kv"].values() for v, _ts in s.values())
    rng.shuffle(values)
    for v in values:
        spots = []
        start = raw.find(v)
        while start >= 0:
            spots.append(start)
            start = raw.find(v, start + 1)
        if spots:
            at = rng.choice(spots) + rng.randrange(1, len(v) - 1)  # inside the JSON string's quotes
            old = raw[at]
            raw[at] = rng.choice([c for c in b"abcdefghijklmnopqrstuvwxyz0123456789 " if c != old])
            path.write_bytes(bytes(raw))
            return f"{path.name}: value {v.decode()!r} edited at byte {at} ({chr(old)!r} -> {chr(raw[at])!r})"
    return None


def run(trials: int, seed: int, kind: str, *, progress=None) -> Report:
    """Run `trials` trials of `kind` (db-flip, wal-flip, value-edit). `progress(done)` is
    called after each. Returns the counts."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    rep = Report(kind, trials, seed)
    t0 = time.monotonic()
    per_image = 2 if kind == "wal-flip" else 10  # a crash image costs a child process
    with tempfile.TemporaryDirectory(prefix="edgestate-disk-faults-") as tmp:
        work = Path(tmp)
        image = reference = None
        for n in range(trials):
            rng = random.Random(f"{seed}:{kind}:{n}")
            if n % per_image == 0:
                image = work / f"image{n}"
                img_seed = f"{seed}:{kind}:image{n}"
                if kind == "wal-flip":
                    digests = build_crashed(image, img_seed, acks=rng.randrange(30, 1500), every=rng.choice([25, 100]))
                    reference = restore_pristine(image, work / "pristine")
                    expected = acknowledged_digests(img_seed, len(digests) + 1)
                    if expected[: len(digests)] != digests or reference.digest() not in expected[-2:]:
                        raise RuntimeError("the undamaged crash image is not the state after the last "
                                           "acknowledged batch (or the one being flushed)")
                else:
                    build_clean(image, img_seed)
                    reference = restore_pristine(image, work / "pristine")
            copy = _copy(image, work / f"t{n}")
            if kind == "db-flip":
                what = _flip(copy / DB_NAME, rng, rng.randint(1, 16))
            elif kind == "wal-flip":
                if not (copy / WAL).exists() or (copy / WAL).stat().st_size <= 32:
                    raise RuntimeError("the crash image has no WAL frames to damage")
                what = _flip(copy / WAL, rng, 1)
            else:
                what = _edit_value(copy / DB_NAME, reference, rng) or "no stored value found to edit"
            trial = classify(copy, reference, n, what)
            setattr(rep, trial.outcome, getattr(rep, trial.outcome) + 1)
            if trial.outcome in ("silent", "bad_repair"):
                rep.failures.append(trial)
            elif trial.outcome == "detected" and len(rep.examples) < MAX_EXAMPLES:
                rep.examples.append(trial)
            shutil.rmtree(copy)
            if image is not None and (n + 1) % per_image == 0:
                shutil.rmtree(image, ignore_errors=True)
            if progress is not None:
                progress(n + 1)
    rep.seconds = time.monotonic() - t0
    return rep


def main(argv: list[str]) -> int:
    import argparse

    from ..cliargs import positive_int

    p = argparse.ArgumentParser(prog="python -m replication.bench.disk_faults",
                                description="Damage a replica's files, start it, and see whether anyone is told.")
    p.add_argument("trials", nargs="?", type=positive_int, default=20, help="trials per kind (default 20)")
    p.add_argument("seed", nargs="?", type=int, default=0, help="the same seed gives the same trials (default 0)")
    p.add_argument("kinds", nargs="*", metavar="KIND", help=f"which damage: {', '.join(KINDS)} (default all)")
    args = p.parse_args(argv)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown damage {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    trials, seed, kinds = args.trials, args.seed, args.kinds or list(KINDS)
    ok = True
    for kind in kinds:
        r = run(trials, seed, kind)
        print(r.line())
        for t in r.failures:
            print(f"  {t.outcome.upper()} trial {t.n}: {t.damage}: {t.message}")
        for t in r.examples:
            print(f"  e.g. trial {t.n}: {t.damage}\n       -> {t.message}")
        ok &= r.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["KINDS", "Report", "Trial", "run"]
