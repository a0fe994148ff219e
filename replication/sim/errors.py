"""The simulator's errors, apart from the simulator itself: exception classes stay ordinary
Python classes when the simulator is compiled (`replication/native.py`; mypyc cannot compile a
class that inherits from a built-in exception)."""

from __future__ import annotations

from collections.abc import Iterable


class SimulationError(RuntimeError):
    """The simulated system did something impossible (a bug in a node, not a fault)."""


class TimerRunaway(SimulationError):
    """A node's timer deadline never advanced past the current instant."""


class UnknownNode(ValueError):
    def __init__(self, node_id: object, known: Iterable[str]) -> None:
        super().__init__(f"unknown replica id {node_id!r}; known: {', '.join(known)}")
        self.node_id = node_id


__all__ = ["SimulationError", "TimerRunaway", "UnknownNode"]
