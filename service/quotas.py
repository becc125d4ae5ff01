"""Token buckets: how often one caller (an API key, a client address) may do something.

State is in memory, so each API process keeps its own buckets: with N processes behind a load
balancer a caller gets up to N times the rate. Refusals raise `RateLimited` carrying
`retry_after` (whole seconds until a token is back), which HTTP sends as `Retry-After`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable

from copyledger.ledger.errors import RateLimited

__all__ = ["TokenBuckets"]

_FORGET_AFTER = 100_000  # past this many callers, drop those whose bucket has refilled


class TokenBuckets:
    """One bucket per caller: `rate` tokens a second, holding at most `burst`; each call to
    `take` spends one. A rate of 0 or less means no limit."""

    def __init__(self, rate: float, burst: float, what: str) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.what = what  # for the refusal: "writes per API key", ...
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: Hashable) -> None:
        """Spend one of `caller`'s tokens, or raise RateLimited (spending nothing)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                wait = max(1, math.ceil((1 - tokens) / self.rate))
                raise RateLimited(f"at most {self.rate:g} {self.what} a second (bursts of "
                                  f"{self.burst:g}); try again in {wait} s", retry_after=wait)
            self._buckets[caller] = (tokens - 1, now)
            if len(self._buckets) > _FORGET_AFTER:
                full = self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
