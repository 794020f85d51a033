"""Injectable clocks and id factories, used everywhere instead of ``datetime.now()`` and ``uuid4()``.

Notebooks and tests inject ``FixedClock``/``SteppingClock`` and ``SeededIds`` so their output is reproducible;
production code gets ``SystemClock`` and ``RandomIds`` by default.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

# Namespace for name-based (UUIDv5) ids: the same inputs always give the same id, on every machine.
ID_NAMESPACE = uuid.UUID("6f1c2a8e-2b8e-4b7f-9a57-3c1f0e5d9a10")


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdFactory(Protocol):
    def new_id(self) -> str: ...


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} is naive; clocks work in timezone-aware UTC")
    return value.astimezone(UTC)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """Always the same instant until moved with ``advance`` or ``set`` (thread-safe)."""

    def __init__(self, at: datetime) -> None:
        self._at = _require_aware(at)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._at += delta
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = _require_aware(at)


class SteppingClock:
    """Returns ``start``, ``start + step``, ``start + 2*step``, ... one step per call (thread-safe)."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=1)) -> None:
        if step <= timedelta(0):
            raise ValueError("step must be positive")
        self._next = _require_aware(start)
        self._step = step
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            current = self._next
            self._next += self._step
            return current


class RandomIds:
    def new_id(self) -> str:
        return str(uuid.uuid4())


class SeededIds:
    """Reproducible UUID-shaped ids from a seed (thread-safe)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._random.getrandbits(128), version=4))


def name_based_id(*parts: str) -> str:
    """A deterministic id for a tuple of strings (UUIDv5). Parts are joined with a separator no part contains."""
    for part in parts:
        if "\x1f" in part:
            raise ValueError("id parts must not contain the unit separator \\x1f")
    return str(uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts)))
