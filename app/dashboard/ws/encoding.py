"""How the stream writes JSON, and the wall clock it stamps events with."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """orjson, falling back to the standard library for what orjson refuses (huge ints)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode("utf-8")


def wall_ms() -> float:
    """Unix ms, the `"w"` of every event: a client measures its lag against it."""
    return round(time.time() * 1000.0, 1)
