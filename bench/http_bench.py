"""Registrations per second through POST /v1/works: `serve` (one uvicorn worker, or
`--workers N` processes, D48) on the embedded SQLite default, 50 concurrent connections from wrk
(a C load generator, so the client is not the bottleneck), p50/p99 latency. Prints one JSON
object. With `--compare-noop` it also runs a no-op FastAPI endpoint (`bench/noop_app.py`) on
ONE uvicorn worker under the same wrk load in the same run, and prints both and the ratio.

    python bench/http_bench.py [--seconds 20] [--connections 50] [--database URL]
                               [--workers N] [--compare-noop] [--profile DIR]
                               [--linger-ms MS]

Beside throughput and latency it prints what the measured run cost, exactly rather than
sampled (D86): CPU µs a registration by process and by thread (from /proc), each process's
cores used, connections and requests, and the seal's wall ms a block by phase and event-loop
wake-ups a block (the sequencer's counters, read from each process's /metrics).
`--linger-ms` sets the sequencer's linger (COPYLEDGER_LINGER_MS) for the run.

`--profile DIR` samples every serving process with py-spy during the measured run and writes
its raw stacks to DIR/<leader|follower>-<pid>.txt (the leader holds the sequencer lock), with
the heaviest functions of each in the JSON (D59).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.peers import one_worker
from tests.server import ServerProcess, cli

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--database", default="")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--compare-noop", action="store_true")
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--linger-ms", type=float, default=None)
    args = ap.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("http_bench: needs wrk (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-bench-"))
    data = tmp / "data"
    db = ["--database", args.database] if args.database else []
    cli("init", "--data-dir", str(data), *db)
    key = json.loads(cli("keys", "create", "--role", "creator", "--account", "bench",
                         "--data-dir", str(data), *db, "--json").stdout)["key"]
    # The per-key write quota (5,000/s by default, a policy, not a capacity) is lifted: one
    # key sends every request here, and a 429 is no registration (session 12: one worker
    # passed 5,000/s and 2,409 of a run's requests were refused).
    srv = ServerProcess(data, args.database, COPYLEDGER_LOG_LEVEL="warning",
                        COPYLEDGER_WORKERS=str(args.workers),
                        COPYLEDGER_WRITE_RATE_PER_S=str(BENCH_WRITE_RATE),
                        COPYLEDGER_WRITE_BURST=str(BENCH_WRITE_RATE))
    if args.linger_ms is not None:
        srv.env["COPYLEDGER_LINGER_MS"] = str(args.linger_ms)
    try:
        srv.start(timeout=300)
        settle(list(serving(srv, data)))
        before = httpx.get(srv.url + "/v1/log").json()
        # warm-up, then the measured run
        subprocess.run([wrk, "-t1", "-c", str(args.connections), "-d", "3s", "-s",
                        str(HERE / "wrk_register.lua"), srv.url, "--", key, "1"],
                       capture_output=True, check=True)
        mid = httpx.get(srv.url + "/v1/log").json()
        spies = profile(srv, data, args.profile, args.seconds) if args.profile else []
        roles = serving(srv, data)
        cpu0 = {pid: cpu_s(pid) for pid in roles}
        threads0 = {pid: thread_cpu(pid) for pid in roles}
        counters0 = counters(srv.url, len(roles))
        t0 = time.monotonic()
        run = subprocess.Popen([wrk, "-t1", "-c", str(args.connections), "-d",
                                f"{args.seconds}s", "--timeout", "10s", "-s",
                                str(HERE / "wrk_register.lua"), srv.url, "--", key, "2"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(min(2.0, args.seconds / 2))
        split = connections(roles, srv.url)
        stdout, _ = run.communicate()
        if run.returncode:
            raise subprocess.CalledProcessError(run.returncode, run.args, stdout)
        wall = time.monotonic() - t0
        cpu1 = {pid: cpu_s(pid) for pid in roles}
        threads1 = {pid: thread_cpu(pid) for pid in roles}
        counters1 = counters(srv.url, len(roles))
        names = {pid: thread_names(pid) for pid in roles}
        restarted = set(serving(srv, data)) != set(roles)  # a process replaced meanwhile
        for _, spy in spies:
            spy.wait(60)
        after = httpx.get(srv.url + "/v1/log").json()
    finally:
        srv.stop()
    line = [ln for ln in stdout.splitlines() if ln.startswith("{")][-1]
    res = json.loads(line)
    registered = res["requests"] - res["errors"]["status"]  # 2xx only: a 429 or 503 wrote none
    entries = after["tree_size"] - mid["tree_size"]
    blocks = after["block_height"] - mid["block_height"]
    audit = json.loads(cli("audit", "--data-dir", str(data), *db, "--json").stdout)
    out: dict[str, object] = {
        "benchmark": f"POST /v1/works, serve --workers {args.workers}",
        "load_average": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "database": "postgresql" if args.database else "sqlite (WAL, synchronous=FULL)",
        "connections": args.connections,
        "seconds": res["duration_s"],
        "registrations": registered,
        "registrations_per_s": round(registered / res["duration_s"], 1),
        "write_quota_per_key_per_s": BENCH_WRITE_RATE,
        "latency_ms": {k[:-3]: res[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "errors": res["errors"],
        "entries_sealed": entries,
        "blocks_sealed": blocks,
        "mean_entries_per_block": round(entries / blocks, 1) if blocks else None,
        "audit_after": {"ok": audit["ok"], "entries": audit["entries"]},
        "warmup_entries": mid["tree_size"] - before["tree_size"],
        # A process the supervisor replaced during the run took its CPU figure with it.
        "cpu_us_per_registration": None if restarted else cpu_per(roles, cpu0, cpu1,
                                                                  res["requests"]),
        "connections_by_process": split,
        "cores_used": {role: round(v, 2) for role, v in _by_role(
            roles, {pid: (cpu1[pid] - cpu0[pid]) / wall for pid in roles}).items()},
        "cpu_us_per_registration_by_thread": _threads_by_role(roles, {
            pid: by_thread(threads0[pid], threads1[pid], names[pid], res["requests"])
            for pid in roles}),
        "per_block": per_block(counters0, counters1, blocks, len(roles)),
        "wall_s": round(wall, 2),
        "targets": {"registrations_per_s": ">= 3000", "p99_ms": "< 250"},
    }
    if spies:
        out["profile"] = {str(path): heaviest(path) for path, _ in spies}
    if args.compare_noop:
        noop = noop_run(wrk, args.seconds, args.connections, key)
        out["noop_one_worker"] = noop
        out["ratio_to_noop"] = round(float(out["registrations_per_s"])  # type: ignore[arg-type]
                                     / noop["requests_per_s"], 3)
        out["load_average_after"] = os.getloadavg()
        out["targets"] = {"ratio_to_noop": ">= 0.8", "p99_ms": "< 250"}
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))


def serving(srv: ServerProcess, data: Path) -> dict[int, str]:
    """Each process serving, by pid: "leader" (holds the sequencer lock) or "follower"; with
    one worker the server's own process (uvicorn runs no supervisor then)."""
    assert srv.proc is not None
    kids = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True,
                          text=True).stdout.split()
    if not kids:
        return {srv.proc.pid: "leader"}
    leader = int((data / "sequencer.pid").read_text()) if (data / "sequencer.pid").exists() else 0
    return {pid: "leader" if pid == leader else "follower" for pid in map(int, kids)}


def cpu_s(pid: int) -> float:
    """The CPU seconds (user + system) process `pid` has used so far, its threads included
    (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _by_role(roles: dict[int, str], per_pid: dict[int, float]) -> dict[str, float]:
    """Each role's sum over its processes (the followers of --workers 3 and more together)."""
    out: dict[str, float] = {}
    for pid, role in roles.items():
        out[role] = out.get(role, 0.0) + per_pid[pid]
    return out


def _threads_by_role(roles: dict[int, str], per_pid: dict[int, dict[str, float]]
                     ) -> dict[str, dict[str, float]]:
    """`by_thread`'s figures summed by role and thread name over the role's processes."""
    out: dict[str, dict[str, float]] = {}
    for pid, role in roles.items():
        into = out.setdefault(role, {})
        for name, v in per_pid[pid].items():
            into[name] = round(into.get(name, 0.0) + v, 1)
    return out


def connections(roles: dict[int, str], url: str) -> dict[str, int]:
    """How many of the load's keep-alive connections each process holds (wrk keeps the split
    made when it connected): the TCP sockets to the server's port in each one's fds."""
    port = url.rsplit(":", 1)[1]
    listing = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True).stdout
    out: dict[str, int] = {}
    for pid, role in roles.items():
        out[role] = out.get(role, 0) + listing.count(f"pid={pid},")
    return out


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds each thread of `pid` has used so far, by native thread id: exact, where
    sampling only estimates (D86)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python's name for each thread of `pid`, by native id, from py-spy's dump (CPython does
    not name its threads for the kernel)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    dump = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"],
                          capture_output=True, text=True).stdout
    found = re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.MULTILINE)
    return {int(tid): name for tid, name in found}


def by_thread(before: dict[int, float], after: dict[int, float], names: dict[int, str],
              requests: int) -> dict[str, float]:
    """CPU microseconds a registration by thread name (threads of one name summed; a thread
    Python does not know, such as SQLite's or a C library's, as "native")."""
    out: dict[str, float] = {}
    for tid, end in after.items():
        name = names.get(tid, "native")
        out[name] = out.get(name, 0.0) + (end - before.get(tid, 0.0)) * 1e6 / max(requests, 1)
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def counters(url: str, processes: int, tries: int = 400) -> dict[str, dict[str, float]]:
    """Each process's sealing and wake-up counters from /metrics, by role: a new connection
    each scrape, so the processes sharing the socket all answer in time (two roles at most)."""
    out: dict[str, dict[str, float]] = {}
    want = min(processes, 2)
    for _ in range(tries):
        if len(out) >= want:
            break
        got: dict[str, float] = {}
        for ln in httpx.get(url + "/metrics").text.splitlines():
            m = re.match(r'copyledger_(sequencing|answer_wakeups|seal_seconds)'
                         r'(?:\{phase="(\w+)"\})? (\S+)$', ln)
            if m:
                got[m[2] or m[1]] = float(m[3])
            elif ln.startswith('copyledger_http_requests_total{method="POST"'):
                got["posts"] = got.get("posts", 0.0) + float(ln.rsplit(" ", 1)[1])
        if not got:  # a server without these counters
            return {}
        out.setdefault("leader" if got.get("sequencing") else "follower", got)
    return out


def per_block(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
              blocks: int, processes: int = 2) -> dict[str, object]:
    """Wall milliseconds a block by sealing phase (the leader's), and event-loop wake-ups a
    block and requests served in each process. With more than one follower the scrape reaches
    one of them by chance, so only the leader's wake-ups and requests are given."""
    if not blocks or "leader" not in before or "leader" not in after:
        return {}
    lead0, lead1 = before["leader"], after["leader"]
    phases = [k for k in lead1 if k not in ("sequencing", "answer_wakeups", "posts")]
    ms = {k: round((lead1[k] - lead0.get(k, 0.0)) * 1e3 / blocks, 3) for k in phases}
    ms["total"] = round(sum(ms.values()), 3)
    wakeups = {role: round((after[role]["answer_wakeups"] - before[role]["answer_wakeups"])
                           / blocks, 2) for role in after if role in before}
    posts = {role: after[role].get("posts", 0.0) - before[role].get("posts", 0.0)
             for role in after if role in before}
    if processes > 2:
        wakeups = {k: v for k, v in wakeups.items() if k == "leader"}
        posts = {k: v for k, v in posts.items() if k == "leader"}
    return {"seal_wall_ms": ms, "wakeups": wakeups, "requests_served": posts}


def settle(pids: list[int], idle: float = 0.05, timeout: float = 300.0) -> None:
    """Wait until every process's start-up work is done (on a loaded machine the fingerprint
    index's build, SciPy's imports among it, runs for many seconds in the background): each
    used under `idle` CPU seconds in the last second. Otherwise the measured run's CPU per
    registration includes it."""
    deadline = time.monotonic() + timeout
    last = {pid: cpu_s(pid) for pid in pids}
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = {pid: cpu_s(pid) for pid in pids}
        if all(now[p] - last[p] < idle for p in pids):
            return
        last = now


def cpu_per(roles: dict[int, str], before: dict[int, float], after: dict[int, float],
            requests: int) -> dict[str, float]:
    """CPU microseconds per request, by role and in all: the figure a loaded machine does not
    change much, unlike throughput."""
    out = _by_role(roles, {pid: (after[pid] - before[pid]) * 1e6 / max(requests, 1)
                           for pid in roles})
    out["total"] = sum(out.values())
    return {k: round(v, 1) for k, v in out.items()}


BENCH_WRITE_RATE = 1_000_000
"""The server's per-key write quota in this benchmark: above anything it can serve."""


def profile(srv: ServerProcess, data: Path, into: Path,
            seconds: int) -> list[tuple[Path, subprocess.Popen[bytes]]]:
    """py-spy on each process serving (the supervisor's children) for the measured run."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for pid, role in serving(srv, data).items():
        path = into / f"{role}-{pid}.txt"
        out.append((path, subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
             "--format", "raw", "--threads", "--nonblocking", "-o", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return out


def heaviest(path: Path, top: int = 12) -> dict[str, object]:
    """Share of samples per thread, and the functions most samples were in (inclusive)."""
    threads: dict[str, int] = {}
    funcs: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        threads[frames[0]] = threads.get(frames[0], 0) + int(n)
        for f in set(frames[1:]):
            if "copyledger/" in f:
                funcs[f] = funcs.get(f, 0) + int(n)
    share = {k: round(v / total, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])}
    return {"samples": total, "threads": share,
            "copyledger_functions": {k: round(v / total, 3) for k, v in
                                     sorted(funcs.items(), key=lambda kv: -kv[1])[:top]}}


def noop_run(wrk: str, seconds: int, connections: int, key: str) -> dict[str, Any]:
    """The yardstick: `bench/noop_app.py` on one uvicorn worker, the same wrk script."""
    with one_worker("bench.noop_app:app", "/docs") as (url, proc):
        subprocess.run([wrk, "-t1", "-c", str(connections), "-d", "3s", "-s",
                        str(HERE / "wrk_register.lua"), url, "--", key],
                       capture_output=True, check=True)
        cpu0 = cpu_s(proc.pid)
        r = subprocess.run([wrk, "-t1", "-c", str(connections), "-d", f"{seconds}s",
                            "--timeout", "10s", "-s", str(HERE / "wrk_register.lua"), url,
                            "--", key], capture_output=True, text=True, check=True)
        cpu1 = cpu_s(proc.pid)
    res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    return {"requests_per_s": round(res["requests"] / res["duration_s"], 1),
            "latency_ms": {k[:-3]: res[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
            "errors": res["errors"],
            "cpu_us_per_request": round((cpu1 - cpu0) * 1e6 / max(res["requests"], 1), 1)}


if __name__ == "__main__":
    main()
