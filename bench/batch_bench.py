"""Batch registration over HTTP: entries per second through `POST /v1/works/batch` on a real
`copyledger serve` (SQLite unless --database), every receipt verified by the client
(`Client.register_works`: entry hash, inclusion proof, checkpoint signature).

Prints one JSON object: entries/s end to end (request + verification), the server's rate
(`server_entries_per_s`: entries over the wall time with at least one request out; before
session 11 it divided by the clients' summed waits over their number, which overstated it
whenever two clients' requests overlapped) and the client's verification share, per-batch
p50/p99, and the CPU time (user + system) of the server process and of the client an entry:
the figure that holds on a shared, loaded machine, where wall-clock rates mostly measure the
neighbours.

Sustained: the client sends the next batch while it verifies the answer to the one before
(one batch ahead), so the server and the verifying client each use a core; `entries_per_s`
is entries with every receipt verified over the wall time of the whole run.

Clients (D88): `--clients N` runs N clients, each in a process of its own (its own GIL), started
together at a barrier; `entries_per_s` is all their entries over the common wall time (the
first client's start to the last one's end), and the client CPU is the sum of the processes'.
`--serial`: each client sends a batch and verifies its answer before sending the next, with no
sender thread to share its GIL with; two such clients keep a request out while the other
verifies. `--threads`: the clients as threads of this process, as before D88. Where the cores
idle: `cores_used` is server + clients (+ PostgreSQL) CPU over the wall time;
`request_out_share` the share of the wall time with a request out (else the server has nothing
to do); `server_queued_share` and `client_queued_share` the thread-seconds a second their threads
were runnable but waited for a core held by other work on the machine (Linux schedstat; can
pass 1 with several threads; the server's misses threads that ended during the run).

Warm-up: `--warmup` batches (2 unless told) are sent and verified before any clock or CPU
counter starts, so the server's first requests (lazy imports, the matching index built at
start) are not counted in its CPU an entry (D82); they were 10-20 µs an entry of a 20-batch run.
Each client also makes all its works (hashes, titles) before the clocks start, since session
45: until then their making, about 3-4 µs an entry, was counted in the client's CPU.

Sustained means long: `--batches 30` with two clients (60,000 entries) is a burst, and on
SQLite the rate falls as the log grows (each entry dirties a random page in each of the two
content-hash indexes; operations §17, D96). `entries_per_s_by_tenth` gives the rate in each
tenth of the run; the issue's figure is taken over 600,000 entries (`--batches 300`).

The floor (`--compare-floor`, D102): the clients keep every answer they were given (its bytes,
in memory: ~1.4 GB at 600,000 entries, written to files once every client has stopped), then
the same clients send the same batches to `bench/batch_floor_app.py` on one uvicorn worker: a
FastAPI endpoint that validates the batch with a pydantic model, registers nothing and sends
back the registry's recorded answer, which the clients verify exactly as before. Its rate,
CPU and cores are printed under `floor` (PostgreSQL's CPU too: it is up but idle), and
`ratio_to_floor` is the registry's entries/s over the floor's: what the HTTP exchange, the
JSON and the verification of every receipt leave for the registry on this machine, in the
same run.

Usage: python bench/batch_bench.py [--batches 20] [--size 1000] [--clients 1] [--warmup 2]
       [--serial] [--threads] [--database URL | --postgres] [--compare-floor]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import multiprocessing
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.peers import one_worker
from copyledger.client import BatchWork, Client, Receipt
from copyledger.client import _calls as calls
from tests.server import ServerProcess, init_with_creator

READY_TIMEOUT_S = 300.0  # the clients' connecting and the log's key, at most


def works(client_no: int, batch_no: int, size: int) -> list[BatchWork]:
    return [BatchWork(sha256=hashlib.sha256(f"{client_no}/{batch_no}/{i}".encode()).hexdigest(),
                      title=f"Work {i}", creators=["Bench"], work_type="image")
            for i in range(size)]


def run_client(url: str, key: str, no: int, batches: int, size: int,
               serial: bool = False, ready: Any = None, record: bool = False
               ) -> dict[str, Any]:
    """One client's batches, every receipt verified. Sustained (the default): a sender thread
    keeps the next batch in flight while this thread verifies every receipt of the answer
    before it (one batch ahead at most: the server is never sent more than the client checks).
    `serial`: one thread sends a batch, verifies its answer, then sends the next (no second
    thread to share this process's GIL with; run several such clients as processes to keep
    the server busy). `ready`: a barrier every client and the bench wait at once connected,
    so the clocks start together. `record`: the result also holds every answer's body, by
    its first work's hash (`answers`), for the floor (`batch_floor_app.py`) to send again;
    they are written once every client has stopped."""
    waits: list[float] = []
    verifies: list[float] = []
    spans: list[tuple[float, float]] = []  # (sent, answered): when this client had a request out
    send_cpu: list[float] = []  # the sender's CPU: building requests, HTTP (decoding: D101)
    idle = [0.0]  # the verifying thread waiting for an answer
    sender_queued: list[float] = []  # the sender thread's wait for a core
    entries = 0
    kept: list[tuple[int, bytes]] = []  # (batch, answer body) with `record`: references
    answers: queue.Queue[tuple[Any, Any] | BaseException] = queue.Queue(maxsize=1)
    with Client(url, api_key=key, timeout=300) as c:
        # The log's key and this key's account (D93: every entry must name it), fetched once.
        c._account = calls.learn_account(c._send(calls.whoami()))
        trust = c._with_account(c._trusted())

        # The catalogue, made before the clocks start (as wrk's bodies are): the registry
        # and the client library are measured, not this script's making of hashes and titles
        # (about 3-4 µs an entry of the client's CPU until session 45).
        catalogue = [works(no, b, size) for b in range(batches)]
        gc.freeze()  # (its ~2 containers a work kept out of the timed window's collections)

        def exchange(b: int) -> tuple[Any, Any]:
            batch, catalogue[b] = catalogue[b], []  # (the call keeps what it needs)
            call = calls.register_works(batch)
            t0 = time.perf_counter()
            answer = c._exchange(call)  # the HTTP exchange alone: status and body
            t1 = time.perf_counter()
            if record:
                kept.append((b, answer[1]))
            waits.append(t1 - t0)
            spans.append((t0, t1))
            return call, answer

        def send() -> None:
            cpu0, queued0 = time.thread_time(), _thread_queued()
            try:
                for b in range(batches):
                    answers.put(exchange(b))
            except BaseException as e:  # handed to the verifying thread, which raises it
                answers.put(e)
            send_cpu.append(time.thread_time() - cpu0)
            sender_queued.append(_thread_queued() - queued0)

        def check(b: int, call: Any, answer: Any) -> int:
            t1 = time.perf_counter()
            results = call.complete(*answer, trust)  # decoded, every receipt verified
            verifies.append(time.perf_counter() - t1)
            if not all(isinstance(r, Receipt) and not r.already_registered for r in results):
                raise SystemExit(f"batch {b}: not every item registered: {results[:3]}")
            return len(results)

        if ready is not None:
            ready.wait(READY_TIMEOUT_S)
        start, cpu_start, queued = time.perf_counter(), time.process_time(), _thread_queued()
        if serial:
            verify_cpu = 0.0
            for b in range(batches):
                cpu0 = time.thread_time()
                call, answer = exchange(b)
                cpu1 = time.thread_time()
                entries += check(b, call, answer)
                send_cpu.append(cpu1 - cpu0)
                verify_cpu += time.thread_time() - cpu1
        else:
            sender = threading.Thread(target=send)
            sender.start()
            verify_cpu0 = time.thread_time()
            for b in range(batches):
                t = time.perf_counter()
                got = answers.get()
                idle[0] += time.perf_counter() - t
                if isinstance(got, BaseException):
                    raise got
                entries += check(b, *got)
            verify_cpu = time.thread_time() - verify_cpu0
            sender.join()
        end, cpu = time.perf_counter(), time.process_time() - cpu_start
        queued = _thread_queued() - queued + sum(sender_queued)  # this thread's and the sender's
    return {"queued": queued, "waits": waits, "verifies": verifies, "entries": entries,
            "spans": spans, "send_cpu": sum(send_cpu), "verify_cpu": verify_cpu, "idle": idle[0],
            "cpu": cpu, "start": start, "end": end,
            "answers": [(works(no, b, 1)[0]["sha256"], body) for b, body in kept]}


def _in_process(conn: Any, ready: Any, record: bool, url: str, key: str, no: int,
                batches: int, size: int, serial: bool) -> None:
    """`run_client` in a client process of its own: its result (or failure) sent back. A
    client that fails before the start breaks the barrier, so nobody waits for it."""
    try:
        conn.send(run_client(url, key, no, batches, size, serial, ready, record))
    except BaseException as e:
        ready.abort()
        conn.send(RuntimeError(f"client {no}: {e!r}"))
        raise


def _busy(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] with at least one request out (the server's work or queue)."""
    busy, reach = 0.0, start
    for s, e in sorted(spans):
        s, e = max(s, reach), min(e, end)
        if e > s:
            busy += e - s
            reach = e
    return busy


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _queued(root: int) -> dict[str, float]:
    """Seconds each thread of the process (and of its descendants: `serve --workers N`) has
    spent runnable but waiting for a core (Linux schedstat): the time the machine's other work
    took from it, not its own idling."""
    waits: dict[str, float] = {}
    for stat in (t for pid in _tree(root) for t in Path(f"/proc/{pid}/task").glob("*/schedstat")):
        try:
            waits[stat.parent.name] = int(stat.read_text().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return waits


def _queued_since(pid: int, before: dict[str, float]) -> float:
    """Thread-seconds the process waited for a core since `before` (`_queued`): threads that
    ended meanwhile are not counted (a lower bound); threads started since count whole."""
    return sum(w - before.get(tid, 0.0) for tid, w in _queued(pid).items())


def _thread_queued() -> float:
    """`_queued` of the calling thread alone: a client's threads are counted each by itself,
    since a thread that has ended is no longer listed (its wait would be lost)."""
    return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it (Linux /proc), as now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _tree_cpu(root: int) -> float:
    """CPU seconds of `root` and its descendants: `serve --workers N`'s supervisor and its
    API processes, or a PostgreSQL cluster's postmaster and its children."""
    total = 0.0
    for pid in _tree(root):
        try:
            total += _cpu(pid)
        except OSError:
            continue  # ended meanwhile
    return total


def _cluster_cpu(datadir: Path | None) -> float:
    """CPU seconds of a PostgreSQL cluster's processes (the postmaster and its children)."""
    if datadir is None:
        return 0.0
    return _tree_cpu(int((datadir / "postmaster.pid").read_text().split()[0]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20, help="batches per client")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=1,
                    help="clients, each in a process of its own (D88), started together")
    ap.add_argument("--threads", action="store_true",
                    help="the clients as threads of this process instead (as before D88)")
    ap.add_argument("--serial", action="store_true",
                    help="each client sends a batch and verifies it before the next (no "
                         "sender thread); with --clients 2 or more the server stays busy")
    ap.add_argument("--warmup", type=int, default=2, help="batches sent before measuring")
    ap.add_argument("--workers", type=int, default=1,
                    help="API processes of the server (`serve --workers N`); its CPU is theirs "
                         "and the supervisor's")
    ap.add_argument("--compare-floor", action="store_true",
                    help="then run the same clients against bench/batch_floor_app.py, which "
                         "answers each batch with the registry's recorded answer, and print "
                         "both and the ratio")
    ap.add_argument("--database", default="")
    ap.add_argument("--postgres", action="store_true",
                    help="run on a throw-away PostgreSQL cluster started here (its CPU counted)")
    ap.add_argument("--pg-set", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of that cluster (repeatable), e.g. shared_buffers=4GB")
    args = ap.parse_args()
    pg = None
    if args.postgres:
        from tests.conftest import PostgresServer

        pg = PostgresServer(settings=dict(kv.split("=", 1) for kv in args.pg_set))
        args.database = pg.new_database()
    try:
        run(args, pg.datadir if pg else None)
    finally:
        if pg is not None:
            pg.stop()


def _by_tenth(answered: list[float], start: float, end: float, size: int) -> list[int]:
    """Entries a second answered in each tenth of the run's wall time (each batch counted
    whole when its answer came)."""
    tenth = (end - start) / 10 or 1.0
    counts = [0] * 10
    for t in answered:
        counts[min(9, max(0, int((t - start) / tenth)))] += size
    return [round(c / tenth) for c in counts]


def run(args: argparse.Namespace, datadir: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        record = Path(tmp) / "answers" if args.compare_floor else None
        _, key, url = init_with_creator(data, args.database or "sqlite")
        srv = ServerProcess(data, url, COPYLEDGER_LOG_LEVEL="warning",
                            COPYLEDGER_WORKERS=str(args.workers)).start()
        try:
            assert srv.proc is not None
            warm = []
            if args.warmup:  # its own hashes (client 10,000), not counted
                warm = [run_client(srv.url, key, 10_000, args.warmup, args.size,
                                   record=record is not None)]
            out, server_cpu, client_cpu, db_cpu = _clients(args, srv.url, key, srv.proc.pid,
                                                           datadir, record is not None)
            if record is not None:  # every clock stopped: what the floor will send again
                record.mkdir()
                for name in ("log", "whoami"):  # what the clients ask first
                    got = httpx.get(f"{srv.url}/v1/{name}", timeout=60,
                                    headers={"Authorization": f"Bearer {key}"})
                    got.raise_for_status()
                    (record / f"{name}.json").write_bytes(got.content)
                for sha, body in (a for o in warm + out for a in o["answers"]):
                    (record / f"{sha}.json").write_bytes(body)
        finally:
            srv.stop()
        for o in out:
            o["answers"] = None  # (up to ~1.4 GB of answers at 600,000 entries)
        result = {"engine": "postgresql" if args.database else "sqlite",
                  "pg_settings": args.pg_set,
                  **_summary(args, out, server_cpu, client_cpu, db_cpu, datadir)}
        if record is not None:
            result["floor"] = floor_run(args, key, record, datadir)
            result["ratio_to_floor"] = round(result["entries_per_s"]
                                             / result["floor"]["entries_per_s"], 3)
    print(json.dumps(result, indent=2))


def floor_run(args: argparse.Namespace, key: str, record: Path, datadir: Path | None
              ) -> dict[str, Any]:
    """The same clients, batches and checks against `batch_floor_app.py` on one uvicorn
    worker, which answers each batch with the registry's recorded answer: the rate of the
    HTTP exchange, the JSON and the verification alone, on this machine, in this run.
    PostgreSQL, if any, is still up but idle: its CPU is counted, to show it."""
    with one_worker("bench.batch_floor_app:app", "/v1/log",
                    {"COPYLEDGER_FLOOR_ANSWERS": str(record)}) as (url, proc):
        if args.warmup:
            run_client(url, key, 10_000, args.warmup, args.size)
        out, server_cpu, client_cpu, db_cpu = _clients(args, url, key, proc.pid, datadir)
    full = _summary(args, out, server_cpu, client_cpu, db_cpu, datadir)
    return {k: full[k] for k in (*(("postgresql_cpu_us_per_entry",) if datadir else ()),
        "entries", "wall_s", "entries_per_s", "batch_p50_ms", "batch_p99_ms",
        "server_cpu_us_per_entry", "client_cpu_us_per_entry", "client_send_cpu_us_per_entry",
        "client_verify_cpu_us_per_entry", "cores_used", "server_cores", "client_cores",
        "request_out_share", "server_queued_share", "client_queued_share")}


def _summary(args: argparse.Namespace, out: list[dict[str, Any]], server_cpu: float,
             client_cpu: float, db_cpu: float, datadir: Path | None) -> dict[str, Any]:
    """The figures of one run of the clients (`_clients`)."""
    entries = sum(o["entries"] for o in out)
    start, end = min(o["start"] for o in out), max(o["end"] for o in out)
    wall = end - start  # the common wall time: the first client's start to the last's end
    waits = sorted(w for o in out for w in o["waits"])
    verifies = [v for o in out for v in o["verifies"]]
    # the time at least one request was out: a sum of the clients' waits would count the
    # seconds two requests overlap twice and overstate the server's rate
    busy = _busy([s for o in out for s in o["spans"]], start, end)
    return {
        "clients": args.clients, "server_workers": args.workers, "batch_size": args.size,
        "entries": entries,
        "warmup_batches": args.warmup,
        "wall_s": round(wall, 3),
        "entries_per_s": round(entries / wall),
        "server_entries_per_s": round(entries / busy),
        # Whether the rate holds as the log grows (SQLite's falls: operations §17, D96).
        "entries_per_s_by_tenth": _by_tenth([s[1] for o in out for s in o["spans"]], start,
                                            end, args.size),
        "verify_ms_per_batch": round(1000 * statistics.mean(verifies), 1),
        "batch_p50_ms": round(1000 * waits[len(waits) // 2], 1),
        "batch_p99_ms": round(1000 * waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1),
        "server_cpu_us_per_entry": round(1e6 * server_cpu / entries, 1),
        "client_cpu_us_per_entry": round(1e6 * client_cpu / entries, 1),
        # the client's two threads: building, sending and reading requests; verifying answers
        "client_send_cpu_us_per_entry": round(
            1e6 * sum(o["send_cpu"] for o in out) / entries, 1),
        "client_verify_cpu_us_per_entry": round(
            1e6 * sum(o["verify_cpu"] for o in out) / entries, 1),
        **({"postgresql_cpu_us_per_entry": round(1e6 * db_cpu / entries, 1)}
           if datadir else {}),
        "every_receipt_verified": True,
        # where the cores idle (D88): how the clients ran, the CPU of the server, the clients
        # (and PostgreSQL) over the wall time, the share of the wall time with a request out
        # (else the server waits for one), and the verifying threads' wait for answers
        "client_processes": 0 if args.threads else args.clients,
        "client_mode": "serial" if args.serial else "sender thread + verifier",
        "cores_used": round((server_cpu + client_cpu + db_cpu) / wall, 2),
        "server_cores": round(server_cpu / wall, 2),
        "client_cores": round(client_cpu / wall, 2),
        "request_out_share": round(busy / wall, 3),
        # waiting for a core the machine's other work held (schedstat), a share of the wall
        "server_queued_share": round(out[0]["server_queued"] / wall, 3),
        "client_queued_share": round(sum(o["queued"] for o in out) / wall, 3),
        "verifier_idle_share": round(sum(o["idle"] for o in out) / (wall * args.clients), 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "cpus": platform.machine(),
    }


def _clients(args: argparse.Namespace, url: str, key: str, server: int,
             datadir: Path | None, record: bool = False
             ) -> tuple[list[dict[str, Any]], float, float, float]:
    """Run the clients, started together: each in a process of its own (else as threads of
    this one, `--threads`, as before D88). (their results, the server's, the clients' and
    PostgreSQL's CPU seconds over the run). `record`: as `run_client`'s."""
    n = args.clients
    common = (url, key)
    if args.threads:
        ready = threading.Barrier(n + 1)
        results: dict[int, dict[str, Any]] = {}

        failures: list[BaseException] = []

        def one(no: int) -> None:
            try:
                results[no] = run_client(*common, no, args.batches, args.size, args.serial,
                                         ready, record)
            except BaseException as e:
                failures.append(e)
                ready.abort()  # the bench and the other clients stop waiting for this one

        threads = [threading.Thread(target=one, args=(no,)) for no in range(n)]
        for t in threads:
            t.start()
        try:
            ready.wait(READY_TIMEOUT_S)
        except threading.BrokenBarrierError:
            for t in threads:
                t.join(READY_TIMEOUT_S)
            raise (failures or [RuntimeError("a client did not start")])[0] from None
        server0, client0, db0 = _tree_cpu(server), time.process_time(), _cluster_cpu(datadir)
        queued0 = _queued(server)
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        client_cpu = time.process_time() - client0
        out = [results[no] for no in range(n)]
    else:
        ctx = multiprocessing.get_context("fork")
        ready = ctx.Barrier(n + 1)
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        procs = [ctx.Process(target=_in_process, args=(w, ready, record, *common, no,
                                                       args.batches, args.size, args.serial))
                 for no, (_, w) in enumerate(pipes)]
        for p in procs:
            p.start()
        try:
            ready.wait(READY_TIMEOUT_S)
        except threading.BrokenBarrierError:  # a client failed: say why, not just that
            for r, _ in pipes:
                if r.poll(READY_TIMEOUT_S) and isinstance(g := r.recv(), BaseException):
                    raise g from None
            raise
        server0, db0 = _tree_cpu(server), _cluster_cpu(datadir)
        queued0 = _queued(server)
        got = [r.recv() for r, _ in pipes]
        for p in procs:
            p.join()
        for g in got:
            if isinstance(g, BaseException):
                raise g
        out = got
        client_cpu = sum(o["cpu"] for o in out)  # each process's own, from its start to end
    out[0]["server_queued"] = _queued_since(server, queued0)
    return out, _tree_cpu(server) - server0, client_cpu, _cluster_cpu(datadir) - db0


if __name__ == "__main__":
    main()
