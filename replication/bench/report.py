"""Progress lines and result tables for benchmarks (stderr for progress, stdout for results)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A progress bar on a terminal; occasional plain lines otherwise (CI logs stay short). Both
    say how long the rest should take, from the pace so far (`eta`)."""

    def __init__(self, label: str, total: int, stream=None, width: int = 30, clock=time.monotonic) -> None:
        self.label, self.total, self.width = label, max(1, total), width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.clock = clock
        self._t0 = clock()
        self._last = 0.0
        self._last_pct = -1

    def eta(self, done: int, now: float) -> str:
        """`~Ns left` (or `~MmSSs`) at the pace so far; empty before the first step and at the end."""
        if done <= 0 or done >= self.total:
            return ""
        left = (now - self._t0) / done * (self.total - done)
        return f"~{left:.0f}s left" if left < 60 else f"~{int(left // 60)}m{int(left % 60):02d}s left"

    def update(self, done: int) -> None:
        pct = int(100 * done / self.total)
        now = self.clock()
        eta = self.eta(done, now)
        if self.tty:
            if now - self._last < 0.1 and done < self.total:
                return
            filled = int(self.width * done / self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label:>12} [{bar}] {done}/{self.total} {eta:<14}")
            if done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif pct // 25 != self._last_pct // 25 or done >= self.total and pct != self._last_pct:
            self.stream.write(f"{self.label}: {done}/{self.total} ({pct}%){', ' + eta if eta else ''}\n")
            self.stream.flush()
            self._last_pct = pct
        self._last = now


def phase(label: str, what: str, stream=None) -> None:
    """One line saying what a benchmark does next, where no bar shows it (at 10,000 replicas the
    phases after the measured writes take minutes)."""
    stream = stream or sys.stderr
    stream.write(f"{label}: {what}\n")
    stream.flush()


MAX_WIDTH = 100  # a table's lines fit a 100-column terminal, or a diff view, unwrapped
GAP = "  "


def fmt(v, decimals: int | None = None) -> str:
    """One cell. `decimals`: the column's precision (see `_decimals`); alone, 3 below 100, else 0."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if decimals is None:
            decimals = 3 if abs(v) < 100 else 0
        return f"{v:.{decimals}f}"
    return str(v)


def _decimals(values: list) -> int:
    """One precision per column, so its figures line up and compare: 3 decimals while every
    finite float in it is below 10, 2 below 100, 1 below 10,000, none beyond."""
    floats = [abs(v) for v in values if isinstance(v, float) and v == v and abs(v) != float("inf")]
    top = max(floats, default=0.0)
    return 3 if top < 10 else 2 if top < 100 else 1 if top < 10_000 else 0


def _header_lines(name: str, width: int) -> list[str]:
    """A column's name wrapped at its underscores into lines of at most `width` (a word longer
    than that stays whole: the column is as wide as its longest word)."""
    lines: list[str] = []
    for word in name.split("_"):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += "_" + word
        else:
            lines.append(word)
    return lines


def _render(rows: list[dict], columns: list[str], max_width: int) -> tuple[list[str], int]:
    """The lines and their width: names whole where they fit, the ones that save the most wrapped
    first, only as many as it takes to fit `max_width` (all of them if nothing else does)."""
    body = []
    for c in columns:
        d = _decimals([r.get(c) for r in rows])
        body.append([fmt(r.get(c), d) for r in rows])
    narrow = [max([len(x) for x in cells] + [max(len(word) for word in c.split("_"))]) for c, cells in zip(columns, body)]
    widths = [max(n, len(c)) for n, c in zip(narrow, columns)]

    def total() -> int:
        return sum(widths) + len(GAP) * (len(widths) - 1)

    for i in sorted(range(len(columns)), key=lambda i: narrow[i] - widths[i]):  # the biggest saving first
        if total() <= max_width:
            break
        widths[i] = max(len(h) for h in _header_lines(columns[i], narrow[i]))
    heads = [[c] if len(c) <= w else _header_lines(c, w) for c, w in zip(columns, widths)]
    depth = max(len(h) for h in heads)
    heads = [[""] * (depth - len(h)) + h for h in heads]  # names sit on the rule, like a single-line header

    def line(cells: list[str]) -> str:
        return GAP.join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line([h[k] for h in heads]) for k in range(depth)]
    out.append(GAP.join("-" * w for w in widths))
    out += [line([col[i] for col in body]) for i in range(len(rows))]
    return out, total()


def table(rows: list[dict], columns: list[str], max_width: int = MAX_WIDTH) -> str:
    """Rows under their column names, within `max_width` columns: long names wrap at their
    underscores (only as many as need to), and a table still too wide is cut into several,
    each repeating the first column (the row's name). Each column has one precision."""
    lines, width = _render(rows, columns, max_width)
    if width <= max_width or len(columns) <= 2:
        return "\n".join(lines)
    parts: list[list[str]] = []
    rest = columns[1:]
    while rest:
        take = 1
        while take < len(rest) and _render(rows, [columns[0], *rest[:take + 1]], max_width)[1] <= max_width:
            take += 1
        parts.append([columns[0], *rest[:take]])
        rest = rest[take:]
    return "\n\n".join("\n".join(_render(rows, cols, max_width)[0]) for cols in parts)


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
