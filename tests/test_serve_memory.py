"""`copyledger serve` bounds glibc's malloc arenas for its own process (D42): the request
thread pool otherwise grows RSS through arenas that are never given back."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from copyledger.cli import main
from tests.server import ServerProcess, cli

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


class Exec(Exception):
    pass


@glibc
def test_serve_reexecs_itself_with_the_arena_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    calls: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise Exec

    monkeypatch.setattr(main.os, "execv", fake_execv)
    with pytest.raises(Exec):
        main._bound_malloc_arenas()
    assert calls == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
    assert main.os.environ["MALLOC_ARENA_MAX"] == "2"


@pytest.mark.parametrize("value", ["2", "8", ""])
def test_an_operators_own_setting_is_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", value)
    monkeypatch.setattr(main.os, "execv", lambda *a: pytest.fail("re-executed"))
    main._bound_malloc_arenas()
    assert main.os.environ["MALLOC_ARENA_MAX"] == value


@glibc
@pytest.mark.slow
def test_the_serving_process_runs_with_the_limit(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command: same PID (exec, not a child), the variable in its environment, and
    it answers."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cli("init", "--data-dir", str(tmp_path / "d")).returncode == 0
    srv = ServerProcess(tmp_path / "d").start(timeout=180)
    try:
        assert srv.proc is not None
        environ = Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=2" in environ
        assert srv.proc.poll() is None
    finally:
        srv.stop()
