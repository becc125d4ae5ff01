"""Prometheus metrics: what an operator graphs and alerts on."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

ENTRIES = Counter("copyledger_entries_total", "Entries sealed into the log", registry=REGISTRY)
BLOCKS = Counter("copyledger_blocks_total", "Blocks sealed", registry=REGISTRY)
TREE_SIZE = Gauge("copyledger_tree_size", "Leaves in the log", registry=REGISTRY)
BLOCK_HEIGHT = Gauge("copyledger_block_height", "Height of the latest block", registry=REGISTRY)
BATCH = Histogram(
    "copyledger_block_entries",
    "Entries per sealed block",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
    registry=REGISTRY,
)
REQUESTS = Counter(
    "copyledger_http_requests_total",
    "HTTP requests by method and status class",
    ["method", "status"],
    registry=REGISTRY,
)
EXTERNAL_MISSING = Gauge(
    "copyledger_external_tsa_missing_blocks",
    "Blocks not yet stamped by an external TSA",
    ["tsa"],
    registry=REGISTRY,
)
WITNESS_LAG = Gauge(
    "copyledger_witness_uncosigned_entries",
    "Entries of the log not yet covered by a witness's latest cosignature",
    ["witness"],
    registry=REGISTRY,
)
