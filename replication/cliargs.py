"""Argument types shared by the command lines (`edgestate serve`, `bench ...`): each turns
text into a value or raises argparse's error with a message that names the problem."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def positive_int(text: str) -> int:
    v = _number(text, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {v}")
    return v


def positive(text: str) -> float:
    v = _number(text)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def non_negative(text: str) -> float:
    v = _number(text)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return v


def probability(text: str) -> float:
    """A loss or duplication probability: 1 would lose everything, so it stops short of it."""
    v = _number(text)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v
