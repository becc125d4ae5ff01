"""A split view caught end to end, with real processes: one log's database copied and diverging
after entry N, each copy served by its own `copyledger serve`; one `copyledger witness serve`
that both copies send their checkpoints to; a monitor (`copyledger monitor`) and the offline
verifier (`copyledger verify --witness`). The witness cosigns branch A and refuses branch B
with the spec's status; the monitor that saw A reports B's fork at the first differing tree
size with both hashes; a bundle from B fails `verify --quorum 1`, one from A passes. A monitor
that only ever followed B, given W, reports the fork from W's cosigned checkpoint alone (D43)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from copyledger.ledger import note
from tests.helpers import wait_for
from tests.server import ServerProcess, cli, init_registry, post_works
from tests.test_cosign import W
from tests.test_monitor import Webhook, monitor_cli
from tests.test_monitor_serve import metric
from tests.test_witness import body

pytestmark = pytest.mark.slow

N = 5  # entries both branches share


def cosigned_size(url: str) -> int | None:
    r = httpx.get(url + "/v1/log/cosigned-checkpoint", timeout=10)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return note.parse_checkpoint(note.parse_note(r.text).text).size


def log_state(url: str) -> tuple[str, int]:
    signed = httpx.get(url + "/checkpoint", timeout=10).text
    return signed, note.parse_checkpoint(note.parse_note(signed).text).size


def root_at(url: str, size: int) -> str:
    r = httpx.get(url + "/v1/log/consistency", params={"from": size}, timeout=10)
    return str(r.json()["old_root"])


@dataclass
class SplitView:
    """Branch A (cosigned by witness W) and branch B of one log, each served, and W serving."""

    vkey: str  # the log's verifier key (both branches')
    wkey: str  # W's verifier key
    a: ServerProcess
    b: ServerProcess
    witness: ServerProcess
    size_a: int
    size_b: int
    signed_b: str


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SplitView]:
    """One log's database copied and diverging after entry N: A grows by 3 entries and W
    cosigns it, then B by 5 (so B is the larger), each copy sending its checkpoints to W."""
    tmp_path = tmp_path_factory.mktemp("split")
    a_dir, b_dir = tmp_path / "a" / "data", tmp_path / "b" / "data"
    vkey, key = init_registry(a_dir)
    first = ServerProcess(a_dir).start()
    try:
        post_works(first.url, key, N)
    finally:
        first.stop()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the operator's second copy

    wdir = tmp_path / "w" / "data"
    made = cli("witness", "init", "--data-dir", str(wdir), "--name", W, "--log", vkey, "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    wkey = json.loads(made.stdout)["verifier_key"]
    witness = ServerProcess(wdir, command=("witness", "serve")).start()
    asked = {"COPYLEDGER_WITNESSES": f"{witness.url} {wkey}"}
    a = ServerProcess(a_dir, **asked)
    b = ServerProcess(b_dir, **asked)
    try:
        a.start()
        b.start()
        post_works(a.url, key, 3, salt="A")
        _, size_a = log_state(a.url)
        wait_for(lambda: cosigned_size(a.url) == size_a, "branch A was not cosigned")
        post_works(b.url, key, 5, salt="B")
        signed_b, size_b = log_state(b.url)
        assert size_b > size_a > N
        assert root_at(a.url, N) == root_at(b.url, N)
        yield SplitView(vkey, wkey, a, b, witness, size_a, size_b, signed_b)
    finally:
        for p in (a, b, witness):
            p.stop()


def test_a_split_view_is_caught_by_the_witness_the_monitor_and_the_verifier(
        split: SplitView, tmp_path: Path) -> None:
    a, b, witness, vkey, wkey = split.a, split.b, split.witness, split.vkey, split.wkey
    size_a, size_b, signed_b = split.size_a, split.size_b, split.signed_b
    # The witness refuses B, as C2SP tlog-witness says: 409 (with its size) for an old size
    # that is not the last it cosigned, 422 for B's own proof from A's size.
    post = lambda req: httpx.post(witness.url + "/add-checkpoint", content=req,  # noqa: E731
                                  timeout=10)
    stale = post(body(N, [bytes.fromhex(h) for h in httpx.get(
        b.url + "/v1/log/consistency", params={"from": N}).json()["proof"]], signed_b))
    assert stale.status_code == 409 and stale.text.strip() == str(size_a)
    proof_b = [bytes.fromhex(h) for h in httpx.get(
        b.url + "/v1/log/consistency", params={"from": size_a}).json()["proof"]]
    assert post(body(size_a, proof_b, signed_b)).status_code == 422
    # B's own cosigner is refused too: it never gets a cosigned checkpoint past the fork
    found = cosigned_size(b.url)
    assert found is None or found <= N
    assert cosigned_size(a.url) == size_a  # while A stays cosigned

    # The monitor that followed A reports B's fork: first differing size, both hashes.
    mdir = tmp_path / "monitor"
    code, up = monitor_cli(a.url, vkey, mdir)
    assert code == 0 and up["tree_size"] == size_a, up
    code, alert = monitor_cli(b.url, vkey, mdir)
    assert code == 1, alert
    assert alert["alert"] == "fork"
    assert alert["first_difference"] == {"tree_size": N + 1, "ours": root_at(a.url, N + 1),
                                         "theirs": root_at(b.url, N + 1)}
    assert alert["verified"] == {"tree_size": size_a, "root": root_at(a.url, size_a)}
    assert alert["served"] == {"tree_size": size_b, "root": root_at(b.url, size_b)}

    # A bundle of an entry only B has fails `verify --witness --quorum 1`; A's passes.
    only_b, on_a = tmp_path / "b-bundle.json", tmp_path / "a-bundle.json"
    only_b.write_text(httpx.get(f"{b.url}/v1/entries/{size_b - 1}/bundle").text)
    on_a.write_text(httpx.get(f"{a.url}/v1/entries/{size_a - 1}/bundle").text)
    args = ["--trust", vkey, "--witness", wkey, "--quorum", "1", "--json"]
    r = cli("verify", str(only_b), *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert json.loads(r.stdout)["failed_step"] == "witnessed"
    r = cli("verify", str(on_a), *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["facts"]["witnesses"][0]["name"] == W
    # the log's own signature alone does not tell the branches apart
    r = cli("verify", str(only_b), "--trust", vkey, "--json")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_monitor_on_branch_b_sees_the_fork_in_what_the_witness_cosigned(
        split: SplitView, tmp_path: Path) -> None:
    """The monitor follows only B, whose own checkpoints and tiles are all consistent; W's
    cosigned checkpoint, read from W itself (tlog-witness monitor retrieval), is A's tree of
    size_a, which is not B's tree of that size: a split view, with both roots (D43)."""
    a, b, w, vkey, wkey = split.a, split.b, split.witness, split.vkey, split.wkey
    size_a, size_b = split.size_a, split.size_b
    hook = Webhook()
    try:
        code, alert = monitor_cli(b.url, vkey, tmp_path / "on-b", "--witness",
                                  f"{w.url}={wkey}", "--alert-webhook", hook.url)
        assert code == 1, alert
        assert alert["alert"] == "fork" and alert["log"] == b.url
        assert alert["verified"] == {"tree_size": size_b, "root": root_at(b.url, size_b)}
        assert alert["served"] == {"tree_size": size_a, "root": root_at(a.url, size_a)}
        assert alert["witness"]["name"] == W and alert["witness"]["where"] == w.url
        assert alert["witness"]["ours"] == root_at(b.url, size_a) != root_at(a.url, size_a)
        assert hook.alerts == [alert]
    finally:
        hook.close()
    # It had verified B itself: the log's own checks held, only the witness shows the fork.
    code, proof = cli_json("monitor", "bundle", str(size_b - 1), "--data-dir",
                           str(tmp_path / "on-b"))
    assert code == 0 and proof["tree_size"] == size_b

    # A monitor on A, given W (read from W, or only W's key: from A's cosigned checkpoint),
    # finds it consistent; on B, the log's cosigned checkpoint has no line by W past the fork.
    code, up = monitor_cli(a.url, vkey, tmp_path / "on-a", "--witness", f"{w.url}={wkey}",
                           "--witness", wkey)
    assert code == 0, up
    assert [(v["status"], v["tree_size"]) for v in up["witnesses"]] == [
        ("consistent", size_a), ("consistent", size_a)]
    assert up["witnesses"][1]["where"] == a.url
    # The same witness required to have cosigned within the last second (D133): A is idle,
    # its witness's newest cosignature is older (refreshed every 300 s), so it is `old`, which
    # is a status, not an alert.
    time.sleep(1.1)
    code, up = monitor_cli(a.url, vkey, tmp_path / "on-a", "--witness", f"{w.url}={wkey}",
                           "--witness-max-age", "1")
    assert code == 0 and up["witnesses"][0]["status"] == "old", up
    assert "more than 1 s" in up["witnesses"][0]["detail"]
    code, up = monitor_cli(b.url, vkey, tmp_path / "on-b-log", "--witness", wkey)
    assert code == 0 and up["witnesses"][0]["status"] in ("none", "consistent"), up
    assert (up["witnesses"][0]["tree_size"] or 0) <= N


def cli_json(*args: str) -> tuple[int, Any]:
    r = cli(*args)
    return r.returncode, json.loads(r.stdout) if r.returncode == 0 else r.stderr


def test_a_serving_monitor_counts_the_witness_fork_and_posts_it_once(
        split: SplitView, tmp_path: Path) -> None:
    hook = Webhook()
    monitor = ServerProcess(tmp_path / "m", command=(
        "monitor", "--log", split.b.url, "--trust", split.vkey, "--interval", "0.2",
        "--witness", f"{split.witness.url}={split.wkey}", "--alert-webhook", hook.url,
        "--json"), listen="--serve")
    try:
        m = monitor.start().url
        wait_for(lambda: metric(m, 'copyledger_monitor_alerts_total{kind="fork"}') == 1,
                 "the witness's fork was not counted")
        checks = metric(m, "copyledger_monitor_checks_total")
        wait_for(lambda: metric(m, "copyledger_monitor_checks_total") >= checks + 3,
                 "the monitor stopped polling")
        assert len(hook.alerts) == 1 and hook.alerts[0]["witness"]["name"] == W
        assert metric(m, 'copyledger_monitor_alerts_total{kind="fork"}') == 1
        assert metric(m, "copyledger_monitor_alerting") == 1
        assert metric(m, f'copyledger_monitor_witness_status{{status="fork",witness="{W}"}}') \
            == 1
        assert metric(m, f'copyledger_monitor_witness_status{{status="consistent",witness="{W}"}}'
                      ) == 0
        # it verified B's own tree and serves it: the fork is in what W cosigned, not in B
        assert metric(m, "copyledger_monitor_verified_tree_size") == split.size_b
    finally:
        hook.close()
        monitor.stop()
