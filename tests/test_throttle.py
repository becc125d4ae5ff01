"""D111: a log line that repeats fast is said once in a while, with a count of those held."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyledger.api import problems
from copyledger.ledger.errors import NotFound, Unavailable
from copyledger.ledger.throttle import Throttle, db_reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_then_one_a_window_with_what_was_held_back() -> None:
    clock = Clock()
    t = Throttle(10.0, clock)
    assert t.due("a") == 0
    assert [t.due("a") for _ in range(5)] == [None] * 5
    assert t.due("b") == 0  # another key is its own
    clock.now += 9.9
    assert t.due("a") is None
    clock.now += 0.1
    assert t.due("a") == 6  # the five and the one at 9.9 s
    assert t.due("a") is None
    clock.now += 60
    assert t.due("a") == 1


def test_past_most_keys_the_keys_are_forgotten() -> None:
    clock = Clock()
    t = Throttle(10.0, clock, most_keys=3)
    assert [t.due(k) for k in "abc"] == [0, 0, 0]
    assert t.due("a") is None
    assert t.due("d") == 0  # a fourth key: the others are forgotten, so said again at once
    assert t.due("a") == 0


@given(st.lists(st.tuples(st.sampled_from("xyz"), st.floats(0, 30)), max_size=200))
def test_every_event_is_said_or_counted_and_said_ones_are_a_window_apart(
        events: list[tuple[str, float]]) -> None:
    """Each said event reports exactly the events of its key held back since the one before,
    and said events of a key are at least a window apart."""
    clock = Clock()
    t = Throttle(10.0, clock)
    last_said: dict[str, float] = {}
    held_since: dict[str, int] = {}
    for key, step in events:
        clock.now += step
        held = t.due(key)
        if held is None:
            assert key in last_said and clock.now - last_said[key] < 10.0
            held_since[key] += 1
        else:
            assert key not in last_said or clock.now - last_said[key] >= 10.0
            assert held == held_since.get(key, 0)
            last_said[key], held_since[key] = clock.now, 0


def test_a_server_error_repeated_is_logged_once_a_window(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(problems, "_server_errors", Throttle(problems.SERVER_ERROR_LOG_S))
    caplog.set_level(logging.ERROR, logger="copyledger.api")
    for _ in range(100):
        problems.from_error(Unavailable("the database is restarting"), "/v1/works")
    problems.from_error(Unavailable("another cause"), "/v1/works")
    problems.from_error(NotFound("no such work"), "/v1/works/1")  # a client's: never logged
    said = [r.getMessage() for r in caplog.records if r.name == "copyledger.api"]
    assert said == ["server error on /v1/works: the database is restarting",
                    "server error on /v1/works: another cause"]


def test_a_database_failure_keys_on_its_innermost_message_not_its_statement() -> None:
    """SQLAlchemy's message carries the statement and its parameters, which differ per call:
    the key is the driver's message, so an outage's failures share one."""
    from sqlalchemy.exc import OperationalError

    class DriverError(Exception):
        pass

    def failed(params: tuple[int, ...]) -> Exception:
        wrapped = OperationalError("INSERT INTO entries VALUES (%s)", params,
                                   DriverError("connection refused"))
        try:
            raise Unavailable("sealing failed before anything was written") from wrapped
        except Unavailable as e:
            return e

    a, b = failed((1,)), failed((2,))
    assert str(a.__cause__) != str(b.__cause__)
    assert db_reason(a) == db_reason(b) == "DriverError: connection refused"
    x, y = ValueError("x"), ValueError("y")
    x.__cause__, y.__cause__ = y, x  # a chain that loops
    assert db_reason(x) in ("ValueError: x", "ValueError: y")


def test_an_unexpected_error_repeated_is_logged_once_a_window(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(problems, "_server_errors", Throttle(problems.SERVER_ERROR_LOG_S))
    caplog.set_level(logging.ERROR, logger="copyledger.api")
    for i in range(50):  # one failure on fifty paths: said once
        try:
            raise ConnectionError("database gone")
        except ConnectionError:
            problems.internal_error(f"/v1/works/{i}")
    try:
        raise ConnectionError("another")
    except ConnectionError:
        problems.internal_error("/v1/works/1")
    said = [r for r in caplog.records if r.name == "copyledger.api"]
    assert [r.exc_info[1].args for r in said if r.exc_info and r.exc_info[1]] == [
        ("database gone",), ("another",)]
