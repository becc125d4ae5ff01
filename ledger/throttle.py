"""Log lines that repeat, said once in a while (decision D111).

A fault that repeats fast (a database restarting under load: every block fails, every writer
gets a 503) would otherwise write the same line, traceback and all, thousands of times a
second. `Throttle` lets the first of each kind through, then one every so often, with how many
were held back since; the Prometheus counters still count every one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class Throttle:
    """The first event of each key, then at most one every `every` seconds."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic,
                 most_keys: int = 1024) -> None:
        self.every = every
        self._clock = clock
        self._most_keys = most_keys  # keys are forgotten all at once past this many
        self._lock = threading.Lock()
        self._said: dict[Hashable, tuple[float, int]] = {}  # key -> (last said, held since)

    def due(self, key: Hashable) -> int | None:
        """None if this event is held back; else how many of its key were held back since the
        last one said (0 for the first)."""
        now = self._clock()
        with self._lock:
            said = self._said.get(key)
            if said is not None and now - said[0] < self.every:
                self._said[key] = (said[0], said[1] + 1)
                return None
            if said is None and len(self._said) >= self._most_keys:
                self._said.clear()
            self._said[key] = (now, 0)
            return said[1] if said is not None else 0


def db_reason(e: BaseException, most: int = 300) -> str:
    """A failure's kind and message as a key that repeats while the fault does: for an error
    that wraps another (SQLAlchemy's around the driver's, a seal's around its cause) the
    innermost message, without the statement and parameters SQLAlchemy adds, which differ
    from one call to the next."""
    for _ in range(8):  # (a chain that loops back on itself is cut short)
        inner = getattr(e, "orig", None) or e.__cause__
        if not isinstance(inner, BaseException) or inner is e:
            break
        e = inner
    return f"{type(e).__name__}: {str(e)[:most]}"
