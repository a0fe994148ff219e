"""SQLite's write-ahead log, read and checked before SQLite opens the database.

SQLite verifies its WAL frame by frame with a cumulative checksum and stops at the first
frame that fails: everything after it is ignored, committed or not, without a word. That
is right for a torn tail (a crash in the middle of a commit leaves a partly written last
transaction, never acknowledged), and silent data loss for a flipped byte in the middle.
This module reads the WAL the way SQLite does and says which of the two it is.

Format (https://www.sqlite.org/fileformat.html#the_write_ahead_log): a 32-byte header
(magic 0x377f0682/0x377f0683 whose low bit says the byte order of the checksum words,
format version, page size, checkpoint sequence, two salts, a checksum of the first 24
bytes), then frames of a 24-byte header (page number, database size in pages for a commit
frame else 0, the two salts, two checksum words) and one page. A frame's checksum runs over
its first 8 header bytes and its page, seeded with the previous frame's checksum (the
header's for the first frame). A frame counts when its salts are the header's and its
checksum verifies; SQLite replays frames up to the last commit frame of that valid run.

What is reported (`WalCheck.damage`), each naming the frame and its byte offset:

- A frame that fails while a later commit frame verifies from its predecessor's *stored*
  checksum (so the chain was intact when it was written): SQLite would silently drop that
  committed transaction and everything between. Salts are not under the checksum, so a
  frame whose salts were hit still verifies from its predecessor this way and is caught.
- The first failing frame is itself a whole commit frame of the current generation with
  nothing valid after it: the last transaction was written in full and does not verify.
  A crash between the two writes of that frame (header, then page) looks the same, so
  this is reported as "cut short or corrupt": cautious, never silent.
- A header that does not verify, with whole frames after it: SQLite ignores the entire WAL.
  (SQLite syncs the header before writing frames behind it, so a crash does not tear it.)

Not reported, because they are what a crash normally leaves: a short last frame, frames
after the last commit that never reach a valid commit, and old-generation frames (other
salts) after the current ones.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC_LE = 0x377F0682  # checksum words little-endian
MAGIC_BE = 0x377F0683  # checksum words big-endian
VERSION = 3007000
HEADER = 32
FRAME_HEADER = 24
_MASK = 0xFFFFFFFF


def page_size_ok(n: int) -> bool:
    return 512 <= n <= 65536 and n & (n - 1) == 0


def checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of `data` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    it = iter(words)
    for a, b in zip(it, it):
        s0 = (s0 + a + s1) & _MASK
        s1 = (s1 + b + s0) & _MASK
    return s0, s1


@dataclass(frozen=True)
class Frame:
    index: int  # 1-based, as SQLite counts them
    offset: int  # byte offset of the frame header in the file
    page: int
    commit: int  # database size in pages after a commit frame; 0 for other frames
    salts: tuple[int, int]
    stored: tuple[int, int]  # the checksum written in the frame header


@dataclass(frozen=True)
class WalDamage:
    frame: int | None  # None: the header
    offset: int
    problem: str

    @property
    def record(self) -> str:
        return "the WAL header" if self.frame is None else f"WAL frame {self.frame} (offset {self.offset})"


@dataclass
class WalCheck:
    path: Path
    size: int = 0
    page_size: int | None = None
    frames: int = 0  # whole frames in the file (valid or not)
    replayed: int = 0  # frames SQLite replays: up to the last commit of the valid run
    damage: list[WalDamage] = field(default_factory=list)


def read_frames(raw: bytes, page_size: int) -> list[Frame]:
    out = []
    step = FRAME_HEADER + page_size
    off = HEADER
    while off + step <= len(raw):
        page, commit, salt1, salt2, c1, c2 = struct.unpack_from(">6I", raw, off)
        out.append(Frame(len(out) + 1, off, page, commit, (salt1, salt2), (c1, c2)))
        off += step
    return out


def _frame_sum(raw: bytes, f: Frame, page_size: int, seed: tuple[int, int], big: bool) -> tuple[int, int]:
    s = checksum(raw[f.offset : f.offset + 8], seed[0], seed[1], big)
    return checksum(raw[f.offset + FRAME_HEADER : f.offset + FRAME_HEADER + page_size], s[0], s[1], big)


def check_wal(path: str | Path, db_page_size: int | None = None) -> WalCheck:
    """Read the WAL at `path` (missing: nothing to check) and report what SQLite would drop
    silently. `db_page_size` (from the database header) stands in when the WAL's is damaged."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return WalCheck(path)
    out = WalCheck(path, size=len(raw))
    if len(raw) < HEADER:
        return out  # a header cut short: no frame was ever behind it
    magic, version, page_size, _ckpt, salt1, salt2, h1, h2 = struct.unpack_from(">8I", raw, 0)
    if page_size == 1:
        page_size = 65536
    big = magic == MAGIC_BE
    header_ok = (magic in (MAGIC_LE, MAGIC_BE) and version == VERSION and page_size_ok(page_size)
                 and checksum(raw[:24], 0, 0, big) == (h1, h2))
    if not header_ok:
        size = page_size if page_size_ok(page_size) else db_page_size or 4096
        frames = read_frames(raw, size)
        out.page_size, out.frames = size, len(frames)
        if frames:
            out.damage.append(WalDamage(None, 0, f"does not verify, and {len(frames)} whole frames follow it: "
                                                  "SQLite ignores the whole WAL, committed transactions included"))
        return out
    out.page_size = page_size
    frames = read_frames(raw, page_size)
    out.frames = len(frames)
    salts = (salt1, salt2)
    seed = (h1, h2)
    bad = None
    for f in frames:
        if f.salts != salts or _frame_sum(raw, f, page_size, seed, big) != f.stored:
            bad = f
            break
        seed = f.stored
        if f.commit:
            out.replayed = f.index
    if bad is None:
        return out
    # The run SQLite accepts ends at `bad`. Is a committed transaction hiding behind it? Frames
    # are written in order, so a whole commit frame of this generation after `bad` means `bad`
    # was once written whole: it was damaged since. A frame whose checksum chains from a
    # current predecessor is current too, whatever its (unchecksummed) salts now say.
    prev = frames[bad.index - 2] if bad.index > 1 else None
    prev_stored = prev.stored if prev else (h1, h2)
    prev_salts = prev.salts if prev else salts
    for f in frames[bad.index - 1 :]:
        if f.commit and ((f is not bad and f.salts == salts) or (
                prev_salts == salts and _frame_sum(raw, f, page_size, prev_stored, big) == f.stored)):
            out.damage.append(WalDamage(bad.index, bad.offset, (
                f"does not verify, yet commit frame {f.index} (offset {f.offset}) of the same generation "
                f"follows it: SQLite would silently drop every transaction from frame {bad.index} on")))
            return out
        prev_stored, prev_salts = f.stored, f.salts
    if bad.salts == salts and bad.commit:
        out.damage.append(WalDamage(bad.index, bad.offset, (
            "the last transaction's commit frame is whole and does not verify: a crash cut that write "
            "short (then nothing acknowledged is lost) or it is corrupt (then the last acknowledged "
            "transaction is)")))
    return out


def db_page_size(db_path: str | Path) -> int | None:
    """The page size in a database file's header, if it reads as one."""
    try:
        with open(db_path, "rb") as f:
            head = f.read(18)
    except OSError:
        return None
    if len(head) < 18 or not head.startswith(b"SQLite format 3\x00"):
        return None
    n = struct.unpack_from(">H", head, 16)[0]
    n = 65536 if n == 1 else n
    return n if page_size_ok(n) else None


__all__ = ["Frame", "WalCheck", "WalDamage", "check_wal", "checksum", "db_page_size", "read_frames"]
