"""`copyledger monitor --serve`: a monitor process answers from its own verified copy (tiles,
checkpoint, inclusion proofs), exposes Prometheus metrics, and when the log forks it keeps
serving what it verified, counts the alert, and posts it to the webhook once, naming the sizes
and hashes; an earlier state of the same tree is reported as stale, not as an alert. Real
processes: the registry, the monitor, and (the stale view, then the fork) a copy of the
registry's database served on the same address."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from copyledger.ledger import merkle, note
from tests.helpers import wait_for
from tests.server import ServerProcess, init_registry, post_works
from tests.test_monitor import Webhook

pytestmark = pytest.mark.slow


def metric(url: str, name: str) -> float:
    """A sample's value, by its exact name (with labels, if any) in the Prometheus text."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"no metric {name}")


def test_a_monitor_serves_its_verified_copy_and_metrics_and_alerts_once(tmp_path: Path) -> None:
    data = tmp_path / "r" / "data"
    vkey, key = init_registry(data)
    registry = ServerProcess(data).start()
    hook = Webhook()
    monitor = fork = None
    try:
        post_works(registry.url, key, 20)
        registry.stop()
        shutil.copytree(tmp_path / "r", tmp_path / "f")  # the operator's second copy, at 20
        registry = ServerProcess(data, port=registry.port).start()
        post_works(registry.url, key, 5, salt="A")
        monitor = ServerProcess(
            tmp_path / "m", command=("monitor", "--log", registry.url, "--trust", vkey,
                                     "--interval", "0.2", "--alert-webhook", hook.url,
                                     "--json"), listen="--serve").start()
        m = monitor.url

        # It serves the log as it verified it: the same checkpoint, tiles and proofs.
        wait_for(lambda: httpx.get(m + "/checkpoint").status_code == 200
                 and httpx.get(m + "/checkpoint").text
                 == httpx.get(registry.url + "/checkpoint").text, "the monitor did not catch up")
        for path in ("tile/0/000.p/25", "tile/entries/000.p/25"):
            got = httpx.get(f"{m}/{path}")
            assert got.status_code == 200 and got.content == httpx.get(
                f"{registry.url}/{path}").content, path
        assert httpx.get(m + "/tile/0/000.p/26").status_code == 404  # past the verified tree
        p = httpx.get(m + "/v1/entries/7/proof").json()
        theirs = httpx.get(registry.url + "/v1/entries/7/proof", params={"tree_size": 25}).json()
        assert (p["tree_size"], p["root"], p["proof"]) == (25, theirs["root"], theirs["proof"])
        n, _ = note.verify_note(p["checkpoint"], [note.parse_verifier_key(vkey)])
        cp = note.parse_checkpoint(n.text)
        merkle.verify_inclusion(7, cp.size, bytes.fromhex(p["leaf_hash"]),
                                [bytes.fromhex(h) for h in p["proof"]], cp.root)
        assert httpx.get(m + "/v1/entries/99/proof").status_code == 422
        assert metric(m, "copyledger_monitor_verified_tree_size") == 25
        assert metric(m, "copyledger_monitor_last_check_timestamp_seconds") > 0
        assert metric(m, 'copyledger_monitor_alerts_total{kind="fork"}') == 0
        assert metric(m, "copyledger_monitor_alerting") == 0
        assert metric(m, "copyledger_monitor_stale_since_timestamp_seconds") == 0
        verified = httpx.get(m + "/checkpoint").text

        # An earlier state of the same tree (the copy at 20) answers at the log's address, as
        # a cache could for a moment: stale, reported, no alert within --rollback-after.
        registry.stop()
        stale = ServerProcess(tmp_path / "f" / "data", port=registry.port).start()
        try:
            wait_for(lambda: metric(m, "copyledger_monitor_stale_since_timestamp_seconds") > 0,
                     "the stale view was not reported")
            assert metric(m, "copyledger_monitor_alerting") == 0
            assert metric(m, 'copyledger_monitor_alerts_total{kind="rollback"}') == 0
            assert metric(m, "copyledger_monitor_verified_tree_size") == 25
        finally:
            stale.stop()

        # The log forks: the copy, given other entries, answers at the same address.
        fork = ServerProcess(tmp_path / "f" / "data").start()
        post_works(fork.url, key, 10, salt="B")  # 30 entries, 20 shared
        fork.stop()
        registry.stop()
        fork = ServerProcess(tmp_path / "f" / "data", port=registry.port).start()
        wait_for(lambda: metric(m, 'copyledger_monitor_alerts_total{kind="fork"}') == 1,
                 "the fork was not counted")
        wait_for(lambda: hook.alerts, "the webhook heard nothing")
        checks = metric(m, "copyledger_monitor_checks_total")
        wait_for(lambda: metric(m, "copyledger_monitor_checks_total") >= checks + 3,
                 "the monitor stopped polling")  # it goes on polling the same bad state ...
        time.sleep(0.5)
        assert len(hook.alerts) == 1  # ... and the webhook heard of it once
        alert = hook.alerts[0]
        assert alert["alert"] == "fork" and alert["log"] == registry.url
        assert alert["first_difference"]["tree_size"] == 21
        assert alert["verified"]["tree_size"] == 25 and alert["served"]["tree_size"] == 30
        assert alert["served"]["root"] == httpx.get(
            fork.url + "/v1/log").json()["root"]
        assert metric(m, 'copyledger_monitor_alerts_total{kind="fork"}') == 1
        assert metric(m, "copyledger_monitor_alerting") == 1
        assert metric(m, "copyledger_monitor_stale_since_timestamp_seconds") == 0  # 30 > 25
        # and it still answers from what it verified, not from the fork
        assert httpx.get(m + "/checkpoint").text == verified
        assert metric(m, "copyledger_monitor_verified_tree_size") == 25
        assert monitor.proc is not None and monitor.proc.poll() is None
    finally:
        hook.close()
        for proc in (monitor, fork, registry):
            if proc is not None:
                proc.stop()
