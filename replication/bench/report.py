"""Progress lines and result tables for benchmarks (stderr for progress, stdout for results)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A progress bar on a terminal; occasional plain lines otherwise (CI logs stay short)."""

    def __init__(self, label: str, total: int, stream=None, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(1, total), width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._last_pct = -1

    def update(self, done: int) -> None:
        pct = int(100 * done / self.total)
        now = time.monotonic()
        if self.tty:
            if now - self._last < 0.1 and done < self.total:
                return
            filled = int(self.width * done / self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label:>12} [{bar}] {done}/{self.total}")
            if done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif pct // 25 != self._last_pct // 25 or done >= self.total and pct != self._last_pct:
            self.stream.write(f"{self.label}: {done}/{self.total} ({pct}%)\n")
            self.stream.flush()
            self._last_pct = pct
        self._last = now


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[c for c in columns]] + [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def finish(name: str, measure, render, json_path: str | None) -> int:
    """Run a benchmark's `measure()`, print `render(result)`, and write the JSON if asked.
    A RuntimeError (the benchmark could not run) is one line on stderr and exit 1."""
    import json

    try:
        result = measure()
    except RuntimeError as e:
        print(f"edgestate bench {name}: error: {e}", file=sys.stderr)
        return 1
    print(render(result))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0
