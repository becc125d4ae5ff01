"""The background loop the notary's helpers share (external TSAs, witnesses): off the sealing
path, one pass at a time, sooner when a block was sealed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

from copyledger.ledger.bounded import deadline_client

log = logging.getLogger("copyledger.notary")

Pass = Callable[[httpx.Client], float]  # one pass; returns how long to wait for the next


class Worker:
    """A daemon thread that runs a pass, then waits the seconds the pass returned or until
    `poke`. A pass that raises is logged and retried after `interval`: the thread outlives a
    database or network outage. Passes check `stopping` between items of work."""

    def __init__(self, name: str, interval: float, timeout: float) -> None:
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, one_pass: Pass) -> None:
        self._thread = threading.Thread(target=self._run, args=(one_pass,), name=self.name,
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout * 2)

    def poke(self) -> None:
        """A block was sealed: look sooner than the interval."""
        self._wake.set()

    def _run(self, one_pass: Pass) -> None:
        with deadline_client(self.timeout) as http:
            while not self.stopping.is_set():
                try:
                    wait = one_pass(http)
                except Exception:  # e.g. the database is away: keep the thread, try again
                    log.exception("%s pass failed", self.name)
                    wait = self.interval
                self._wake.wait(wait)
                self._wake.clear()
