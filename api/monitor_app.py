"""A monitor's HTTP face (`copyledger monitor --serve HOST:PORT`): the log as the monitor
verified it, answered from its own copy, so that a court or platform can serve reads and proofs
without asking the registry (D31b).

- `/checkpoint`, `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`: C2SP tlog-tiles of the
  latest tree the monitor verified (the same bytes the log served, checked);
- `/v1/entries/{seq}/proof[?tree_size=N]`: an entry's inclusion proof to a checkpoint the
  monitor verified, with the entry and the C2SP tlog-proof text (`monitor bundle`'s document);
- `/metrics`: Prometheus text (verified tree size, last check, alerts by kind, and how each
  witness's cosigned checkpoint compared with the copy);
- `/healthz`.

It reads the copy through its own connection (the follower writes through another; SQLite's
WAL shows each reader only committed, so verified, trees), one request at a time.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from copyledger.api import problems
from copyledger.ledger.errors import NotFound
from copyledger.service import tiles
from copyledger.service.monitor import WITNESS_STATUSES, Mirror, MonitorStatus

__all__ = ["create_monitor_app"]

ALERT_KINDS = ("fork", "rollback", "bad-signature", "invalid-entry", "bad-tile")


def create_monitor_app(directory: Path, status: MonitorStatus) -> FastAPI:
    mirror = Mirror(directory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        mirror.close()

    app = FastAPI(title="copyledger monitor", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    problems.install(app)
    lock = threading.Lock()
    metrics = _Metrics()

    def latest() -> Any:
        cp = mirror.latest()
        if cp is None:
            raise NotFound("the monitor holds no verified checkpoint yet")
        return cp

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/checkpoint", response_class=PlainTextResponse)
    def checkpoint() -> PlainTextResponse:
        with lock:
            text = latest().note
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": tiles.CHECKPOINT_CACHE})

    @app.get("/tile/{path:path}")
    def tile(path: str) -> Response:
        with lock:
            want, data = tiles.tile_at(mirror, "tile/" + path, latest().size)
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": tiles.cache_control(want)})

    @app.get("/v1/entries/{seq}/proof")
    def proof(seq: int, tree_size: int | None = None) -> dict[str, Any]:
        with lock:
            return mirror.proof(seq, tree_size)

    @app.get("/metrics")
    def get_metrics() -> Response:
        with lock:
            cp = mirror.latest()
        return Response(metrics.render(cp.size if cp else 0, status.snapshot()),
                        media_type=CONTENT_TYPE_LATEST)

    return app


class _Metrics:
    """The monitor's gauges, set from its status at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.size = Gauge("copyledger_monitor_verified_tree_size",
                          "Leaves in the latest tree the monitor verified", registry=r)
        self.checks = Gauge("copyledger_monitor_checks_total",
                            "Polls that reached the log", registry=r)
        self.last_check = Gauge("copyledger_monitor_last_check_timestamp_seconds",
                                "When the monitor last polled the log (0: never)", registry=r)
        self.last_verified = Gauge("copyledger_monitor_last_verified_timestamp_seconds",
                                   "When a poll last held (0: never)", registry=r)
        self.alerting = Gauge("copyledger_monitor_alerting",
                              "1 while the log serves what the monitor cannot accept",
                              registry=r)
        self.stale_since = Gauge("copyledger_monitor_stale_since_timestamp_seconds",
                                 "Since when the log has served earlier states of the verified "
                                 "tree (0: it does not)", registry=r)
        self.alerts = Gauge("copyledger_monitor_alerts_total",
                            "Distinct alerts raised, by kind", ["kind"], registry=r)
        self.witness = Gauge("copyledger_monitor_witness_status",
                             "1 for each --witness's last comparison with the copy (D43)",
                             ["witness", "status"], registry=r)
        self.cosigned_at = Gauge("copyledger_monitor_witness_cosigned_timestamp_seconds",
                                 "When each --witness last cosigned what the monitor was shown "
                                 "(D133: its age tells a frozen log)", ["witness"], registry=r)

    def render(self, size: int, s: dict[str, Any]) -> bytes:
        self.size.set(size)
        self.checks.set(s["checks"])
        self.last_check.set(s["last_check"])
        self.last_verified.set(s["last_verified"])
        self.alerting.set(1 if s["alerting"] else 0)
        self.stale_since.set(s["stale_since"])
        for kind in {*ALERT_KINDS, *s["alerts"]}:
            self.alerts.labels(kind=kind).set(s["alerts"].get(kind, 0))
        for name, now in s["witnesses"].items():
            for status in WITNESS_STATUSES:
                self.witness.labels(witness=name, status=status).set(status == now)
        for name, at in s["cosigned_at"].items():
            self.cosigned_at.labels(witness=name).set(at)
        return generate_latest(self.registry)
