"""The `copyledger` command: one small function per command, calling the packages."""

from __future__ import annotations

import contextvars
import dataclasses
import gc
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from copyledger.cli.catalogue import (
    ImportProgress,
    Listing,
    Row,
    count_rows,
    read_rows,
    row_claim,
)
from copyledger.cli.words import Localized, detail, lang, tr
from copyledger.client import (
    BatchWork,
    Client,
    ClientError,
    ProblemError,
    Receipt,
    UnverifiedAnswer,
)
from copyledger.client._calls import readable_name
from copyledger.ledger.errors import CopyledgerError, Unavailable, said
from copyledger.service import settings as settings_mod
from copyledger.service.accounts import KIND_WORDS

app = typer.Typer(
    name="copyledger",
    help="Copyright evidence registry on an RFC 6962 transparency log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=Localized,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Accounts: who stands behind an account id.",
                           no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
notary_app = typer.Typer(help="The stand-alone notary (log key and TSA key holder).",
                         no_args_is_help=True)
app.add_typer(notary_app, name="notary")
witness_app = typer.Typer(help="A C2SP tlog-witness that cosigns other logs' checkpoints.",
                          no_args_is_help=True)
app.add_typer(witness_app, name="witness")
tiles_app = typer.Typer(help="The log as C2SP tlog-tiles static files.", no_args_is_help=True)
app.add_typer(tiles_app, name="tiles")
db_app = typer.Typer(help="The registry's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="COPYLEDGER_DATA_DIR", help="registry data directory"),
]
Database = Annotated[
    str | None,
    typer.Option("--database", envvar="COPYLEDGER_DATABASE",
                 help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite "
                 "in the data directory)"),
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
NotaryUrl = Annotated[
    str | None,
    typer.Option("--notary-url", envvar="COPYLEDGER_NOTARY_URL",
                 help="sign through a stand-alone notary (http://host:port or unix:/path); "
                 "its token comes from COPYLEDGER_NOTARY_TOKEN"),
]
Server = Annotated[
    str, typer.Option("--server", envvar="COPYLEDGER_SERVER", help="registry URL")
]
Trust = Annotated[
    list[str] | None,
    typer.Option("--trust", envvar="COPYLEDGER_TRUST",
                 help="the log's verifier key to pin (name+id+key); default: ask the server"),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="COPYLEDGER_API_KEY", help="Bearer API key")
]
IdempotencyKey = Annotated[str | None, typer.Option(
    "--idempotency-key", help="send the write under this Idempotency-Key (as a run that failed "
    "named it): the registry answers with what that run recorded, if it did, instead of "
    "recording again")]
Retries = Annotated[
    int, typer.Option("--retries", envvar="COPYLEDGER_RETRIES", min=0, max=20,
                      help="send a request again up to this many times (within 30 s) when no "
                      "answer came or the server asked for a pause (429, 502-504, a 409 with "
                      "Retry-After); a work sent with --again goes under an Idempotency-Key, "
                      "the others are answered with their entry, so none is recorded twice")
]


REQUEST_WORKS = 1000  # what one POST /v1/works/batch carries (service.operations.MAX_BATCH)
UNPINNED_EXIT = 3  # `verify`: every step held, but under no key the user pinned


def _die(msg: str, code: int = 2) -> NoReturn:
    prefix = tr("error:")
    err.print(f"[red]{prefix}[/red] {msg}")
    raise typer.Exit(code)


def _need_key() -> NoReturn:
    _die(tr("an API key is needed: --api-key or COPYLEDGER_API_KEY"))


def _told(e: CopyledgerError) -> str:
    """A domain error as the command line says it, in the locale's language: its detail
    through the catalogue (`words.detail`, the lookup the server makes for a problem's), the
    internal cause as it was; a problem with its status and title first. (A problem's title
    and detail are the registry's words, in this language where it has them: the client asks
    for it with Accept-Language.) `str(e)` would be English."""
    if isinstance(e, ProblemError):
        if not e.is_problem:  # (a proxy's page: its text as it came)
            return f"{e.status} {detail(e.detail)}"
        return f"{e.status} {detail(e.title)}: {detail(e.detail)}"
    return f"{detail(e.detail)} ({e.internal})" if e.internal else detail(e.detail)


@contextmanager
def _domain_errors_exit() -> Iterator[None]:
    """A domain error ends the command: its message on stderr, exit status 2."""
    try:
        yield
    except CopyledgerError as e:  # in the locale's language; the internal cause as it was
        _die(_told(e))


def _emit(as_json: bool, obj: Any, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    elif human is not None:
        out.print(human)


_EMIT_PIECES = 65_536
"""Tokens `_emit_streamed` joins into one write (about 0.8 MB of an import's summary), not a
write a token."""


def _emit_streamed(obj: Any) -> None:
    """`--json`'s summary written as it is encoded, so a `Listing` in it is never held whole
    (D152). Only where one may be large: `json.dumps` encodes in C on Python 3.14 and later,
    which this pure Python path does not."""
    pieces: list[str] = []
    for piece in json.JSONEncoder(indent=2).iterencode(obj):
        pieces.append(piece)
        if len(pieces) >= _EMIT_PIECES:
            sys.stdout.write("".join(pieces))
            pieces.clear()
    sys.stdout.write("".join(pieces) + "\n")


def _settings(data_dir: Path | None, database: str | None = None, **kw: Any) -> Any:
    with _domain_errors_exit():
        return settings_mod.load(data_dir, database=database, **kw)


@app.command()
def init(
    data_dir: DataDir = None,
    database: Database = None,
    origin: Annotated[
        str | None, typer.Option(help="log origin, e.g. registry.example/log")
    ] = None,
    notary_url: NotaryUrl = None,
    suite: Annotated[str | None, typer.Option(
        "--suite", help="crypto suite, fixed at init: standard, or sm (SM3 digests and SM2 "
        "signatures beside SHA-256 and Ed25519)")] = None,
    as_json: Json = False,
) -> None:
    """Create a registry: data directory, config, notary key (mode 0600) and database schema."""
    from copyledger.service.node import init_data_dir

    s = _settings(data_dir, database, origin=origin, notary_url=notary_url, crypto_suite=suite)
    with _domain_errors_exit():
        r = init_data_dir(s)
    sm2_line = (tr("SM2 key").ljust(12) + f" {r.sm2_verifier_key}\n" if r.sm2_verifier_key
                else "")
    _emit(as_json, {"data_dir": str(s.data_dir), "origin": s.origin, "verifier_key":
                    r.verifier_key, "created_key": r.created_key,
                    "database": settings_mod.shown_url(s.database_url),
                    **({"crypto_suite": s.crypto_suite, "sm2_verifier_key": r.sm2_verifier_key}
                       if r.sm2_verifier_key else {})},
          tr("registry in [bold]{data_dir}[/bold]").format(data_dir=s.data_dir)
          + "\n" + tr("origin").ljust(12) + f" {s.origin}\n"
          + tr("verifier key").ljust(12) + f" {r.verifier_key}\n"
          + sm2_line + (tr("new notary key written (mode 0600)") if r.created_key
                        else tr("existing key kept")))


@app.command()
def serve(
    data_dir: DataDir = None,
    database: Database = None,
    host: Annotated[str | None, typer.Option(envvar="COPYLEDGER_HOST")] = None,
    port: Annotated[int | None, typer.Option(envvar="COPYLEDGER_PORT")] = None,
    notary_url: NotaryUrl = None,
    workers: Annotated[int | None, typer.Option(
        envvar="COPYLEDGER_WORKERS", min=1,
        help="API processes; one of them sequences the log, the others hand entries to it, "
        "and another takes over if it dies")] = None,
) -> None:
    """Run the registry's HTTP API (creates the registry on first start)."""
    _bound_malloc_arenas()
    from copyledger.service import memory

    memory.fix_mmap_threshold()  # before the imports and threads that allocate (D65)
    import uvicorn

    from copyledger.api.app import create_app
    from copyledger.api.logs import configure
    from copyledger.service.node import Node

    s = _settings(data_dir, database, host=host, port=port, notary_url=notary_url,
                  workers=workers)
    configure(s.log_level, s.log_json)
    _check_port(s.host, s.port)
    if s.workers > 1:
        _serve_workers(s)
        return
    with _domain_errors_exit():
        reg = Node.open(s)
    _upkeep_memory()
    err.print(tr("copyledger: serving {origin} from {data_dir} on {url} (docs at /docs)").format(
        origin=s.origin, data_dir=s.data_dir, url=f"http://{s.host}:{s.port}"))
    err.print(tr("next, in another terminal: create an API key with") + "\n  copyledger keys "
              f"create --role creator --account you --data-dir {s.data_dir}", markup=False)
    server = uvicorn.Server(uvicorn.Config(
        create_app(reg), host=s.host, port=s.port, log_level="warning", access_log=False,
        timeout_keep_alive=max(1, round(s.keep_alive_s)),
        timeout_graceful_shutdown=_grace(s)))
    reg.step_down_with(lambda: setattr(server, "should_exit", True))
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: a normal stop, as `uvicorn.run` has it
        return
    if not server.started:
        sys.exit(3)  # as `uvicorn.run` does (its STARTUP_FAILURE)
    if reg.stepped_down:
        # Another process took the log's lock from this one (D109): start afresh, to follow
        # it, as uvicorn's supervisor would start a process in its place (D112).
        err.print(tr("copyledger: another process took over the log; starting again to "
                     "follow it"))
        _run_again()


def _serve_workers(s: Any) -> None:
    """`serve --workers N`: uvicorn's supervisor runs N processes on one listening socket (and
    starts a new one when one dies); each builds its node in `worker_app` (D48)."""
    import uvicorn

    from copyledger.service.handoff import handoff_network, socket_path
    from copyledger.service.node import init_data_dir

    with _domain_errors_exit():
        socket_path(s.data_dir)  # too long a path fails here, not in every worker
        handoff_network(s)  # and the hand-over across hosts' settings (D110)
        init_data_dir(s)  # keys and schema once, before the workers open them
    # The workers read their settings as `serve` itself would, from the environment.
    os.environ.update({"COPYLEDGER_DATA_DIR": str(s.data_dir), "COPYLEDGER_WORKERS":
                       str(s.workers), "COPYLEDGER_DATABASE": s.database,
                       "COPYLEDGER_NOTARY_URL": s.notary_url,
                       # (a certificate's links and QR code name this address, D173)
                       "COPYLEDGER_HOST": s.host, "COPYLEDGER_PORT": str(s.port)})
    err.print(tr("copyledger: serving {origin} from {data_dir} on {url} with {n} processes "
                 "(docs at /docs)").format(origin=s.origin, data_dir=s.data_dir,
                                           url=f"http://{s.host}:{s.port}", n=s.workers))
    uvicorn.run("copyledger.cli.main:worker_app", factory=True, workers=s.workers,
                host=s.host, port=s.port, log_level="warning", access_log=False,
                timeout_keep_alive=max(1, round(s.keep_alive_s)),
                timeout_graceful_shutdown=_grace(s),
                # The supervisor kills a process that does not answer its ping in time: give
                # one that is starting on a busy machine, or sealing a big block, a minute. It
                # waits that long for each ping, and meanwhile starts no other process again.
                timeout_worker_healthcheck=max(1, round(min(s.worker_healthcheck_s, 86_400))))


def _grace(s: Any) -> int | None:
    """uvicorn's bound on a graceful stop (SIGTERM, or a process that stops sequencing and
    starts again, D109/D112), whole seconds: without one, a request still running (an hour's
    upload, a client stalling its body until `upload_timeout_s`) held the stop, and the
    restart after it, for as long as it ran. `inf` asks for no bound."""
    grace = float(s.shutdown_grace_s)
    return max(1, round(grace)) if math.isfinite(grace) else None


def worker_app() -> Any:
    """One process of `serve --workers N`: its node and app, settings from the environment.
    Its memory is kept as `serve`'s own: the arena limit comes with the environment, the
    rest is set here (D65)."""
    from copyledger.service import memory

    memory.fix_mmap_threshold()
    from copyledger.api.app import create_app
    from copyledger.api.logs import configure
    from copyledger.service.node import Node

    s = _settings(None)
    configure(s.log_level, s.log_json)
    with _domain_errors_exit():
        reg = Node.open(s)
    _upkeep_memory()
    return create_app(reg)


def _upkeep_memory() -> None:
    """Once the node is open: long-lived objects (app, routes, schema) out of the collector's
    sight, and fewer young collections, since the hot path allocates many short-lived objects.
    Those thresholds leave the old generations uncollected for minutes, so a clock collects
    cyclic garbage and trims the C heap (D47); `serve` and each of `--workers` run one."""
    from copyledger.service import memory

    _few_collections()
    collector = memory.Collector()
    collector.start()
    memory.watch_from_env(collector=collector)  # opt-in diagnostics (COPYLEDGER_MEMWATCH=file)


MALLOC_ARENA_MAX = "2"


def _bound_malloc_arenas() -> None:
    """Re-execute this very command with `MALLOC_ARENA_MAX=2` unless the environment already
    sets it (D42). glibc gives each thread that contends for the heap an arena of its own, up
    to 8 per core, and hands little of it back: in side-by-side 75-s soaks at 50 connections
    RSS grew 80 % with glibc's default and 33 % with the limit (not flat yet: D42). The
    variable is read when the process starts, so it is set for the process rather than with
    `mallopt` later (libraries' threads have made their arenas by then); `exec` keeps the PID.
    An operator's own value wins (`MALLOC_ARENA_MAX=` keeps glibc's default)."""
    import platform

    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return
    os.environ["MALLOC_ARENA_MAX"] = MALLOC_ARENA_MAX
    _run_again()


def _run_again() -> NoReturn:
    """Replace this process with the very command that started it (same pid, arguments and
    environment)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _check_port(host: str, port: int) -> None:
    """Say plainly that the port is taken, before any work, rather than letting uvicorn fail
    after the "serving on" line."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        _die(tr("cannot serve on {where}: {why}").format(where=host, why=e))
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                _die(tr("cannot serve on {where}: {why}").format(where=f"{host}:{port}",
                                                                  why=e.strerror))
            _die(tr("port {port} is in use on {host}; stop what is using it, or choose another: "
                    "`PORT={next} make run` (or `copyledger serve --port {next}`)").format(
                        port=port, host=host, next=port + 1), 1)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="creator, platform, court or admin")],
    account: Annotated[str, typer.Option(help="the account the key acts for")] = "default",
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Mint an API key. It is printed once; only its hash is stored."""
    from copyledger.service.admin import create_key

    with _domain_errors_exit():
        secret, row = create_key(_settings(data_dir, database), role, account)
    _emit(as_json, {"key": secret, "role": row.role, "account": row.account, "id": row.id},
          f"{secret}\n[dim]"
          + tr("role {role}, account {account}; shown once, keep it safe").format(
              role=row.role, account=row.account) + "[/dim]")


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option(help="only this account's keys")] = None,
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """List API keys (id, prefix, role, account, created, revoked); never their secrets."""
    from copyledger.service.admin import list_keys

    with _domain_errors_exit():
        rows = list_keys(_settings(data_dir, database), account)
    if as_json:
        _emit(True, [r.to_dict() for r in rows])
        return
    table = Table(*map(tr, ("id", "prefix", "role", "account", "created", "revoked")))
    for r in rows:
        table.add_row(str(r.id), r.prefix + "…", r.role, r.account, r.created_at,
                      r.revoked_at or "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="the key's id (from `keys list`)")],
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Revoke an API key. Running servers refuse it within 30 seconds."""
    from copyledger.service.admin import revoke_key

    with _domain_errors_exit():
        row = revoke_key(_settings(data_dir, database), key_id)
    _emit(as_json, row.to_dict(), tr("key {id} ({prefix}…, {account}) revoked at {when}").format(
        id=row.id, prefix=row.prefix, account=row.account, when=row.revoked_at))


@accounts_app.command("set")
def accounts_set(
    account: Annotated[str, typer.Argument(help="the account id (what entries record)")],
    name: Annotated[str, typer.Option(help="the display name: a person's or an "
                                      "organisation's name")],
    kind: Annotated[str, typer.Option(help="person or organisation")],
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """State an account's display name and kind, shown beside the account id on certificates
    and pages as the operator's statement (not signed by the log)."""
    from copyledger.service.admin import set_account

    with _domain_errors_exit():
        p = set_account(_settings(data_dir, database), account, name, kind)
    _emit(as_json, p.to_dict(), tr("{account}: {name} ({kind})").format(
        account=p.account, name=p.display_name, kind=tr(KIND_WORDS.get(p.kind, p.kind))))


@accounts_app.command("show")
def accounts_show(
    account: Annotated[str, typer.Argument(help="the account id")],
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Show an account's display name and kind."""
    from copyledger.service.admin import show_account

    with _domain_errors_exit():
        p = show_account(_settings(data_dir, database), account)
    _emit(as_json, p.to_dict(), tr("{account}: {name} ({kind}), set {when}").format(
        account=p.account, name=p.display_name, kind=tr(KIND_WORDS.get(p.kind, p.kind)),
        when=p.updated_at))


def _hash_files(paths: list[Path], show: bool) -> list[tuple[Path, str, int]]:
    total = sum(p.stat().st_size for p in paths)
    results = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=err, disable=not show, transient=True,
    ) as prog:
        task = prog.add_task(tr("hashing"), total=total)
        for p in paths:
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    prog.advance(task, len(chunk))
            results.append((p, h.hexdigest(), p.stat().st_size))
    return results


def _client(server: str, api_key: str | None, trust: list[str] | None,
            timeout: float, account: str | None = None, retries: int = 0) -> Client:
    """A client for the registry at `server`, checking answers with the pinned keys, and
    writes against `account` (else the account GET /v1/whoami names, D93), resending
    `retries` times (D131)."""
    try:
        return Client(server, api_key=api_key, trusted_keys=trust or (), timeout=timeout,
                      account=account, retries=retries, language=lang())
    except CopyledgerError as e:
        _die(tr("bad verifier key: {why}").format(why=detail(e.detail)))


# ------------------------------------------------------------ register: files and folders
# (issue #14: folders, resumable runs, receipts kept by default, work type from the content)

DEFAULT_RECEIPTS = Path("copyledger-receipts")
REGISTER_CHUNK = 100  # files registered per request: receipts are saved after each


@app.command()
def register(
    files: Annotated[list[Path], typer.Argument(
        exists=True, readable=True, help="files, or folders to register recursively")],
    title: Annotated[str | None, typer.Option(help="title (default: the file name)")] = None,
    creator: Annotated[
        list[str] | None, typer.Option("--creator", help="repeat per creator")
    ] = None,
    work_type: Annotated[str | None, typer.Option(
        help="text, image, audio, video, software, dataset, other (default: from the "
        "content's media type)")] = None,
    license: Annotated[str | None, typer.Option(help="licence, e.g. CC-BY-4.0")] = None,
    include: Annotated[list[str] | None, typer.Option(
        "--include", help="in folders, only files matching this glob (repeatable)")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="in folders, skip files matching this glob (repeatable)")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    receipts: Annotated[Path, typer.Option(
        help="folder for receipts (<sha256>.json; <sha256>-<seq>.json for another entry of the "
        "same content), manifest.jsonl and again-run.json")] = DEFAULT_RECEIPTS,
    again: Annotated[bool, typer.Option(
        "--again", help="register anew content this account already registered (a new "
        "entry; without this the earlier registration is reported). A run stopped part-way "
        "(or with files failed) is resumed by the next --again into the same --receipts "
        "folder: each file goes under the same Idempotency-Key as before, so none is recorded "
        "twice; once a run registered every file, the next --again is a new run, with new "
        "entries")] = False,
    trust: Trust = None,
    account: Annotated[str | None, typer.Option(
        envvar="COPYLEDGER_ACCOUNT",
        help="the account the API key acts for, which every receipt must name (default: the "
        "one this folder's manifest recorded for the key, else the one the server names)")
    ] = None,
    retries: Retries = 3,
    as_json: Json = False,
) -> None:
    """Hash files locally (they never leave this machine), register them, and check each
    receipt: entry bytes, file hash, inclusion proof and the checkpoint's signature.

    Resumable: a file whose SHA-256 this account has already registered is skipped (reported
    as "already registered (seq N)") once that registration's receipt is fetched and verified
    (kept in the receipts folder), so a run that was stopped can simply be started again;
    --again registers such files anew."""
    from copyledger.cli.batch import AGAIN_RUN, AgainRun, Manifest, collect_files, hash_file
    from copyledger.client.media import media_type_of, work_type_of
    from copyledger.ledger import sm2

    if not api_key:
        _need_key()
    paths = collect_files(files, include or (), exclude or (), skip=receipts)
    manifest = Manifest(receipts)
    results: list[dict[str, Any]] = []
    show = not as_json and sys.stderr.isatty()
    # The manifest's account came from verified receipts; the one typed only pins the client
    # (D93): it must not skip files or fill the manifest before a receipt shows it.
    known = manifest.account(api_key)
    # --again: the run's works go under keys made from it, the same when a stopped run is
    # resumed (a work the registry recorded is answered again, not recorded twice).
    run = AgainRun.resume_or_start(receipts) if again else None
    if run is not None and run.resumed and not as_json:
        err.print(tr("resuming the --again run that stopped before (or left files failed): "
                     "its files go under the same Idempotency-Keys; delete {path} to start a "
                     "new run instead").format(path=receipts / AGAIN_RUN))
    if run is not None and run.dropped is not None and not as_json:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.dropped))
        err.print(tr("the unfinished --again run started {when} is too old to resume (a "
                     "registry keeps Idempotency-Keys for 24 hours): this is a new run, and "
                     "every file is registered again").format(when=when))
    with _client(server, api_key, trust, 60, account or known, retries) as client, Progress(
        TextColumn("{task.description}", table_column=None), BarColumn(),
        TextColumn("{task.completed}/{task.total} files"), TimeRemainingColumn(),
        console=err, disable=not show, transient=True,
    ) as prog:
        pinned = _verifiers(client)
        sm_suite = _sm_suite(client)
        task = prog.add_task(tr("registering"), total=len(paths))
        waiting: list[tuple[int, Path, str, BatchWork]] = []  # (result slot, file, hash, work)

        def send() -> None:
            """Register the waiting files in one request, and record each answer."""
            nonlocal known
            answers: list[Receipt | ProblemError | UnverifiedAnswer]
            try:
                answers = list(client.register_works([w for *_, w in waiting]))
            except ProblemError as e:  # the whole request refused (401, 429…): each file says
                answers = [e] * len(waiting)
            except (ClientError, UnverifiedAnswer) as e:  # unreachable; or not verified whole
                _die(_told(e))  # (D99: answered, but whoami failed): a rerun finds them
            for (slot, path, sha, _), a in zip(waiting, answers, strict=True):
                res, rc = _answered(path, sha, a)
                if rc is not None and rc.already_registered:  # the server knew, the manifest not
                    res["skipped"] = said("already registered by {account} (seq {seq})",
                                          account=rc.entry.registrant, seq=rc.seq)
                if rc is not None:
                    doc = rc.to_dict()
                    known = doc["entry"]["registrant"]
                    name = manifest.save_receipt(sha, doc)
                    manifest.add(path, sha, rc.seq, known, name, api_key,
                                 None if run is None else run.run)
                res["key_pinned"] = pinned
                results[slot] = res
            prog.advance(task, len(waiting))
            waiting.clear()

        for path in paths:
            prog.update(task, description=_short(path))
            f = hash_file(path)
            if run is not None:  # a resumed --again run: what it registered is done
                line = manifest.done_in_run(path, f.sha256, run.run)
                if line is not None:
                    results.append({"file": str(path), "sha256": f.sha256, "seq": line["seq"],
                                    "skipped": said("registered by this --again run before "
                                                    "it stopped (seq {seq})", seq=line["seq"]),
                                    "key_pinned": pinned})
                    prog.advance(task)
                    continue
            seq = None if again else _already_registered(client, f.sha256, known)
            if seq is not None and known is not None:
                # The log's word only: skipped once that entry's receipt verifies (D171).
                res, rc = _earlier_registration(client, path, f.sha256, seq, known)
                if rc is not None:
                    name = manifest.save_receipt(f.sha256, rc.to_dict())
                    manifest.add(path, f.sha256, rc.seq, known, name, api_key)
                res["key_pinned"] = pinned
                results.append(res)
                prog.advance(task)
                continue
            media = media_type_of(f.head, path.name)
            fps = _local_fingerprints(path, f.size, media) if media else {}
            work = BatchWork(
                sha256=f.sha256, size=f.size, title=title or readable_name(path),
                creators=creator or ["unknown"], work_type=work_type or work_type_of(media),
                media_type=media, fingerprints=fps or None, license=license or None,
                again=again)
            if run is not None:
                work["idempotency_key"] = run.key(path, f.sha256)
            if sm_suite:
                with path.open("rb") as fh:
                    work["sm3"] = sm2.sm3_file(fh)
            results.append({})  # filled in by send(), in the files' order
            waiting.append((len(results) - 1, path, f.sha256, work))
            if len(waiting) == REGISTER_CHUNK:
                send()
        if waiting:
            send()
    failed = any("error" in r for r in results)
    if run is not None and not failed:
        run.finish()  # every file registered: the next --again is a new run
    if as_json:
        _emit(True, results)
    else:
        _results_table(results, tr("registered, receipt verified"))
        done = sum(1 for r in results if "error" not in r and "skipped" not in r)
        skipped = sum(1 for r in results if "skipped" in r)
        err.print(tr("{done} registered, {skipped} already registered (skipped), {failed} "
                     "failed; receipts in {receipts}/ (manifest {manifest})").format(
            done=done, skipped=skipped, failed=len(results) - done - skipped, receipts=receipts,
            manifest=receipts / "manifest.jsonl"))
        if not pinned:
            err.print(tr("[yellow]receipts checked under the key the server itself published; "
                         "pin the log's key with --trust[/yellow]"))
    if failed:
        raise typer.Exit(1)


def _short(path: Path, width: int = 40) -> str:
    s = str(path)
    return s if len(s) <= width else "…" + s[-(width - 1):]


# ------------------------------------------------------------ import: a catalogue by hash
# (issue 13 item 3: through the batch endpoint, resumable without duplicates)


@app.command("import")
def import_(
    catalogue: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, readable=True,
        help="FILE.jsonl (one work a line) or FILE.csv (header: sha256,title,creators,"
        "work_type[,size,media_type,license,metadata]; creators separated by ';')")],
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    progress_file: Annotated[Path | None, typer.Option(
        help="where finished chunks are recorded, to resume (default: FILE.progress)")] = None,
    chunk: Annotated[int, typer.Option(
        min=1, max=10_000, help="works per request (at most 1,000), or per block with "
        "--local")] = 1000,
    trust: Trust = None,
    as_json: Json = False,
    local: Annotated[bool, typer.Option(
        "--local", help="operator only, with the server stopped: register in this process "
        "through the registry's own sequencer (--data-dir/--database, --account), no HTTP")
    ] = False,
    account: Annotated[str | None, typer.Option(
        envvar="COPYLEDGER_ACCOUNT",
        help="with --local: the account registering the works (it must hold a key); "
        "otherwise the account the API key acts for, which every receipt must name "
        "(default: the one the server names)")] = None,
    data_dir: DataDir = None,
    database: Database = None,
    retries: Retries = 3,
) -> None:
    """Register a catalogue of works by hash, 1,000 a request, each receipt verified.

    Resumable: rerun the same command after an interruption. Finished chunks are skipped (the
    progress file), and a work this account already registered is answered with its earlier
    registration, never a second entry, so the log holds what single registrations would.
    Rows the registry refuses are listed (file line and problem); the import goes on."""
    state = ImportProgress.load(progress_file or catalogue.with_name(catalogue.name + ".progress"))
    total = count_rows(catalogue)
    show = not as_json and sys.stderr.isatty()
    stopped: str | None = None
    if local:
        if not account:
            _die(tr("--local needs --account: who registers the works"))
        sender: Any = _LocalImport(_settings(data_dir, database), account)
        pinned = None
    else:
        if not api_key:
            _need_key()
        if chunk > REQUEST_WORKS:
            _die(tr("--chunk: a request carries at most {most} works").format(most=REQUEST_WORKS))
        sender = _client(server, api_key, trust, 300, account, retries)
    send: Callable[[list[Row]], str | None]
    with sender as conn, Progress(
        TextColumn("importing"), BarColumn(), TextColumn("{task.completed}/{task.total} works"),
        TimeRemainingColumn(), console=err, disable=not show, transient=True,
    ) as prog:
        if local:
            send = partial(_LocalImport.send, conn, state=state)
        else:
            pinned = _verifiers(conn)
            send = partial(_import_chunk, conn, state=state)
        task = prog.add_task(tr("importing"), total=total, completed=state.done)
        rows = read_rows(catalogue, skip=state.done)
        batch: list[Row] = []
        for row in chain(rows, [None]):
            if row is not None:
                batch.append(row)
                if len(batch) < chunk:
                    continue
            if not batch:
                break
            stopped = send(batch)
            if stopped:
                break
            prog.advance(task, len(batch))
            batch = []
        if local and not stopped:
            stopped = conn.finish(state)
    if as_json:  # (the refusals read from the progress file once, as they are written)
        _emit_streamed({"file": str(catalogue), "done": state.done, "total": total,
                        "registered": state.registered, "already_registered": state.already,
                        "refused": Listing(state.refusals()), "key_pinned": pinned,
                        "stopped": stopped})
    else:
        for r in state.refusals():
            err.print(tr("line {line}: {problem}").format(line=r["line"],
                                                          problem=detail(r["problem"])))
        err.print(tr("{done}/{total} rows: {registered} registered, {already} already "
                     "registered, {refused} refused").format(
                         done=state.done, total=total, registered=state.registered,
                         already=state.already, refused=state.refused)
                  + (tr("; stopped: {why} (run the command again to resume)").format(
                      why=detail(stopped))
                     if stopped else ""))
    if stopped or state.refused:
        raise typer.Exit(1)


def _few_collections() -> tuple[int, int, int]:
    """Long-lived objects (app, routes, schema, modules) out of the cycle collector's sight,
    and young collections every 50,000 allocations rather than 700: the hot paths (requests,
    an import) allocate many short-lived objects, which refcounting frees anyway (D47, D68).
    Returns the thresholds it replaced."""
    was = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    return was


def _die_with_parent(parent: int) -> None:
    """A pool worker's start: ended by the kernel when the import that forked it dies (Linux),
    rather than waiting forever for chunks that will not come."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the call above
        os._exit(1)


class _LocalImport:
    """`import --local`: the registry opened in this process, its sequencer started (so a
    running server's sequencer lock refuses it), each chunk validated and canonicalised by a
    pool of processes (`operations.prepare_works`, one piece a process) while the chunk
    before it is sealed, then registered through `operations.import_works`; the registry
    stopped cleanly at the end."""

    def __init__(self, s: Any, account: str) -> None:
        self.settings, self.account = s, account
        # A chunk being prepared: its rows, its pieces' futures and its rows' claims.
        self.ahead: tuple[list[Row], list[Any], list[tuple[str, str, str] | None]] | None = None

    def __enter__(self) -> _LocalImport:
        import asyncio

        from copyledger.service.node import Node

        # The import makes millions of objects that hold no cycles (rows, entries, receipts):
        # with the default thresholds the cycle collector took 40 % of the CPU time (D68).
        # Here and in the workers forked below; put back on exit.
        self.gc_was = _few_collections()
        # The workers are forked now, before the registry is opened: a worker forked later
        # would inherit the sequencer's lock and, outliving a killed import, keep it.
        self.jobs = os.cpu_count() or 1
        # Forked explicitly (Python 3.14 defaults to forkserver, whose children's parent is
        # the server, not this process, which _die_with_parent would take for dead).
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_die_with_parent, initargs=(os.getpid(),))
        try:
            for f in [self.pool.submit(int) for _ in range(self.jobs)]:
                f.result()
            with _domain_errors_exit():
                # The server is stopped: no other host's processes to listen for (D110).
                self.node = Node.open(dataclasses.replace(self.settings, handoff_listen=""))
                try:
                    self.node.start()
                except BaseException:
                    self.node.store.close()
                    raise
        except BaseException:  # e.g. a running server holds the lock: undo the above
            self.pool.shutdown(cancel_futures=True)
            self._restore_gc()
            raise
        self.runner = asyncio.Runner()
        return self

    def _restore_gc(self) -> None:
        gc.set_threshold(*self.gc_was)
        gc.unfreeze()

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.runner.close()
        self.node.stop()
        self._restore_gc()

    def send(self, batch: list[Row], state: ImportProgress) -> str | None:
        """Start preparing this chunk, then register and record the one before it (so a
        progress line always lags one chunk); why the import must stop, or None."""
        from copyledger.service.operations import prepare_works

        works = [r.work for r in batch if r.work is not None]
        # A row's key is not a work's member: its claim goes with its entry instead (D162).
        docs = [(f"line {r.line}: ", {k: v for k, v in r.work.items() if k != "idempotency_key"})
                for r in batch if r.work is not None]
        claims = [row_claim(self.account, w) for w in works]
        step = -(-len(docs) // self.jobs) or 1
        futures = [self.pool.submit(prepare_works, self.node.sm_suite, self.account,
                                    docs[i:i + step]) for i in range(0, len(docs), step)]
        ahead, self.ahead = self.ahead, (batch, futures, claims)
        return self._register(*ahead, state) if ahead else None

    def finish(self, state: ImportProgress) -> str | None:
        """Register the last chunk being prepared, if any."""
        ahead, self.ahead = self.ahead, None
        return self._register(*ahead, state) if ahead else None

    def _register(self, batch: list[Row], futures: list[Any],
                  claims: list[tuple[str, str, str] | None], state: ImportProgress
                  ) -> str | None:
        from copyledger.service import idempotency
        from copyledger.service.operations import import_works

        # Each keyed row's entry is recorded under its claim, and one already recorded under
        # it (an earlier run's, over HTTP or not) answers it instead (D132, D134).
        context = contextvars.copy_context()
        context.run(idempotency.WRITING_MANY.set, claims)
        try:
            outcomes = self.runner.run(import_works(
                self.node, self.account, [f.result() for f in futures]), context=context)
        except CopyledgerError as e:  # nothing registered: no such account, too big a chunk
            return detail(e.detail)

        def verdict(o: Any) -> tuple[str, str]:
            if isinstance(o, Unavailable):  # the sequencer's trouble, not the row's
                return "stop", detail(o.detail)
            if isinstance(o, CopyledgerError):
                return "refused", detail(o.detail)
            return ("already" if o.existing else "registered"), ""

        return _tally(batch, map(verdict, outcomes), state)


def _import_chunk(client: Client, batch: list[Row], state: ImportProgress) -> str | None:
    """Send one chunk and record it; why the import must stop (nothing recorded), or None."""
    sendable = [r for r in batch if r.work is not None]
    try:
        works = [r.work for r in sendable if r.work is not None]
        answers = client.register_works(works) if works else []
    except (ClientError, UnverifiedAnswer) as e:  # unreachable, refused whole (429, 503…), or
        # not verified whole (D99: answered, but whoami failed); resumable. Said in the
        # summary in the locale's language (a problem: the registry's words, in it too).
        return str(e) if isinstance(e, ProblemError) or e.internal else e.detail

    def verdict(r: Row, a: Any) -> tuple[str, str]:
        if isinstance(a, ProblemError):
            # 429/503, or a 409 for its key still in flight (D131), are not the row's fault:
            # resend the chunk later
            wait = a.status in (429, 503) or (a.status == 409 and "retry_after" in a.extra)
            return ("stop" if wait else "refused"), str(a)
        if isinstance(a, UnverifiedAnswer):  # the registry's fault: stop, tell, resend later
            return "stop", said("line {line}: receipt does NOT verify: {why}", line=r.line,
                                why=a.detail)
        return ("already" if a.already_registered else "registered"), ""

    return _tally(batch, map(verdict, sendable, answers), state)


def _tally(batch: list[Row], verdicts: Iterable[tuple[str, str]], state: ImportProgress
           ) -> str | None:
    """Record one chunk: `verdicts` holds, for each row with a work in order, "registered",
    "already", ("refused", problem) or ("stop", why). A stop records nothing and is returned,
    so the chunk is sent again; rows that did not parse are refusals of their own."""
    sendable = [r for r in batch if r.work is not None]
    refused = [{"line": r.line, "problem": r.error} for r in batch if r.work is None]
    registered = already = 0
    for r, (what, why) in zip(sendable, verdicts, strict=True):
        if what == "stop":
            return why
        if what == "refused":
            refused.append({"line": r.line, "problem": why})
        elif what == "already":
            already += 1
        else:
            registered += 1
    state.advance(len(batch), registered, already, sorted(refused, key=lambda x: x["line"]))
    return None


def _already_registered(client: Client, sha: str, account: str | None) -> int | None:
    """The seq of the earliest work with this SHA-256 registered by `account`, as the log's
    search says (the server's word: `_earlier_registration` checks it)."""
    if account is None:
        return None
    try:
        found = client.search(sha)["results"]
    except ClientError as e:
        _die(_told(e))
    for x in found:
        found_entry = x["entry"]
        if (found_entry.get("kind") == "work" and found_entry.get("registrant") == account
                and type(x.get("seq")) is int):
            return int(x["seq"])
    return None


def _earlier_registration(client: Client, path: Path, sha: str, seq: int, account: str
                          ) -> tuple[dict[str, Any], Receipt | None]:
    """The result row of a file the log says `account` registered as `seq`, and the receipt
    of that registration when it verifies as a registration's receipt does: made from the
    entry's bundle (its entry, leaf, proof and the sealing block's signed checkpoint), it
    must be a work of this content, by this account, at that seq, under the trusted keys.
    Else an error row: a skip rests on a verified receipt, never on the server's word."""
    from copyledger.client import verify
    from copyledger.ledger.documents import Work

    try:
        b = client.bundle(seq)
        try:
            doc = {"seq": b["seq"], "leaf_hash": b["leaf_hash"],
                   "block_height": b["block"]["height"], "entry": b["entry"],
                   "receipt": {"tree_size": b["inclusion"]["tree_size"],
                               "root": b["inclusion"]["root"],
                               "proof": b["inclusion"]["proof"],
                               "checkpoint": b["checkpoint"]},
                   "already_registered": True}
        except (KeyError, TypeError) as e:
            raise UnverifiedAnswer(said("malformed answer ({name}: {e})",
                                        name=type(e).__name__, e=e), b) from None
        rc = verify.check_receipt(doc, client.verifiers(), file_sha256=sha, account=account)
        if rc.seq != seq:
            raise UnverifiedAnswer(said("the proof is of seq {got} in a tree of {size}, not "
                                        "the one asked for", got=rc.seq,
                                        size=rc.receipt.tree_size), b)
        if not isinstance(rc.entry, Work):
            raise UnverifiedAnswer(said("the registry answered an earlier registration that "
                                        "is not a work"), b)
    except (ClientError, UnverifiedAnswer) as e:
        return {"file": str(path), "sha256": sha, "seq": seq,
                "error": said("the log says this account registered it (seq {seq}), but no "
                              "receipt of it verifies: {why}", seq=seq, why=e.detail)}, None
    return {"file": str(path), "sha256": sha, "seq": seq, "leaf_hash": rc.leaf_hash,
            "tree_size": rc.receipt.tree_size,
            "skipped": said("already registered by {account} (seq {seq})", account=account,
                            seq=seq)}, rc


def _local_fingerprints(path: Path, size: int, media: str, query: bool = False
                        ) -> dict[str, Any]:
    """Perceptual fingerprints computed here, so the file need not leave this machine."""
    from copyledger.client import fingerprint_file

    timed = media.split("/", 1)[0] in ("audio", "video")
    show = timed and sys.stderr.isatty()
    try:
        with Progress(TextColumn(tr("fingerprinting {name}").format(name=path.name)),
                      BarColumn(), TextColumn(tr("{task.completed:.0f} s of media")), console=err,
                      disable=not show, transient=True) as prog:
            task = prog.add_task(tr("fingerprint"), total=None)
            return fingerprint_file(path, media,
                                    lambda s: prog.update(task, completed=s) if show else None,
                                    query=query)
    except CopyledgerError as e:
        err.print("[yellow]" + tr("{path}: no fingerprints ({why})").format(
            path=path, why=detail(e.detail)) + "[/yellow]")
        return {}


def _submit(
    send: Callable[[], Receipt], path: Path, sha: str, receipts: Path | None
) -> tuple[dict[str, Any], Receipt | None]:
    """Send one registration or deposit (its receipt is checked); a result row either way, and
    the verified receipt when there is one."""
    try:
        rc: Receipt | ProblemError | UnverifiedAnswer = send()
    except (ProblemError, UnverifiedAnswer) as e:
        rc = e
    except ClientError as e:
        _die_unanswered(e)
    res, verified = _answered(path, sha, rc)
    if receipts and verified is not None:
        receipts.mkdir(parents=True, exist_ok=True)
        (receipts / f"{verified.seq}.json").write_text(json.dumps(verified.to_dict(), indent=2))
    return res, verified


def _answered(path: Path, sha: str, answer: Receipt | ProblemError | UnverifiedAnswer
              ) -> tuple[dict[str, Any], Receipt | None]:
    """A file's result row, and its receipt when it verified."""
    if isinstance(answer, ProblemError):  # (`error` in the locale's words; the rest fixed)
        return {"file": str(path), "sha256": sha, "error": str(answer), "status": answer.status,
                "problem_type": answer.type}, None
    if isinstance(answer, UnverifiedAnswer):
        seq = answer.answer.get("seq") if isinstance(answer.answer, dict) else None
        return {"file": str(path), "sha256": sha, "seq": seq,
                "error": said("receipt does NOT verify: {why}", why=answer.detail)}, None
    return {"file": str(path), "sha256": sha, "seq": answer.seq, "leaf_hash": answer.leaf_hash,
            "tree_size": answer.receipt.tree_size}, answer


def _results_table(results: list[dict[str, Any]], ok_text: str) -> None:
    t = Table(*map(tr, ("file", "sha256", "seq", "result")))
    for res in results:
        t.add_row(res["file"], res["sha256"][:16] + "…", str(res.get("seq", "")),
                  detail(res.get("error", res.get("skipped", ok_text))))
    out.print(t)


def _verifiers(client: Client) -> bool:
    """Fetch the keys to check signatures with now: pinned ones, or (said so, False) the
    server's own."""
    try:
        client.verifiers()
    except ProblemError as e:
        _die(tr("cannot read the log's key from {url}: {why}").format(url=client.base_url,
                                                                       why=_told(e)))
    except ClientError as e:
        _die(_told(e))
    return client.key_pinned


@app.command()
def evidence(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    captured_at: Annotated[str, typer.Option(help="RFC 3339 capture time")],
    method: Annotated[str, typer.Option(help="capture method, e.g. screenshot, warc, "
                                              "browser-export")],
    description: Annotated[str, typer.Option(help="what the capture shows")],
    url: Annotated[str | None, typer.Option(help="source URL of the capture")] = None,
    related_work: Annotated[int | None, typer.Option(help="seq of the work concerned")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    receipts: Annotated[Path | None, typer.Option(help="directory to save receipts in")] = None,
    trust: Trust = None,
    as_json: Json = False,
    retries: Retries = 3,
    idempotency_key: IdempotencyKey = None,
) -> None:
    """Deposit evidence: the file is hashed here; a WARC file's response records are hashed
    and listed one by one, so each captured page can be checked on its own."""
    from copyledger.client.warc import warc_records

    if not api_key:
        _need_key()
    _, sha, size = _hash_files([file], show=not as_json and sys.stderr.isatty())[0]
    body: dict[str, Any] = {"sha256": sha, "size": size, "captured_at": captured_at,
                            "capture_method": method, "description": description}
    if url:
        body["source_url"] = url
    if related_work is not None:
        body["related_work"] = related_work
    if file.name.lower().endswith((".warc", ".warc.gz")):
        with _domain_errors_exit():
            body["warc_records"] = warc_records(file)
    with _client(server, api_key, trust, 60, retries=retries) as client:
        pinned = _verifiers(client)
        res, _ = _submit(lambda: client.deposit_evidence(idempotency_key=idempotency_key, **body),
                         file, sha, receipts)
    res["key_pinned"] = pinned
    res["warc_records"] = len(body.get("warc_records", []))
    if as_json:
        _emit(True, res)
    else:
        _results_table([res], tr("deposited, receipt verified")
                       + (tr(" ({n} WARC records)").format(n=res["warc_records"])
                          if res["warc_records"] else ""))
    if "error" in res:
        raise typer.Exit(1)


@app.command()
def lookup(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    server: Server = "http://127.0.0.1:8000",
    as_json: Json = False,
) -> None:
    """Every registration, deposit and transfer of this exact content, oldest first."""
    sha = _sha256_file(file)
    with _client(server, None, None, 30) as client:
        try:
            answer = client.search(sha)
        except ClientError as e:
            _die(_told(e))
    found = answer["results"]
    rows = [{"seq": x["seq"], "kind": x["entry"]["kind"], "registrant": x["entry"]["registrant"],
             "received_at": x["entry"]["received_at"], "block_height": x["block_height"],
             "bundle": f"{server}/v1/entries/{x['seq']}/bundle"} for x in found]
    if as_json:
        _emit(True, {"sha256": sha, "results": rows, "truncated": answer.get("truncated")})
        return
    if not rows:
        out.print(tr("no entry registers {sha256}").format(sha256=sha))
        return
    t = Table(*map(tr, ("seq", "kind", "registrant", "received at", "bundle")))
    for x in rows:
        t.add_row(str(x["seq"]), x["kind"], x["registrant"], x["received_at"], x["bundle"])
    out.print((tr("SHA-256 {sha256}: 1 entry") if len(rows) == 1 else
               tr("SHA-256 {sha256}: {n} entries, oldest first")).format(sha256=sha, n=len(rows)))
    out.print(t)


@app.command()
def whoami(
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Which account and role your API key acts for (its id and prefix, never the key)."""
    if not api_key:
        _die(tr("give an API key with --api-key or COPYLEDGER_API_KEY"))
    with _client(server, api_key, None, 30) as client:
        try:
            me = client.whoami()
        except ClientError as e:
            _die(_told(e))
    _emit(as_json, me, f"account [bold]{me['account']}[/bold], role {me['role']}; key "
          f"{me['key_id']} ({me['key_prefix']}…), created {me['created_at']}")


@app.command("check-claim")
def check_claim(
    claimant: Annotated[str, typer.Option(help="the claimant's account")],
    file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                              help="the disputed content")] = None,
    sha256: Annotated[str | None, typer.Option(help="or just its SHA-256")] = None,
    work_seq: Annotated[int | None, typer.Option(help="the claimed work's seq")] = None,
    work_sha256: Annotated[str | None, typer.Option(help="or its SHA-256")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """Check a takedown claim: registration, priority, holder, near-duplicate matches. The
    disputed file is fingerprinted here; only hashes are sent. The signed answer is verified."""
    if not api_key:
        _need_key()
    content: dict[str, Any] = {}
    if file is not None:
        from copyledger.cli.batch import hash_file
        from copyledger.client.media import media_type_of

        f = hash_file(file)
        content["sha256"] = f.sha256
        media = media_type_of(f.head, file.name)
        if media:
            content.update(_local_fingerprints(file, f.size, media, query=True))
    elif sha256:
        content["sha256"] = sha256
    with _client(server, api_key, trust, 60) as client:
        pinned = _verifiers(client)
        try:
            checked = client.check_claim(content, claimant=claimant, work_seq=work_seq,
                                         work_sha256=work_sha256 or None)
        except UnverifiedAnswer as e:
            _die(tr("the answer's signature does NOT verify: {why}").format(why=e.detail), 1)
        except ClientError as e:
            _die(_told(e))
    a = checked.to_dict()
    a["signature_verified"], a["key_pinned"] = True, pinned
    if as_json:
        _emit(True, a)
        return
    first = a["earliest_registration"]
    yes = {True: tr("yes"), False: tr("no")}
    out.print(tr("verdict: [bold]{verdict}[/bold]; work registered: {registered}; claimant is "
                "registrant: {is_registrant}, holder: {is_holder}").format(
        verdict=a["verdict"], registered=yes[a["work_registered"]],
        is_registrant=yes[a["claimant_is_registrant"]], is_holder=yes[a["claimant_is_holder"]]))
    if first:
        out.print(tr("earliest registration of this content: seq {seq} by {registrant} at "
                    "{when}").format(seq=first["seq"], registrant=first["registrant"],
                                     when=first["registered_at"]))
    if a["work_seq"] is not None:
        out.print(tr("work seq {seq}: holder {holder}").format(seq=a["work_seq"],
                                                               holder=a["holder"]))
    for c in a["claims"]:
        text = (tr("  claim seq {seq}: {type} ({regime}) by {registrant} at {when}, answering "
                  "{refers_to}") if c["refers_to"] is not None else
                tr("  claim seq {seq}: {type} ({regime}) by {registrant} at {when}"))
        out.print(text.format(seq=c["seq"], type=c["notice_type"], regime=c["regime"],
                              registrant=c["registrant"], when=c["received_at"],
                              refers_to=c["refers_to"]))
    if a["work_seq"] is not None and not a["claims"]:
        out.print(tr("  no claim on this work"))
    for m in a["matches"]:
        score = m.get("distance", m.get("similarity", m.get("inliers")))
        why = f": {m['explanation']}" if m.get("explanation") else ""
        out.print(tr("  seq {seq}: {algorithm} {score} (threshold {threshold}) → {verdict}")
                  .format(seq=m["seq"], algorithm=m["algorithm"], score=score,
                          threshold=m["threshold"], verdict=m["verdict"]) + why)
    for text in _caveats(a):
        out.print(f"[dim]• {text}[/dim]")


def _caveats(answer: dict[str, Any]) -> list[str]:
    """The caveats in the reader's language, from their codes (D50); the signed English text
    where a code is missing or unknown to this version."""
    from copyledger.cli.words import lang
    from copyledger.service.claims import caveat_text

    codes = answer.get("caveat_codes") or []
    texts = list(answer["caveats"])
    if len(codes) != len(texts):
        return texts
    return [caveat_text(code, lang()) or text for code, text in zip(codes, texts, strict=True)]


# ------------------------------------------------------------ transfers, chain of title, claims
# (issue #14: a command for each of the API's writes and reads)

TRANSFER_TYPES = ("assignment", "exclusive_licence", "non_exclusive_licence")


def _die_unanswered(e: ClientError) -> NoReturn:
    """A write that got no usable answer: it may have been recorded. Name the key it went
    under, so that running the command again with it is answered with what it recorded, if
    it did, rather than recording anew (D186)."""
    key = getattr(e, "idempotency_key", None)
    if key is None:
        _die(_told(e))
    _die(tr("{why} (it may have been recorded: it was sent under Idempotency-Key {key}; run "
            "the command again with --idempotency-key {key} to be answered with what it "
            "recorded)").format(why=_told(e), key=key))


def _write(client: Client, send: Callable[[], Receipt], what: str) -> tuple[Receipt, bool]:
    """Send one write whose receipt is verified; exit 1 on a refusal or a bad receipt."""
    pinned = _verifiers(client)
    try:
        return send(), pinned
    except ProblemError as e:
        _die(tr("{what} refused: {why}").format(what=what, why=_told(e)), 1)
    except UnverifiedAnswer as e:
        _die(tr("{what}: the receipt does NOT verify: {why}").format(what=what, why=e.detail), 1)
    except ClientError as e:
        _die_unanswered(e)


def _receipt_row(rc: Receipt, pinned: bool) -> dict[str, Any]:
    return {"seq": rc.seq, "leaf_hash": rc.leaf_hash, "block_height": rc.block_height,
            "tree_size": rc.receipt.tree_size, "receipt_verified": True, "key_pinned": pinned,
            "receipt": rc.to_dict()}


class _TransferGroup(TyperGroup):
    """`transfer WORK_SEQ ...` as it always was, next to `transfer accept|withdraw OFFER_SEQ`:
    arguments that do not start with a subcommand's name go to the hidden `record` command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["record", *args]
        return super().parse_args(ctx, args)


transfer_app = typer.Typer(
    cls=_TransferGroup, no_args_is_help=True,
    help="Transfer rights in a work you hold: `transfer WORK_SEQ --to ACCOUNT --type TYPE`. A "
    "licence is recorded at once; an assignment is an offer that ACCOUNT accepts with "
    "`transfer accept OFFER_SEQ` (you keep the work until then, and may `transfer withdraw "
    "OFFER_SEQ`, e.g. after a typo).")
app.add_typer(transfer_app, name="transfer")


@transfer_app.command("record", hidden=True)
def transfer(
    work_seq: Annotated[int, typer.Argument(min=0, help="the registered work's seq")],
    to: Annotated[str, typer.Option("--to", help="the receiving account (must exist)")],
    transfer_type: Annotated[str, typer.Option(
        "--type", help="assignment (an offer the recipient accepts), exclusive_licence or "
        "non_exclusive_licence")],
    territory: Annotated[str | None, typer.Option(help="default: worldwide")] = None,
    term_start: Annotated[str | None, typer.Option(help="RFC 3339 start of the term")] = None,
    term_end: Annotated[str | None, typer.Option(help="RFC 3339 end of the term")] = None,
    terms: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, readable=True,
        help="the signed contract: hashed here, only its SHA-256 is sent")] = None,
    note: Annotated[str | None, typer.Option(help="a short public note")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    trust: Trust = None,
    as_json: Json = False,
    retries: Retries = 3,
    idempotency_key: IdempotencyKey = None,
) -> None:
    """License a registered work you hold, or offer to assign it (the recipient accepts with
    `transfer accept`); the receipt is verified."""
    from copyledger.cli.batch import hash_file

    if not api_key:
        _need_key()
    if transfer_type not in TRANSFER_TYPES:
        _die(tr("--type: one of {choices}").format(choices=", ".join(TRANSFER_TYPES)))
    terms_sha = hash_file(terms).sha256 if terms is not None else None
    with _client(server, api_key, trust, 60, retries=retries) as client:
        rc, pinned = _write(client, partial(
            client.transfer, idempotency_key=idempotency_key, work_seq=work_seq, to=to,
            transfer_type=transfer_type,
            territory=territory, term_start=term_start, term_end=term_end,
            terms_sha256=terms_sha, note=note), "transfer")
    row = {**_receipt_row(rc, pinned), "work_seq": work_seq, "to": to,
           "transfer_type": transfer_type, "terms_sha256": terms_sha,
           "pending": transfer_type == "assignment"}
    if transfer_type == "assignment":
        human = tr("offer to assign work {work} to {to} recorded as seq {seq} (tree size "
                   "{size}); receipt verified. You hold the work until {to} accepts (copyledger "
                   "transfer accept {seq}); to take it back: copyledger transfer withdraw "
                   "{seq}").format(work=work_seq, to=to, seq=rc.seq, size=rc.receipt.tree_size)
    else:
        human = tr("{type} of work {work} to {to} recorded as seq {seq} (tree size {size}); "
                   "receipt verified").format(type=transfer_type, work=work_seq, to=to,
                                              seq=rc.seq, size=rc.receipt.tree_size)
    _emit(as_json, row, human)
    _pin_hint(as_json, pinned)


def _pin_hint(as_json: bool, pinned: bool) -> None:
    if not as_json and not pinned:
        err.print("[yellow]" + tr("receipt checked under the key the server itself published; "
                                  "pin the log's key with --trust") + "[/yellow]")


def _answer(offer_seq: int, what: str, note: str | None, server: str, api_key: str | None,
            trust: list[str] | None, as_json: bool) -> None:
    if not api_key:
        _need_key()
    with _client(server, api_key, trust, 60) as client:
        send = client.accept_offer if what == "accept" else client.withdraw_offer
        rc, pinned = _write(client, partial(send, offer_seq, note), what)
    work_seq = rc.to_dict()["entry"]["work"]["seq"]
    row = {**_receipt_row(rc, pinned), "offer": offer_seq, "work_seq": work_seq}
    done = (tr("offer {offer} accepted: you now hold work {work} (recorded as seq {seq}, tree "
               "size {size}); receipt verified") if what == "accept" else
            tr("offer {offer} withdrawn: you still hold work {work} (recorded as seq {seq}, "
               "tree size {size}); receipt verified"))
    _emit(as_json, row, done.format(offer=offer_seq, work=work_seq, seq=rc.seq,
                                    size=rc.receipt.tree_size))
    _pin_hint(as_json, pinned)


OfferSeq = Annotated[int, typer.Argument(min=0, help="the offer's seq (from `transfer` or "
                                                     "`history`)")]
AnswerNote = Annotated[str | None, typer.Option(help="a short public note")]


def _answer_command(what: str) -> Callable[..., None]:
    """The `transfer accept` or `transfer withdraw` command (same options, one verb)."""

    def command(
        offer_seq: OfferSeq,
        note: AnswerNote = None,
        server: Server = "http://127.0.0.1:8000",
        api_key: ApiKey = None,
        trust: Trust = None,
        as_json: Json = False,
    ) -> None:
        _answer(offer_seq, what, note, server, api_key, trust, as_json)

    return command


transfer_app.command("accept", help="Accept an offer of assignment made to your account: you "
                     "then hold the work.")(_answer_command("accept"))
transfer_app.command("withdraw", help="Withdraw an offer of assignment you made that no one has "
                     "accepted: you keep the work.")(_answer_command("withdraw"))


@app.command()
def history(
    work_seq: Annotated[int, typer.Argument(min=0, help="the registered work's seq")],
    server: Server = "http://127.0.0.1:8000",
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """A work's chain of title: who holds it, its licences, and every link, each one's
    inclusion proof checked against the log's signed checkpoint."""
    with _client(server, None, trust, 30) as client:
        try:
            h = client.history(work_seq)
        except UnverifiedAnswer as e:
            _die(tr("the chain of title does NOT verify: {why}").format(why=e.detail), 1)
        except ClientError as e:
            _die(_told(e))
        pinned = client.key_pinned
    if as_json:
        _emit(True, {**h, "verified": True, "key_pinned": pinned})
        return
    out.print(tr("work {work}: registered by {registrant}; holder [bold]{holder}[/bold]").format(
        work=work_seq, registrant=h["registrant"], holder=h["holder"]))
    for li in h["licences"]:
        out.print("  " + tr("licence seq {seq}: {type} to {to}").format(
            seq=li["seq"], type=li["transfer_type"], to=li["to"]))
    pending = h.get("pending_offer")
    if pending:
        out.print("  [yellow]" + tr(
            "pending offer seq {seq}: assignment to {to}, awaiting acceptance (copyledger "
            "transfer accept {seq}); {holder} holds the work until then").format(
                seq=pending["seq"], to=pending["to"], holder=pending["from"]) + "[/yellow]")
    t = Table(*map(tr, ("seq", "kind", "what", "holder after", "received at")))
    for link in h["links"]:
        t.add_row(str(link["seq"]), link["kind"], _link_text(link["kind"], link["entry"]),
                  link["holder_after"], link["entry"]["received_at"])
    out.print(t)
    out.print(tr("{n} link(s), each proof verified against the signed checkpoint of tree size "
                 "{size}").format(n=len(h["links"]), size=h["tree_size"])
              + ("" if pinned else tr(" (under the server's own key: pin with --trust)")))


def _link_text(kind: str, ent: dict[str, Any]) -> str:
    """One link of a chain of title in words."""
    if kind == "transfer":
        text = tr("{type} to {to} (offer)") if ent.get("needs_acceptance") else tr("{type} to {to}")
        return text.format(type=ent["transfer_type"], to=ent["to"])
    if kind == "acceptance":
        return tr("offer {offer} accepted by {account}").format(offer=ent["offer"],
                                                                account=ent["registrant"])
    if kind == "withdrawal":
        return tr("offer {offer} withdrawn by {account}").format(offer=ent["offer"],
                                                                 account=ent["registrant"])
    return tr("registered by {account}").format(account=ent["registrant"])


claim_app = typer.Typer(help="Takedown notices and counter-notices.", no_args_is_help=True)
app.add_typer(claim_app, name="claim")

ClaimFrom = Annotated[Path | None, typer.Option(
    "--from", exists=True, dir_okay=False, readable=True,
    help="a JSON file with the notice body; the options below add to or replace its fields")]
Regime = Annotated[str | None, typer.Option(
    help="dmca_512c3, eu_dsa_art16, cn_ecommerce_art42 or cn_indr_art14")]
Opt = Annotated[str | None, typer.Option()]
Many = Annotated[list[str] | None, typer.Option()]
STATEMENTS = ("good_faith", "accuracy", "perjury", "mistake", "jurisdiction_consent")


def _claim_body(notice_type: str, source: Path | None, fields: dict[str, Any]) -> dict[str, Any]:
    """The POST /v1/claims document: the `--from` file's body, then each option given."""
    body: dict[str, Any] = {}
    if source is not None:
        try:
            body = json.loads(source.read_text())
        except ValueError as e:
            _die("--from " + tr("{path}: not JSON ({why})").format(path=source, why=e))
        if not isinstance(body, dict):
            _die("--from " + tr("{path}: not a JSON object").format(path=source))
    body["notice_type"] = notice_type
    claimant = dict(body.get("claimant") or {})
    for k in ("name", "email", "phone", "address", "authority", "account"):
        if fields.get(f"claimant_{k}") is not None:
            claimant[k] = fields[f"claimant_{k}"]
    body["claimant"] = claimant
    works = [{"seq": s} for s in fields["work"] or []]
    works += [{"sha256": s} for s in fields["work_sha256"] or []]
    if works:
        body["works"] = works
    if fields["target"]:
        body["targets"] = [{"url": u} for u in fields["target"]]
    statements = dict(body.get("statements") or {})
    for st in fields["statement"] or []:
        if st not in STATEMENTS:
            _die(tr("--statement: one of {choices}").format(choices=", ".join(STATEMENTS)))
        statements[st] = True
    if statements:
        body["statements"] = statements
    for k in ("regime", "refers_to", "substantiation", "signature"):
        if fields.get(k) is not None:
            body[k] = fields[k]
    if fields.get("action") is not None:
        body["requested_action"] = fields["action"]
    if "regime" not in body:
        _die(tr("--regime (or a `regime` in the --from file) is needed"))
    return body


def _file_claim(notice_type: str, source: Path | None, fields: dict[str, Any],
                server: str, api_key: str | None, trust: list[str] | None,
                as_json: bool, retries: int, idempotency_key: str | None) -> None:
    if not api_key:
        _need_key()
    body = _claim_body(notice_type, source, fields)
    kind = notice_type.replace("_", "-")
    with _client(server, api_key, trust, 60, retries=retries) as client:
        rc, pinned = _write(client, partial(client.file_claim, body,
                                            idempotency_key=idempotency_key), kind)
        row = _receipt_row(rc, pinned)
        try:
            contact = _contact(client, rc.seq, rc.entry.to_dict())  # the filer: allowed
            failed = None
        except typer.Exit as e:  # the claim is recorded: its receipt is shown all the same
            contact, failed = None, e
    if contact is not None:
        row["contact"] = contact
    if failed is not None:
        row["contact_checked"] = False
    _emit(as_json, row, tr("{kind} ({regime}) recorded as seq {seq} (tree size {size}); "
                           "receipt verified").format(kind=kind, regime=body["regime"],
                                                      seq=rc.seq, size=rc.receipt.tree_size))
    if contact is not None and not as_json:
        _print_contact(contact)
    if failed is not None:  # (its message is on stderr already)
        raise failed


def _contact(client: Client, seq: int, claim: dict[str, Any]) -> dict[str, Any] | None:
    """The claimant's contact details kept off the log, if this key may see them (D32),
    checked to open the commitment in the logged claim; None if there are none to see."""
    logged = claim.get("claimant", {}).get("contact_commitment")
    if logged is None:
        return None
    try:
        d = client.claim_contact(seq)
    except ProblemError as e:
        if e.status in (403, 404):
            return None
        _die(_told(e))
    except UnverifiedAnswer as e:
        _die(tr("the contact details do NOT open their commitment: {why}").format(
            why=e.detail), 1)
    except ClientError as e:
        _die(_told(e))
    if not d.opens(logged):
        _die(tr("the contact details do NOT open the commitment logged in claim {seq}").format(
            seq=seq), 1)
    return d.to_dict()


def _print_contact(d: dict[str, Any]) -> None:
    out.print(tr("contact details (kept off the log; the salt proves them against its "
                 "commitment {commitment}…):").format(commitment=d["commitment"][:16]))
    for k, v in d["contact"].items():
        out.print(f"  {k}: {v}")
    out.print("  " + tr("salt") + f": {d['salt']}")


@claim_app.command("notice")
def claim_notice(
    source: ClaimFrom = None,
    regime: Regime = None,
    claimant_name: Opt = None,
    claimant_email: Opt = None,
    claimant_phone: Opt = None,
    claimant_address: Opt = None,
    authority: Annotated[str | None, typer.Option(
        help="owner, exclusive_licensee or agent")] = None,
    claimant_account: Annotated[str | None, typer.Option(
        help="the claimant's account in this registry")] = None,
    work: Annotated[list[int] | None, typer.Option(
        "--work", help="seq of a claimed work (repeatable)")] = None,
    work_sha256: Annotated[list[str] | None, typer.Option(
        "--work-sha256", help="or its SHA-256 (repeatable)")] = None,
    target: Annotated[list[str] | None, typer.Option(
        "--target", help="URL of the infringing material (repeatable)")] = None,
    substantiation: Annotated[str | None, typer.Option(help="why it infringes")] = None,
    statement: Annotated[list[str] | None, typer.Option(
        "--statement", help="a statement made, e.g. good_faith, accuracy, perjury "
        "(repeatable)")] = None,
    action: Annotated[str | None, typer.Option(
        help="remove, disable_access, restore or other")] = None,
    signature: Annotated[str | None, typer.Option(help="e.g. /Ada Example/")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    trust: Trust = None,
    as_json: Json = False,
    retries: Retries = 3,
    idempotency_key: IdempotencyKey = None,
) -> None:
    """Record a takedown notice. The server refuses one that lacks what its regime requires,
    naming the missing fields."""
    _file_claim("notice", source, {
        "regime": regime, "claimant_name": claimant_name, "claimant_email": claimant_email,
        "claimant_phone": claimant_phone, "claimant_address": claimant_address,
        "claimant_authority": authority, "claimant_account": claimant_account, "work": work,
        "work_sha256": work_sha256, "target": target, "substantiation": substantiation,
        "statement": statement, "action": action, "signature": signature,
    }, server, api_key, trust, as_json, retries, idempotency_key)


@claim_app.command("counter")
def claim_counter(
    refers_to: Annotated[int, typer.Option(min=0, help="the notice's seq")],
    source: ClaimFrom = None,
    regime: Regime = None,
    claimant_name: Opt = None,
    claimant_email: Opt = None,
    claimant_phone: Opt = None,
    claimant_address: Opt = None,
    claimant_account: Annotated[str | None, typer.Option(
        help="the claimant's account in this registry")] = None,
    target: Annotated[list[str] | None, typer.Option(
        "--target", help="URL of the material removed (repeatable)")] = None,
    substantiation: Annotated[str | None, typer.Option(help="why it does not infringe")] = None,
    statement: Annotated[list[str] | None, typer.Option(
        "--statement", help="a statement made, e.g. mistake, perjury, jurisdiction_consent "
        "(repeatable)")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. restore")] = None,
    signature: Annotated[str | None, typer.Option(help="e.g. /Bo Example/")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    trust: Trust = None,
    as_json: Json = False,
    retries: Retries = 3,
    idempotency_key: IdempotencyKey = None,
) -> None:
    """Record a counter-notice answering a notice (its regime's requirements are checked)."""
    _file_claim("counter_notice", source, {
        "regime": regime, "refers_to": refers_to, "claimant_name": claimant_name,
        "claimant_email": claimant_email, "claimant_phone": claimant_phone,
        "claimant_address": claimant_address, "claimant_account": claimant_account,
        "work": None, "work_sha256": None, "target": target,
        "substantiation": substantiation, "statement": statement, "action": action,
        "signature": signature,
    }, server, api_key, trust, as_json, retries, idempotency_key)


@claim_app.command("show")
def claim_show(
    seq: Annotated[int, typer.Argument(min=0, help="a notice's or counter-notice's seq")],
    server: Server = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="the filing platform's or an admin key: also show the claimant's "
        "contact details, which the log does not hold")] = None,
    as_json: Json = False,
) -> None:
    """A claim and its timeline: the notice and every counter-notice answering it."""
    with _client(server, api_key, None, 30) as client:
        try:
            c = client.claim(seq)
        except ClientError as e:
            _die(_told(e))
        contact = _contact(client, seq, c["entry"]) if api_key else None
    if contact is not None:
        c["contact"] = contact
    if as_json:
        _emit(True, c)
        return
    ent = c["entry"]
    works = ", ".join(str(w.get("seq", w.get("sha256"))) for w in ent.get("works") or []) or "-"
    out.print(f"claim {seq}: {ent['notice_type']} ({ent['regime']}) by {ent['claimant']['name']}, "
              f"works {works}")
    t = Table(*map(tr, ("seq", "type", "regime", "claimant", "registrant",
                   "received at")))
    for x in c["timeline"]:
        t.add_row(str(x["seq"]), x["notice_type"], x["regime"], x["claimant"], x["registrant"],
                  x["received_at"])
    out.print(t)
    if contact is not None:
        _print_contact(contact)


@claim_app.command("erase-contact")
def claim_erase_contact(
    seq: Annotated[int, typer.Argument(min=0, help="the claim's seq")],
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Erase a claimant's contact details (an admin's act, on the registry's own database).
    The log keeps the commitment and stays verifiable; claims logged before the details were
    kept off the log cannot be changed."""
    from copyledger.service.admin import erase_claim_contact

    with _domain_errors_exit():
        done = erase_claim_contact(_settings(data_dir, database), seq)
    _emit(as_json, done, tr("contact details of claim {seq} erased; the log keeps the "
                            "commitment {commitment}…").format(
                                seq=seq, commitment=done["commitment"][:16]))


@app.command()
def proof(
    seq: Annotated[int, typer.Argument(min=0)],
    tree_size: Annotated[int | None, typer.Option(help="default: the latest")] = None,
    server: Server = "http://127.0.0.1:8000",
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """Fetch an entry's inclusion proof and check it against the log's signed checkpoint."""
    with _client(server, None, trust, 30) as client:
        try:
            checked = client.proof(seq, tree_size)
        except UnverifiedAnswer as e:
            _die(tr("proof does NOT verify: {why}").format(why=e.detail), 1)
        except ClientError as e:
            _die(_told(e))
    p = checked.to_dict()
    p["key_pinned"] = client.key_pinned
    if not checked.checkpoint_verified:
        # The path leads only to the root the server stated: with no checkpoint the log
        # signed at that size, nothing is verified.
        p["verified"] = p["checkpoint_verified"] = False
        _emit(as_json, p)
        _die(tr("proof does NOT verify: no checkpoint the log signed at tree size {size} came "
                "with it, so its root is only the server's word").format(size=p["tree_size"]),
             1)
    p["verified"] = p["checkpoint_verified"] = True
    _emit(as_json, p, tr("seq {seq} is included in the tree of size {size} (root {root}…): "
                         "proof of {n} hashes verified; checkpoint signature verified").format(
                             seq=seq, size=p["tree_size"], root=p["root"][:16], n=len(p["proof"])))


@app.command()
def audit(
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
    incremental: Annotated[bool, typer.Option(
        "--incremental",
        help="check only what was appended since the last clean audit of this data directory "
             "(its head must be unchanged); everything, if there was none")] = False,
    workers: Annotated[int | None, typer.Option(
        min=1, help="processes that share the checks (default: one per CPU)")] = None,
) -> None:
    """Recompute every hash, node, block link, root and signature from the database."""
    from copyledger.service.admin import audit_registry

    show = not as_json and sys.stderr.isatty()
    with Progress(TextColumn("auditing"), BarColumn(), TextColumn("{task.completed} entries"),
                  console=err, disable=not show, transient=True) as prog:
        task = prog.add_task(tr("audit"), total=None)
        with _domain_errors_exit():
            rep = audit_registry(_settings(data_dir, database),
                                 on_start=lambda total: prog.update(task, total=total),
                                 progress=lambda n: prog.advance(task, n),
                                 workers=workers, incremental=incremental)
    obj = {k: getattr(rep, k) for k in ("ok", "entries", "blocks", "nodes", "tree_size", "root",
                                        "problem", "bad_seq", "bad_height", "checked",
                                        "resumed_from")}
    if rep.ok:
        checks = "\n".join(f"  ✓ {detail(c)}" for c in rep.checked)
        _emit(as_json, obj, "[green]" + tr("audit OK") + "[/green]\n" + checks)
    else:
        where = (f"seq {rep.bad_seq}" if rep.bad_seq is not None else
                 tr("block {height}").format(height=rep.bad_height)
                 if rep.bad_height is not None else tr("log"))
        _emit(as_json, obj, "[red]" + tr("audit FAILED") + "[/red] " + tr("at {where}: {why}")
              .format(where=where, why=detail(rep.problem or "")))
        raise typer.Exit(1)


@db_app.command("copy")
def db_copy(
    to: Annotated[str, typer.Option(
        "--to", help="the new database, an empty PostgreSQL one: "
                     "postgresql://user@host/db (psycopg) or any SQLAlchemy URL of it")],
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Copy the registry's SQLite database into an empty PostgreSQL database, row for row.

    Nothing may be writing to the registry meanwhile: stop its server first (the copy takes
    the sequencer's lock, and SQLite's write lock: `keys` and `accounts` commands wait, then
    fail with "database is locked", until it ends). The copy is checked (row counts, the
    latest checkpoint) before it is committed; `copyledger audit` on the new database is the
    full check.
    """
    from copyledger.service.dbcopy import copy_database, count_rows

    s = _settings(data_dir, database)
    show = not as_json and sys.stderr.isatty()
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} rows"), TimeRemainingColumn(),
                  console=err, disable=not show, transient=True) as prog:
        task = prog.add_task(tr("copying"), total=None)
        with _domain_errors_exit():
            if show:
                prog.update(task, total=count_rows(s.database_url))
            rep = copy_database(s.database_url, to, progress=lambda table, n: prog.update(
                task, advance=n, description=table))
    obj = rep.to_dict()
    lines = "\n".join(f"  {t}: {n}" for t, n in rep.tables.items())
    _emit(as_json, obj, "[green]" + tr("copied {rows} rows, and the copy checked (row counts, "
                                       "the latest checkpoint)").format(rows=rep.rows)
          + "[/green]\n" + lines + "\n" + tr("next: run `copyledger audit --database URL` on "
                                             "the copy (the full check), then set database = "
                                             "URL in config.toml and start the server"))
    if rep.analyze_error and not as_json:  # in the JSON as analyze_error
        from rich.markup import escape

        err.print("[yellow]" + tr("warning: the copy is committed, but ANALYZE failed on it "
                                  "({error}): run ANALYZE on the new database")
                  .format(error=escape(rep.analyze_error)) + "[/yellow]")


@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Bring the registry's database schema to this release's revision.

    A server of this release does the same when it starts. Until then, the commands that
    manage the registry (keys, accounts, claim contacts, key rotation, the hand-over
    secret) refuse an older schema; the audit and exports read older ones too (from
    revision 0004).
    """
    from copyledger.service.node import upgrade_schema

    with _domain_errors_exit():
        was, now = upgrade_schema(_settings(data_dir, database))
    _emit(as_json, {"from": was, "to": now, "upgraded": was != now},
          tr("schema upgraded from revision {was} to {now}").format(was=was, now=now)
          if was != now else tr("schema already at revision {now}").format(now=now))


@db_app.command("forget-handoff-secret")
def db_forget_handoff_secret(
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Forget which hand-over secret the registry's hosts share (several hosts, D113).

    The first process to take the log's lock with a network hand-over records a check of its
    secret, and a process with another secret never sequences. To change the secret on every
    host: stop them all, run this, and start them with the new secret; the first to take the
    lock records it. Refused while any process sequences.
    """
    from copyledger.service.admin import forget_handoff_secret

    with _domain_errors_exit():
        since = forget_handoff_secret(_settings(data_dir, database))
    _emit(as_json, {"forgotten": since is not None, "since": since},
          tr("the hand-over secret recorded {since} is forgotten; the next host to sequence "
             "records its own").format(since=since) if since is not None else
          tr("no hand-over secret was recorded"))


@tiles_app.command("export")
def tiles_export(
    directory: Annotated[Path, typer.Argument(help="where to write checkpoint and tile/…")],
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Write the log as static C2SP tlog-tiles files, serveable by any web server or bucket.

    Incremental: a second run writes only the tiles completed since, the current partial tiles
    and the checkpoint (last); a full tile is never rewritten.
    """
    from copyledger.service.tiles import export_registry

    show = not as_json and sys.stderr.isatty()
    with Progress(TextColumn("exporting"), BarColumn(), TextColumn("{task.completed}/{task.total}"
                  " files"), console=err, disable=not show, transient=True) as prog:
        task = prog.add_task(tr("export"), total=None)
        with _domain_errors_exit():
            rep = export_registry(_settings(data_dir, database), directory,
                                  on_start=lambda total: prog.update(task, total=total),
                                  progress=lambda n: prog.advance(task, n))
    obj = {k: getattr(rep, k) for k in ("directory", "tree_size", "previous_size", "files",
                                        "bytes", "tiles", "bundles", "checkpoint", "skipped")}
    text = (tr("tree of {size} leaves in [bold]{dir}[/bold] (was {was}): {files} files written "
               "({tiles} tiles, {bundles} entry bundles, checkpoint), {bytes} bytes")
            if rep.checkpoint else
            tr("tree of {size} leaves in [bold]{dir}[/bold] (was {was}): {files} files written "
               "({tiles} tiles, {bundles} entry bundles), {bytes} bytes"))
    _emit(as_json, obj, text.format(size=rep.tree_size, dir=rep.directory, was=rep.previous_size,
                                    files=rep.files, tiles=rep.tiles, bundles=rep.bundles,
                                    bytes=rep.bytes))


@app.command()
def bundle(
    output: Annotated[Path, typer.Option("-o", "--output", help="where to save the bundle")],
    seq: Annotated[int | None, typer.Argument(min=0, metavar="SEQ")] = None,
    tlog_proof: Annotated[Path | None, typer.Option(
        help="also save the C2SP tlog-proof text form here")] = None,
    refresh: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="instead of SEQ: a saved bundle, to which the log's "
        "latest witnessed checkpoint and the consistency proof to it are added")] = None,
    trust: Annotated[list[str] | None, typer.Option(
        help="a trusted log verifier key (name+id+key); repeatable")] = None,
    server: Server = "http://127.0.0.1:8000",
) -> None:
    """Save an entry's evidence bundle (verify it offline with `copyledger verify`), or, with
    --refresh, bring a saved bundle's witnessed checkpoint up to date."""
    if (seq is None) == (refresh is None):
        _die(tr("give either SEQ or --refresh BUNDLE"))
    with _client(server, None, trust, 30) as client:
        try:
            if refresh is not None:
                doc = client.refresh_bundle(json.loads(refresh.read_text()))
            else:
                doc = client.bundle(int(str(seq)))
        except UnverifiedAnswer as e:  # (before ValueError: a bad signature is no bad JSON)
            _die(tr("the bundle does NOT verify: {why}").format(why=e.detail), 1)
        except ClientError as e:
            _die(_told(e))
        except ValueError as e:
            _die(tr("{path}: not JSON ({why})").format(path=refresh, why=e))
    output.write_text(json.dumps(doc, indent=2) + "\n")
    if tlog_proof is not None:
        text = doc.get("tlog_proof")
        if not isinstance(text, str):
            _die(tr("the bundle carries no tlog-proof to write to {path}").format(
                path=tlog_proof))
        tlog_proof.write_text(text)
    if refresh is not None:
        err.print(tr("bundle {path} refreshed with the latest witnessed checkpoint, saved to "
                     "{output}").format(path=refresh, output=output))
    else:
        err.print(tr("bundle for seq {seq} saved to {output}").format(seq=seq, output=output))


def _sm_suite(client: Any) -> bool:
    """True if the registry was created with the SM suite: its works record SM3 too (D40)."""
    try:
        return bool(client.log().get("crypto_suite") == "sm")
    except ClientError:
        return False  # no block yet, or an older server: the standard suite


def _sha256_file(path: Path) -> str:
    return _hash_files([path], show=sys.stderr.isatty())[0][1]


@app.command()
def verify(
    bundle_file: Annotated[Path, typer.Argument(metavar="BUNDLE", exists=True, dir_okay=False)],
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False,
                                                help="the exhibit file to check")] = None,
    trust: Annotated[list[str] | None, typer.Option(
        help="a trusted log verifier key (name+id+key), Ed25519 or an SM-suite log's SM2 "
        "key; repeatable")] = None,
    trust_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="file of trusted verifier keys, one per line")] = None,
    tsa_roots: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="PEM file of trusted TSA root certificates")] = None,
    sm2_tsa_roots: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="PEM file of trusted SM2 TSA root certificates (an SM-suite log's SM2/SM3 "
        "time-stamps)")] = None,
    sm2_tsa_retired: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="JSON of the SM2 TSA certificates a rotation retired, to pin rather than take "
        "from the bundle: the registry's /v1/notary/keys answer, or its sm2_tsa_retired "
        "list")] = None,
    allow_unpinned: Annotated[bool, typer.Option(
        help="accept a bundle checked only against the log key it carries itself")] = False,
    witness: Annotated[list[str] | None, typer.Option(
        help="a trusted witness's cosignature vkey (name+id+key); repeatable")] = None,
    quorum: Annotated[int, typer.Option(
        help="how many of the --witness keys must have cosigned", min=1)] = 1,
    as_json: Json = False,
) -> None:
    """Verify an evidence bundle offline, step by step. Exit 0 only if every step holds under a
    log key you pinned (--trust or --trust-file); 1 if a step fails; 3 if every step holds but
    no key was pinned, so nothing ties the bundle to a log you know (unless --allow-unpinned).
    With --witness, the bundle must also carry a later checkpoint cosigned by --quorum of them."""
    from rich.markup import escape

    from copyledger.ledger import sm2
    from copyledger.ledger.verify import Status, pinned_sm2_tsa_retired, verify_bundle

    keys = list(trust or [])
    if trust_file is not None:
        keys += [ln.strip() for ln in trust_file.read_text().splitlines() if ln.strip()]
    raw = bundle_file.read_bytes()
    retired = None
    if sm2_tsa_retired is not None:
        try:
            pinned = json.loads(sm2_tsa_retired.read_bytes())
        except ValueError as e:
            _die(tr("{path}: not JSON ({why})").format(path=sm2_tsa_retired, why=e))
        with _domain_errors_exit():
            retired = pinned_sm2_tsa_retired(pinned)
    file_sm3 = None
    if file is not None and b'"sm3"' in raw:  # an SM-suite entry: check the file's SM3 too
        with file.open("rb") as f:
            file_sm3 = sm2.sm3_file(f)
    rep = verify_bundle(
        raw,  # read strictly: a duplicate member fails the format step
        file_sha256=_sha256_file(file) if file is not None else None,
        trusted_keys=[k for k in keys if not sm2.is_verifier_key(k)],
        tsa_roots_pem=tsa_roots.read_bytes() if tsa_roots is not None else None,
        witness_keys=list(witness or []),
        quorum=quorum,
        sm2_keys=[k for k in keys if sm2.is_verifier_key(k)],
        file_sm3=file_sm3,
        sm2_tsa_roots_pem=sm2_tsa_roots.read_bytes() if sm2_tsa_roots is not None else None,
        sm2_tsa_retired=retired,
    )
    if as_json:
        _emit(True, rep.to_json())
    else:
        marks = {Status.PASSED: "[green]✓[/green]", Status.FAILED: "[red]✗[/red]",
                 Status.SKIPPED: "[yellow]–[/yellow]", Status.NOT_CHECKED: "[dim]·[/dim]"}
        for st in rep.steps:
            why = f"\n    {escape(detail(st.detail))}" if st.detail else ""  # bundle text: plain
            out.print(f"{marks[st.status]} {tr(st.title)}{why}")
        for line in _trust_lines(rep.stated_facts):
            out.print(line, markup=False, soft_wrap=True)
        if rep.ok and rep.trust == "pinned":
            out.print(tr("[green bold]VERIFIED[/green bold]"))
        elif rep.ok:
            out.print(tr("[yellow bold]CONSISTENT, NOT TIED TO A KNOWN LOG[/yellow bold]: the "
                         "bundle was checked only against the log key it carries itself, so any "
                         "log could have produced it; pin the registry's published key with "
                         "--trust"))
        else:
            failed = rep.failed
            out.print(tr("[red bold]NOT VERIFIED[/red bold]: step '{step}' failed").format(
                step=failed.name if failed else "?"))
    if not rep.ok:
        raise typer.Exit(1)
    if rep.trust != "pinned" and not allow_unpinned:
        raise typer.Exit(UNPINNED_EXIT)


def _trust_lines(facts: dict[str, Any]) -> list[str]:
    """What the checks rested on: the trust anchors (pinned or taken from the bundle, with full
    SHA-256 fingerprints) and which time sources are independent of the operator."""
    lines = []
    how = {True: tr("pinned"), False: tr("taken from the bundle, NOT pinned")}
    for k in facts.get("log_keys", []):
        lines.append(tr("log key ({how}): {key}").format(how=how[bool(k["pinned"])],
                                                         key=k["verifier_key"])
                     + f"\n    SHA-256 {k['sha256']}")
    for k in facts.get("sm2_keys", []):
        lines.append(tr("SM2 key ({how}): {key}").format(how=how[bool(k["pinned"])],
                                                         key=k["verifier_key"])
                     + f"\n    SHA-256 {k['sha256']}")
    for r in facts.get("tsa_roots", []):
        lines.append(tr("TSA root ({how}): {subject}").format(how=how[bool(r["pinned"])],
                                                              subject=r["subject"])
                     + f"\n    SHA-256 {r['sha256']}")
    for r in facts.get("sm2_tsa_roots", []):
        lines.append(tr("SM2 TSA root ({how})").format(how=how[bool(r["pinned"])])
                     + f": SHA-256 {r['sha256']}")
    if "sm2_tsa_retired" in facts:  # the retirement list the sm2 step held tokens to (D64)
        retired = facts["sm2_tsa_retired"]
        lines.append(tr("SM2 TSA retirement list ({how}): {n} retired certificate(s)").format(
            how=how[bool(retired["pinned"])], n=len(retired["retired"]))
            + "".join(f"\n    SM3 {r['certificate_sm3']} {r['retired_at']}"
                      + ("" if r["pinned"] else f" ({how[False]})") for r in retired["retired"]))
        if not retired["pinned"]:
            lines.append(tr("a bundle that leaves out a retired SM2 TSA certificate escapes this "
                            "check: pin the registry's list with --sm2-tsa-retired"))
    if "time_sources" in facts:
        independent = [t for t in facts["time_sources"] if t["independent"]]
        at = tr("{tsa} at {when}")
        lines.append(tr("time sources independent of the operator: {sources}").format(
            sources="; ".join(at.format(tsa=t["tsa_certificate"], when=t["gen_time"])
                              for t in independent) or tr("none")))
    if "title_chain" in facts:  # set only by a title step that held
        t = facts["title_chain"]
        lines.append(tr("holder (verified chain of title of work {seq}, as of tree size "
                        "{size}): {holder}").format(seq=t["work_seq"], size=t["tree_size"],
                                                    holder=t["holder"]))
    return lines


@notary_app.command("init")
def notary_init(
    data_dir: DataDir = None,
    origin: Annotated[str | None, typer.Option(help="the log origin it will sign for")] = None,
    suite: Annotated[str | None, typer.Option(
        "--suite", help="crypto suite of the log it signs for, fixed at init: standard, or sm "
        "(it also holds the SM2 note key and the SM2 TSA)")] = None,
    as_json: Json = False,
) -> None:
    """Create the notary's keys (log key and TSA chain) in its own data directory."""
    from copyledger.service.node import init_notary_dir

    s = _settings(data_dir, None, origin=origin, crypto_suite=suite)
    with _domain_errors_exit():
        created, vkey = init_notary_dir(s)
    sm2_vkey = s.sm2_verifier_key_path.read_text().strip() if s.sm_suite else None
    _emit(as_json, {"data_dir": str(s.data_dir), "origin": s.origin, "verifier_key": vkey,
                    "created_key": created,
                    **({"crypto_suite": s.crypto_suite, "sm2_verifier_key": sm2_vkey}
                       if sm2_vkey else {})},
          tr("notary keys in {data_dir}").format(data_dir=s.data_dir) + f"\n{vkey}"
          + (f"\n{sm2_vkey}" if sm2_vkey else ""))


@notary_app.command("rotate")
def notary_rotate(
    data_dir: DataDir = None,
    database: Database = None,
    overlap_hours: Annotated[float, typer.Option(
        help="how long the old key keeps co-signing checkpoints")] = 168.0,
    as_json: Json = False,
) -> None:
    """Rotate the log key and the TSA certificate (with the server stopped). The rotation is
    recorded in the ledger, in a block signed by both keys."""
    from datetime import timedelta

    from copyledger.service.operations import rotate_keys

    s = _settings(data_dir, database)
    with _domain_errors_exit():
        r = rotate_keys(s, overlap=timedelta(hours=overlap_hours))
    _emit(as_json, r.to_dict(),
          tr("rotated: new key {key}").format(key=r.new_verifier_key) + "\n"
          + tr("old key co-signs until {until}; recorded as entry {seq}").format(
              until=r.overlap_until, seq=r.seq))


def _private_socket(path: str) -> int:
    """A Unix socket bound at `path` that only this user may connect to from the moment it
    exists (bound under umask 0177: mode 0600); its descriptor, for uvicorn's `fd=`.

    uvicorn's own `uds=` makes the socket 0666 after binding it, and a chmod of ours after
    that raced with it: on a loaded machine the socket could stay 0666."""
    import socket

    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    return sock.detach()


@notary_app.command("serve")
def notary_serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8100,
    uds: Annotated[str | None, typer.Option(help="serve on this Unix socket instead")] = None,
) -> None:
    """Run the stand-alone notary; clients authenticate with COPYLEDGER_NOTARY_TOKEN."""
    import uvicorn

    from copyledger.api.logs import configure
    from copyledger.api.notary_app import create_notary_app
    from copyledger.service.node import load_sm2_signer, load_sm2_tsa_authority, open_notary

    s = _settings(data_dir, None)
    configure(s.log_level, s.log_json)
    token = os.environ.get(s.notary_token_env, "")
    with _domain_errors_exit():
        signer, tsa, checkpoints = open_notary(s)
        app_ = create_notary_app(signer, tsa, token, checkpoints=checkpoints,
                                 sm2_signer=load_sm2_signer(s),
                                 sm2_tsa=load_sm2_tsa_authority(s))
    where = f"unix:{uds}" if uds else f"http://{host}:{port}"
    err.print(tr("copyledger notary for {origin} on {where}").format(origin=s.origin,
                                                                      where=where))
    if uds:
        uvicorn.run(app_, fd=_private_socket(uds), log_level="warning", access_log=False)
    else:
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


WitnessDir = Annotated[
    Path, typer.Option("--data-dir", envvar="COPYLEDGER_WITNESS_DIR",
                       help="the witness's data directory (key, logs, cosigned checkpoints)"),
]


@witness_app.command("init")
def witness_init(
    data_dir: WitnessDir,
    name: Annotated[str | None, typer.Option(
        help="the witness's key name, e.g. witness.example/w1 (fixed at the first init)")] = None,
    log: Annotated[list[str] | None, typer.Option(
        "--log", help="a log's verifier key to follow (its name is the log's origin); "
        "repeat for more logs or keys")] = None,
    as_json: Json = False,
) -> None:
    """Create the witness key (mode 0600) and add logs to follow; prints its verifier key."""
    from copyledger.service.witness import init_witness_dir

    with _domain_errors_exit():
        created, vkey = init_witness_dir(data_dir, name, log or [])
    _emit(as_json, {"data_dir": str(data_dir), "verifier_key": vkey, "created_key": created},
          tr("witness in {data_dir}").format(data_dir=data_dir) + f"\n{vkey}")


@witness_app.command("serve")
def witness_serve(
    data_dir: WitnessDir,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8200,
) -> None:
    """Serve POST /add-checkpoint (C2SP tlog-witness)."""
    import uvicorn

    from copyledger.api.witness_app import create_witness_app
    from copyledger.service.witness import open_witness

    with _domain_errors_exit():
        witness = open_witness(data_dir)
    err.print(tr("copyledger witness {name} for {logs} on {url}").format(
        name=witness.name, logs=", ".join(witness.logs) or tr("no log"),
        url=f"http://{host}:{port}"))
    uvicorn.run(create_witness_app(witness), host=host, port=port, log_level="warning",
                access_log=False)


# --- monitor: follow a log through its tiles into a verified mirror ----------------------------

monitor_app = typer.Typer(
    help="Follow a log through its C2SP tiles into a verified copy; answer proofs from it.")
app.add_typer(monitor_app, name="monitor")

MonitorDir = Annotated[Path, typer.Option("--data-dir", help="the monitor's own directory "
                                          "(its verified copy is mirror.sqlite there)")]
ALERT_EXIT = 1  # `monitor`: the log misbehaved (fork, rollback, bad signature, tile or entry)


@monitor_app.callback(invoke_without_command=True)
def monitor(
    ctx: typer.Context,
    log: Annotated[str | None, typer.Option("--log", help="the log's tlog-tiles URL prefix "
                                            "(the registry's URL)")] = None,
    trust: Annotated[str | None, typer.Option("--trust", help="the log's verifier key to pin "
                                              "(name+id+key)")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="the monitor's own directory")] = None,
    interval: Annotated[float, typer.Option(help="seconds between checkpoint polls")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="poll once and exit")] = False,
    alert_webhook: Annotated[str | None, typer.Option(
        "--alert-webhook", help="POST each alert to this URL as JSON")] = None,
    serve: Annotated[str | None, typer.Option(
        "--serve", metavar="HOST:PORT", help="also serve the verified copy (tiles, checkpoint, "
        "proofs) and /metrics here; alerts then do not stop the monitor")] = None,
    witness: Annotated[list[str] | None, typer.Option(
        "--witness", metavar="URL=VKEY", help="compare the copy with what this witness "
        "cosigned, read from the witness at URL (tlog-witness `<origin hash>/checkpoint`) or, "
        "given only VKEY, from the log's cosigned checkpoint; repeatable")] = None,
    rollback_after: Annotated[float, typer.Option(
        "--rollback-after", min=0.0, help="seconds after the monitor verified a larger tree "
        "that the log may still serve an earlier state of it (as a cache can, for a moment) "
        "before that is a rollback alert; 0: at once")] = 300.0,
    witness_max_age: Annotated[float, typer.Option(
        "--witness-max-age", min=0.0, help="seconds after which a witness's newest cosignature "
        "of the copy's tree is reported as old (the log froze, shows this monitor an old tree, "
        "or stopped asking the witness; a copyledger log has its witnesses cosign its latest "
        "tree again every witness_refresh_s, 300 s by default; a witness's read endpoint may "
        "lag up to an hour behind a cache); 0: not checked")] = 0.0,
    as_json: Json = False,
) -> None:
    """Follow a log: check every checkpoint's signature, that it extends every tree seen
    before, and every entry against its tile, keeping a verified copy in --data-dir. With
    --witness, also check each witness's cosigned checkpoint against the copy: one that
    contradicts it is a split view (a fork alert), even on a branch this monitor never saw.

    With --witness-max-age, a witness whose newest cosignature is older than that is reported
    as old: a log that grows or is idle has its witnesses cosign its latest tree again and
    again.

    A smaller tree that is an earlier state of the verified one is reported as stale (a cache
    or a lagging process can serve one); one replaced by a tree the monitor verified at least
    --rollback-after seconds ago, or one that is not an earlier state, is a rollback.

    Exits 1 on a fork (split view), rollback, bad signature, bad tile or invalid entry, after
    printing the alert (and POSTing it to --alert-webhook); 2 on usage or, with --once,
    network errors. With --serve it keeps serving its copy and polling after an alert (which
    /metrics counts and the webhook hears once per distinct alert), until stopped.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not (log and trust and data_dir):
        _die(tr("--log, --trust and --data-dir are required to follow a log"))
    if serve is not None and once:
        _die(tr("--serve keeps the monitor running: it cannot be combined with --once"))
    if not math.isfinite(rollback_after):
        _die(tr("--rollback-after must be a finite number of seconds"))
    if not math.isfinite(witness_max_age):
        _die(tr("--witness-max-age must be a finite number of seconds"))
    import time
    from contextlib import ExitStack

    from copyledger.client.tiles import TileFetcher, post_alert
    from copyledger.service.monitor import (
        LogMisbehaved,
        MonitorStatus,
        WitnessSource,
        open_follower,
        parse_witness_option,
    )

    status = MonitorStatus()
    with ExitStack() as stack:
        fetch = stack.enter_context(TileFetcher(log))
        sources = []
        with _domain_errors_exit():
            for value in witness or ():
                url, verifier = parse_witness_option(value)
                sources.append(
                    WitnessSource.at_log(verifier, fetch, log) if url is None else
                    WitnessSource.at_witness(verifier, stack.enter_context(TileFetcher(url)),
                                             url))
            follower = open_follower(data_dir, fetch, trust, sources, rollback_after,
                                     witness_max_age or None)
        if serve is not None:
            _serve_monitor(serve, data_dir, status)
        try:
            while True:
                try:
                    up = status.poll(follower)
                except LogMisbehaved as e:
                    alert = {**e.alert.to_dict(), "log": log}
                    if not status.repeated:
                        sys.stdout.write(json.dumps(alert, indent=None if as_json else 2) + "\n")
                        sys.stdout.flush()
                        err.print("[red]" + tr("ALERT") + "[/red] "
                                  + f"{e.alert.kind}: {detail(e.detail)}")
                    if alert_webhook and not status.repeated:
                        try:
                            post_alert(alert_webhook, alert)
                        except ClientError as w:
                            err.print("[red]" + tr("error:") + "[/red] "
                                      + tr("alert not delivered: {why}").format(why=w))
                    if serve is None:
                        raise typer.Exit(ALERT_EXIT) from None
                    time.sleep(interval)
                    continue
                except CopyledgerError as e:
                    if once:
                        _die(detail(e.detail))
                    err.print("[yellow]" + tr("warning:") + f"[/yellow] {detail(e.detail)}")
                else:
                    _emit(as_json, up.to_dict(),
                          tr("{log}: tree {size} ({n} new entries verified) root {root}").format(
                              log=log, size=up.tree_size, n=up.entries, root=up.root.hex())
                          + "".join(
                              "\n  " + tr("witness {name}: {status}").format(
                                  name=w.witness, status=w.status)
                              + (" " + tr("at {size}").format(size=w.tree_size)
                                 if w.tree_size is not None else "")
                              + (f" ({detail(w.detail)})" if w.detail else "")
                              for w in up.witnesses)
                          + ("" if up.stale is None else "\n  " + tr(
                              "stale: the log served an earlier state of the same tree "
                              "({size} entries), replaced by a tree verified at {since}; a "
                              "rollback alert once that is {grace:g} s ago").format(
                                  size=up.stale.tree_size, since=up.stale.to_dict()["since"],
                                  grace=rollback_after)))
                    if as_json:
                        sys.stdout.flush()
                if once:
                    return
                time.sleep(interval)
        finally:
            follower.mirror.close()


def _serve_monitor(where: str, data_dir: Path, status: Any) -> None:
    """Serve the monitor's copy (api/monitor_app.py) on HOST:PORT from a daemon thread, so the
    follower keeps polling in this one; returns once it listens."""
    import threading
    import time

    import uvicorn

    from copyledger.api.monitor_app import create_monitor_app

    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        _die(tr("--serve: {where} is not HOST:PORT").format(where=repr(where)))
    server = uvicorn.Server(uvicorn.Config(create_monitor_app(data_dir, status), host=host,
                                           port=int(port), log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            _die(tr("--serve: cannot listen on {where}").format(where=where))
        time.sleep(0.05)
    err.print(tr("serving the verified copy on {url}").format(url=f"http://{host}:{port}"))


@monitor_app.command("bundle")
def monitor_bundle(
    seq: Annotated[int, typer.Argument(min=0)],
    data_dir: MonitorDir,
    tree_size: Annotated[int | None, typer.Option(
        help="a tree size the monitor verified (default: its latest)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="write here, not to stdout")] = None,
    tlog_proof: Annotated[Path | None, typer.Option(
        help="also save the C2SP tlog-proof text form here")] = None,
) -> None:
    """An entry's inclusion proof to a checkpoint the monitor verified, from its copy alone:
    the entry, the proof, the root and the signed checkpoint (no block header or RFC 3161
    token: those are not in the tiles)."""
    from copyledger.service.monitor import Mirror

    if not data_dir.is_dir():
        _die(tr("{path} is not a monitor directory").format(path=data_dir))
    mirror = Mirror(data_dir)
    try:
        with _domain_errors_exit():
            doc = mirror.proof(seq, tree_size)
    finally:
        mirror.close()
    text = json.dumps(doc, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    if tlog_proof is not None:
        tlog_proof.write_text(doc["tlog_proof"])

# --- end of monitor ---------------------------------------------------------------------------


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
