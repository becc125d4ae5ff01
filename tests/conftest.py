"""Shared fixtures: a real PostgreSQL server started by the tests, registries on either engine,
API clients, and our independent Go checker (tools/tlogcheck)."""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from tests.server import free_port

# Hypothesis (D55): no test fails because a machine is slow, so no per-example deadline and no
# "too slow" health check anywhere; CI (`.ci/run` sets COPYLEDGER_HYPOTHESIS_PROFILE=ci) also
# derandomizes, so each run tries the same examples and a failure there is a real bug that
# reproduces, never a dice roll. Everywhere else examples stay random, to go on exploring.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("dev"), derandomize=True, database=None,
                          print_blob=True)
settings.load_profile(os.environ.get("COPYLEDGER_HYPOTHESIS_PROFILE", "dev"))

if TYPE_CHECKING:
    from copyledger.service.node import Node

REPO = Path(__file__).resolve().parents[1]


def _missing(what: str, env: str) -> None:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required in this run ({env}=1) but is not available")
    pytest.skip(f"{what} is not available")


class PostgresServer:
    """A throw-away PostgreSQL cluster on a loopback port, trust auth, fsync on. `also`: another
    address of this host it listens on too (trusting its /24), for
    processes in a network namespace (`netns`); `settings`: the server's own (a benchmark's
    tuned server)."""

    def __init__(self, also: str = "", settings: dict[str, str] | None = None) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise FileNotFoundError("initdb")
        self.bindir = Path(bins[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="copyledger-pg-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self.listen = ",".join(filter(None, ("127.0.0.1", also)))
        self.settings = "".join(f" -c {k}={v}" for k, v in (settings or {}).items())
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust",
                   "-U", "postgres", "--no-sync", "-E", "UTF8"])
        if also:  # (its /24: the namespace's side of the veth pair)
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {ipaddress.ip_interface(also + '/24').network} trust\n")
        self.start()

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-l",
                   str(self.root / "log"), "-o",
                   f"-p {self.port} -k {self.root} -c listen_addresses={self.listen} "
                   f"-c max_connections=200{self.settings}", "start"])

    def crash(self) -> None:
        """Stop the server as a crash does (`-m immediate`: every session ends at once, no
        checkpoint; what was committed is recovered from the WAL at the next `start`)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                   "-w", "stop"])

    def crash_and_restart(self, down_s: float = 0.0) -> None:
        """`crash`, stay down `down_s`, and start again on the same port."""
        self.crash()
        time.sleep(down_s)
        self.start()

    def _run(self, cmd: list[str]) -> None:
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.root)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def admin(self) -> Any:
        """An autocommit connection to the `postgres` database, for statements such as
        CREATE DATABASE that run outside a transaction."""
        import psycopg

        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                               autocommit=True)

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            with contextlib.suppress(subprocess.CalledProcessError):  # (a test left it down)
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m",
                           "immediate", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _cluster() -> Iterator[PostgresServer]:
    """A cluster for as long as the fixture lasts (skipped, or failed where required, if
    PostgreSQL is not installed)."""
    try:
        server = PostgresServer()
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        _missing(f"a PostgreSQL server ({e})", "COPYLEDGER_REQUIRE_POSTGRES")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    yield from _cluster()


@pytest.fixture
def own_pg_server() -> Iterator[PostgresServer]:
    """A cluster for one test alone: for a test that crashes and restarts it."""
    yield from _cluster()


class Netns:
    """Another host on this machine: a network namespace joined to this one by a veth pair
    (this side `outer`, the namespace's side `inner`, in a /24 of their own). `cut` takes the
    namespace's end of the link down: what either side sends is dropped with no word to the
    sender, as when a host loses its power or its network."""

    def __init__(self) -> None:
        used = subprocess.run(["ip", "-4", "route", "show"], check=True, capture_output=True,
                              text=True).stdout
        last: subprocess.CalledProcessError | None = None
        for _ in range(50):  # a name and /24 nobody here uses (another run's, a real network)
            # (the name is the /24: `ip netns add` takes it for this run alone, so two runs at
            # once, CI's two passes, never pick one network)
            tag = random.randrange(250)
            net = f"10.231.{tag}"
            if f"{net}." in used:
                continue
            self.name = f"copyledger-{tag}"
            self.outer_if, self.inner_if = f"clv{tag}a", f"clv{tag}b"
            self.outer, self.inner = f"{net}.1", f"{net}.2"
            self.exec = ("ip", "netns", "exec", self.name)
            try:
                self._ip("netns", "add", self.name)
            except subprocess.CalledProcessError as e:
                last = e
                continue  # (taken, or not allowed: said below)
            try:
                self._make()
            except subprocess.CalledProcessError as e:
                self.close()  # (an interface of this name left by a killed run: another /24)
                last = e
                continue
            except BaseException:
                self.close()
                raise
            return
        raise last if last is not None else subprocess.CalledProcessError(
            1, "ip", stderr=b"no free /24 in 10.231.0.0/16")

    def _make(self) -> None:
        self._ip("link", "add", self.outer_if, "type", "veth", "peer", "name", self.inner_if)
        self._ip("link", "set", self.inner_if, "netns", self.name)
        self._ip("addr", "add", f"{self.outer}/24", "dev", self.outer_if)
        self._ip("link", "set", self.outer_if, "up")
        self._inside("addr", "add", f"{self.inner}/24", "dev", self.inner_if)
        self._inside("link", "set", "lo", "up")
        self.mend()

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def _inside(self, *args: str) -> None:
        self._ip("-n", self.name, *args)

    def cut(self) -> None:
        self._inside("link", "set", self.inner_if, "down")

    def mend(self) -> None:
        self._inside("link", "set", self.inner_if, "up")

    def close(self) -> None:
        """The veth pair (from this side), then the namespace: the name, which holds the /24
        and the interfaces' names for this run, is given up last."""
        subprocess.run(["ip", "link", "del", self.outer_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A second host (`Netns`): needs root and iproute2's `ip` (`make system-deps`)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        _missing("network namespaces (root and iproute2's ip)", "COPYLEDGER_REQUIRE_NETNS")
    try:
        ns = Netns()
    except subprocess.CalledProcessError as e:
        _missing(f"network namespaces ({e.stderr.decode(errors='replace').strip()})",
                 "COPYLEDGER_REQUIRE_NETNS")
    yield ns
    ns.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs once on SQLite and once on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.new_database()


@pytest.fixture(scope="session")
def tlogcheck() -> str:
    """Path to tools/tlogcheck, our checker built only from Go's sumdb/tlog and note.

    `make tlogcheck` (which `make test` runs first) builds it into .venv/bin when main.go is newer;
    without Go it builds nothing and the tests that need it skip. A build that fails with Go
    present is our bug, so it fails.
    """
    binary = REPO / ".venv" / "bin" / "tlogcheck"
    try:
        r = subprocess.run(["make", "-s", "-C", str(REPO), "tlogcheck"],
                           capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        _missing(f"tlogcheck (make tlogcheck: {e})", "COPYLEDGER_REQUIRE_TLOGCHECK")
    if r.returncode != 0:
        pytest.fail(f"make tlogcheck failed: {r.stderr.strip()}")
    if not binary.exists():
        _missing(f"tlogcheck ({r.stderr.strip()})", "COPYLEDGER_REQUIRE_TLOGCHECK")
    return str(binary)


@pytest.fixture(scope="session", autouse=True)
def _patient_httpx() -> Iterator[None]:
    """A test's bare `httpx.get(...)` (and post, put, delete, request) to one of its servers
    waits up to 60 s, not httpx's 5 s: at load 30 a server may take longer than 5 s to answer,
    and that is not what any test checks (D55). A timeout given explicitly still applies; the
    product's own calls all give one, and clients (`httpx.Client`) are not touched."""
    import functools

    import httpx

    def patient(call: Any) -> Any:
        @functools.wraps(call)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 60.0)
            return call(*args, **kwargs)
        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        for name in ("get", "post", "put", "delete", "request"):
            mp.setattr(httpx, name, patient(getattr(httpx, name)))
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_import_name() -> Iterator[None]:
    """Everything loads as copyledger.<package>: a bare `ledger` would be a second copy."""
    yield
    import sys

    assert not {"ledger", "notary", "api", "cli", "matching", "service", "client"} & set(
        sys.modules)


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[tuple[Any, Any]]:
    """A registry on either engine, and a TestClient of its API: (client, node)."""
    from fastapi.testclient import TestClient

    from copyledger.api.app import create_app
    from tests.helpers import open_registry

    reg = open_registry(tmp_path, database_url)
    with TestClient(create_app(reg)) as c:
        yield c, reg


@pytest.fixture
def reg(tmp_path: Path) -> Node:
    """A registry on SQLite (a module that wants both engines overrides this)."""
    from tests.helpers import open_registry

    return open_registry(tmp_path)


@pytest.fixture
def client(reg: Node) -> Iterator[Any]:
    """A TestClient of the one ASGI stack over `reg`, started and stopped with the test."""
    from fastapi.testclient import TestClient

    from copyledger.api.app import create_app

    with TestClient(create_app(reg)) as c:
        yield c


@pytest.fixture
def creator(reg: Node) -> dict[str, str]:
    """The Authorization header of a creator key for the account `alice`."""
    from tests.helpers import bearer

    return bearer(reg, "alice")
