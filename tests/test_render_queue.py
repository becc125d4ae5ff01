"""PDF renders queue for a slot as coroutines, holding no thread, and identical renders are
shared (D75): under a load that saturates the cores every request is still served, the memory
bound holds, and the rest of the API keeps answering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger.errors import Unavailable
from copyledger.service import certificate
from copyledger.service.rendercache import RETRY_BUSY_S, RenderCache, Slots
from tests.helpers import bearer, open_registry, wait_for, work_body

BASE = "http://testserver"
THREADS = 3  # the test server's threadpool, made small so that waiters could exhaust it
PDFS = certificate.RENDER_SLOTS + 2 * THREADS  # more queued renders than threads


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reg = open_registry(tmp_path_factory.mktemp("reg"), public_url=BASE)
    h = bearer(reg, "alice")
    with TestClient(create_app(reg)) as c:
        made = [c.post("/v1/works", json=work_body(f"queue{i}"), headers=h) for i in range(PDFS)]
        assert all(r.status_code == 201 for r in made)
        yield {"client": c, "seqs": [r.json()["seq"] for r in made]}


class SlowRender:
    """Stands in for the PDF renderer: each render blocks until released, and the most that
    ran at once is recorded."""

    def __init__(self, real: Callable[..., bytes]) -> None:
        self.real = real
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = self.calls = 0

    def __call__(self, *a: Any) -> bytes:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if not self.release.wait(120):
                raise AssertionError("the test never released the renders")
            return self.real(*a)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def slow(server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowRender]:
    s = SlowRender(certificate._certificate_pdf)
    monkeypatch.setattr(certificate, "_certificate_pdf", s)
    cache: RenderCache = server["client"].app.state.pdf_cache
    cache._items.clear()
    try:
        yield s
    finally:
        s.release.set()
        cache._items.clear()


def in_threads(calls: list[Callable[[], Any]]) -> tuple[list[threading.Thread], list[Any]]:
    out: list[Any] = []
    threads = [threading.Thread(target=lambda f=f: out.append(f())) for f in calls]
    for t in threads:
        t.start()
    return threads, out


def _pdf(c: TestClient, seq: int) -> Callable[[], Any]:
    return lambda: c.get(f"/v1/entries/{seq}/certificate?format=pdf")


def test_queued_renders_hold_no_thread_and_all_are_served(
    server: dict[str, Any], slow: SlowRender
) -> None:
    """More PDF requests than render slots and than server threads: while they queue, a sync
    route (/healthz) and the HTML certificate still answer, which they could not if a waiter
    held a thread; then every PDF is served and no more than RENDER_SLOTS rendered at once."""
    c: TestClient = server["client"]

    async def small_pool() -> int:
        limiter = anyio.to_thread.current_default_thread_limiter()
        before, limiter.total_tokens = limiter.total_tokens, THREADS
        return int(before)

    before = c.portal.call(small_pool)  # type: ignore[union-attr]
    try:
        threads, out = in_threads([_pdf(c, seq) for seq in server["seqs"]])
        wait_for(lambda: slow.running == certificate.RENDER_SLOTS, "the slots were taken")
        wait_for(lambda: certificate._RENDER_SLOTS.waiting == PDFS - certificate.RENDER_SLOTS,
              "the other renders queued")
        side, answers = in_threads([lambda: c.get("/healthz"),
                                    lambda: c.get(f"/v1/entries/{server['seqs'][0]}/certificate")])
        for t in side:
            t.join(90)
        assert sorted(r.status_code for r in answers) == [200, 200], "a waiter held a thread"
        assert slow.running == certificate.RENDER_SLOTS  # the renders were still queued
        slow.release.set()
        for t in threads:
            t.join(120)
    finally:
        async def restore() -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = before

        c.portal.call(restore)  # type: ignore[union-attr]
    assert [r.status_code for r in out] == [200] * PDFS
    assert all(r.content.startswith(b"%PDF-") for r in out)
    assert slow.calls == PDFS and slow.most == certificate.RENDER_SLOTS
    taken = [certificate._RENDER_SLOTS.acquire(blocking=False)
             for _ in range(certificate.RENDER_SLOTS)]
    for ok in taken:
        if ok:
            certificate._RENDER_SLOTS.release()
    assert all(taken) and certificate._RENDER_SLOTS.waiting == 0  # every slot came back


def test_identical_requests_share_one_render_and_a_hit_never_waits(
    server: dict[str, Any], slow: SlowRender
) -> None:
    c: TestClient = server["client"]
    seq = server["seqs"][1]
    cache: RenderCache = c.app.state.pdf_cache  # type: ignore[attr-defined]
    joined = cache.hits
    threads, out = in_threads([_pdf(c, seq) for _ in range(5)])
    wait_for(lambda: slow.running == 1 and cache.hits == joined + 4, "the others joined the render")
    slow.release.set()
    for t in threads:
        t.join(120)
    assert [r.status_code for r in out] == [200] * 5 and slow.calls == 1
    assert len({r.content for r in out}) == 1
    taken = [certificate._RENDER_SLOTS.acquire(blocking=False)
             for _ in range(certificate.RENDER_SLOTS)]
    try:
        assert all(taken)
        again = c.get(f"/v1/entries/{seq}/certificate?format=pdf")  # every slot busy: a hit
        assert again.status_code == 200 and again.content == out[0].content
    finally:
        for _ in taken:
            certificate._RENDER_SLOTS.release()
    assert slow.calls == 1


def test_the_wait_bound_ends_in_503_with_retry_after_and_caches_nothing(
    server: dict[str, Any], slow: SlowRender, monkeypatch: pytest.MonkeyPatch
) -> None:
    c: TestClient = server["client"]
    cache: RenderCache = c.app.state.pdf_cache  # type: ignore[attr-defined]
    monkeypatch.setattr(cache, "wait_s", 0.05)
    url = f"/v1/entries/{server['seqs'][2]}/certificate?format=pdf"
    taken = [certificate._RENDER_SLOTS.acquire(blocking=False)
             for _ in range(certificate.RENDER_SLOTS)]
    try:
        assert all(taken)
        r = c.get(url)
    finally:
        for _ in taken:
            certificate._RENDER_SLOTS.release()
    assert r.status_code == 503 and r.headers["Retry-After"] == str(RETRY_BUSY_S)
    assert "retry" in r.json()["detail"]
    assert slow.calls == 0 and len(cache) == 0 and certificate._RENDER_SLOTS.waiting == 0
    slow.release.set()
    assert c.get(url).status_code == 200 and len(cache) == 1  # the refusal was not remembered


def test_slots_hand_over_in_order_to_threads_and_coroutines_alike() -> None:
    """A released slot goes to the oldest waiter, however it waits; one that gave up takes
    none; a coroutine cancelled while it waits takes none."""
    slots = Slots(1)
    assert slots.acquire(blocking=False) and not slots.acquire(blocking=False)
    order: list[str] = []

    def thread_waiter() -> None:
        assert slots.acquire(timeout=90)
        order.append("thread")
        slots.release()

    async def scenario() -> None:
        t = threading.Thread(target=thread_waiter)
        t.start()
        await asyncio.to_thread(wait_for, lambda: slots.waiting == 1, "the thread queued")
        assert not await slots.acquire_async(0.01)  # gave up: left the queue
        assert slots.waiting == 1
        cancelled = asyncio.ensure_future(slots.acquire_async(90))
        mine = asyncio.ensure_future(slots.acquire_async(90))
        await asyncio.to_thread(wait_for, lambda: slots.waiting == 3, "all queued")
        cancelled.cancel()
        slots.release()  # to the thread, which gives it on to `mine`
        assert await mine
        order.append("coroutine")
        await asyncio.to_thread(t.join, 90)
        assert cancelled.cancelled() and slots.waiting == 0
        assert not slots.acquire(blocking=False)  # `mine` still holds the only slot
        slots.release()

    asyncio.run(scenario())
    assert order == ["thread", "coroutine"]
    assert slots.acquire(blocking=False)
    slots.release()
    with pytest.raises(ValueError, match="more often than taken"):
        slots.release()


def test_a_render_refused_by_the_cache_is_not_run() -> None:
    rendered: list[object] = []
    slots = Slots(1)
    cache = RenderCache(lambda *a: rendered.append(a) or b"x", slots=slots, wait_s=0.01)
    assert slots.acquire(blocking=False)
    with pytest.raises(Unavailable) as e:
        asyncio.run(cache.aget({"seq": 1}, "u"))
    assert e.value.extra["retry_after"] == RETRY_BUSY_S
    with pytest.raises(Unavailable):
        cache({"seq": 1}, "u")
    slots.release()
    assert rendered == [] and len(cache) == 0
    assert asyncio.run(cache.aget({"seq": 1}, "u")) == b"x" and len(rendered) == 1


def _take_every_slot() -> list[bool]:
    taken = [certificate._RENDER_SLOTS.acquire(blocking=False)
             for _ in range(certificate.RENDER_SLOTS)]
    assert all(taken)
    return taken


def test_a_full_queue_refuses_at_once_and_renders_nothing(
    server: dict[str, Any], slow: SlowRender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `RENDER_QUEUE` waiters a PDF request is answered 503 with Retry-After at once
    (it never joins the queue), nothing is rendered for it, and those queued are served."""
    c: TestClient = server["client"]
    slots = certificate._RENDER_SLOTS
    monkeypatch.setattr(slots, "limit", 2)
    refused = slots.refused
    seqs = server["seqs"]
    taken = _take_every_slot()
    try:
        queued, served = in_threads([_pdf(c, seqs[3]), _pdf(c, seqs[4])])
        wait_for(lambda: slots.waiting == 2, "two renders queued")
        extra, answer = in_threads([_pdf(c, seqs[5])])
        wait_for(lambda: answer or slots.waiting > 2, "the third was answered or queued")
        assert slots.waiting == 2 and slots.refused == refused + 1, "the third joined the queue"
        extra[0].join(90)
        assert answer[0].status_code == 503
        assert answer[0].headers["Retry-After"] == str(RETRY_BUSY_S)
    finally:
        slow.release.set()
        for _ in taken:
            slots.release()
    for t in queued:
        t.join(120)
    assert [r.status_code for r in served] == [200, 200] and slow.calls == 2


def test_a_request_whose_client_has_gone_is_not_rendered(
    server: dict[str, Any], slow: SlowRender
) -> None:
    """Starlette does not cancel a coroutine route when its client goes: once the slot comes,
    the route asks `request.is_disconnected`, releases the slot and renders nothing."""
    c: TestClient = server["client"]
    cache: RenderCache = c.app.state.pdf_cache  # type: ignore[attr-defined]
    seq = server["seqs"][6]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": f"/v1/entries/{seq}/certificate",
             "raw_path": f"/v1/entries/{seq}/certificate".encode(), "root_path": "",
             "query_string": b"format=pdf", "headers": [(b"host", b"testserver")],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}  # the client has gone

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def call() -> None:
        await c.app(scope, receive, send)

    taken = _take_every_slot()
    try:
        threads, _ = in_threads([lambda: c.portal.call(call)])  # type: ignore[union-attr]
        wait_for(lambda: certificate._RENDER_SLOTS.waiting == 1, "the request queued")
        slow.release.set()  # had it been rendered, the render would end
    finally:
        for _ in taken:
            certificate._RENDER_SLOTS.release()
    threads[0].join(120)
    assert slow.calls == 0 and len(cache) == 0
    assert sent and sent[0]["status"] == 503
    free = _take_every_slot()  # the slot it was handed came back
    for _ in free:
        certificate._RENDER_SLOTS.release()
    assert certificate._RENDER_SLOTS.waiting == 0


def test_a_full_queue_refuses_threads_and_coroutines_alike() -> None:
    slots = Slots(1, limit=1)
    assert slots.acquire(blocking=False)
    t = threading.Thread(target=lambda: slots.acquire(timeout=90) and slots.release())
    t.start()
    wait_for(lambda: slots.waiting == 1, "the thread queued")
    assert not slots.acquire(timeout=90)  # refused at once: a wait would fill the queue
    assert not asyncio.run(slots.acquire_async(90))
    assert slots.refused == 2 and slots.waiting == 1
    slots.release()
    t.join(90)
    assert slots.acquire(blocking=False)
    slots.release()


def test_a_render_whose_client_has_gone_is_skipped_and_a_follower_renders() -> None:
    """The leader's client has gone when its slot comes: the slot is released, nothing is
    rendered for it; a follower still waiting for the same document renders it itself."""
    rendered: list[object] = []
    slots = Slots(1)
    cache = RenderCache(lambda *a: rendered.append(a) or b"x", slots=slots)
    asked: list[str] = []

    async def gone() -> bool:
        asked.append("gone?")
        return True

    async def scenario() -> None:
        leader = asyncio.ensure_future(cache.aget("k", gone=gone))
        await asyncio.to_thread(wait_for, lambda: slots.waiting == 1, "the leader queued")
        follower = asyncio.ensure_future(cache.aget("k"))
        await asyncio.to_thread(wait_for, lambda: cache.hits == 1, "the follower joined")
        slots.release()
        with pytest.raises(Unavailable):
            await leader
        assert await follower == b"x"

    assert slots.acquire(blocking=False)
    asyncio.run(scenario())
    assert asked == ["gone?"] and rendered == [("k",)] and len(cache) == 1
    assert slots.acquire(blocking=False) and slots.waiting == 0
    slots.release()


class _FailingRelease(Slots):
    """Slots whose next release raises after giving the slot back (a bug elsewhere)."""

    fail = True

    def release(self) -> None:
        super().release()
        if self.fail:
            self.fail = False
            raise ValueError("release failed")


def test_a_flight_lands_even_if_the_release_fails_and_followers_wait_no_longer_than_wait_s(
) -> None:
    go = threading.Event()

    def render(*a: Any) -> bytes:
        assert go.wait(90)
        return b"x"

    cache = RenderCache(render, slots=_FailingRelease(1), wait_s=90)
    leader, led = in_threads([lambda: asyncio.run(cache.aget("k"))])
    wait_for(lambda: cache.misses == 1, "the leader renders")
    followers, got = in_threads([lambda: cache("k"),
                                 lambda: asyncio.run(cache.aget("k"))])
    wait_for(lambda: cache.hits == 2, "the followers joined")
    go.set()
    for t in [*leader, *followers]:
        t.join(90)
        assert not t.is_alive(), "a follower waits for a flight that never landed"
    assert led == [b"x"] and got == [b"x", b"x"] and not cache._flying

    go.clear()
    short = RenderCache(render, slots=Slots(1), wait_s=0.01)
    leader, _ = in_threads([lambda: short("k")])
    wait_for(lambda: short.misses == 1, "the leader renders")
    for follow in (lambda: short("k"), lambda: asyncio.run(short.aget("k"))):
        done, out = in_threads([lambda f=follow: _raised(f)])
        done[0].join(90)
        assert not done[0].is_alive() and isinstance(out[0], Unavailable)
    go.set()
    leader[0].join(90)
    assert short("k") == b"x"


def _raised(f: Callable[[], Any]) -> BaseException | Any:
    try:
        return f()
    except Exception as e:
        return e


def test_at_loop_shutdown_the_slot_is_held_until_the_render_thread_ends() -> None:
    """A loop closing cancels its tasks, the render's too; its thread runs on, so its slot
    stays taken until the thread ends (the bound counts every render running)."""
    started, go = threading.Event(), threading.Event()

    def render(*a: Any) -> bytes:
        started.set()
        assert go.wait(90)
        return b"x"

    slots = Slots(1)
    cache = RenderCache(render, slots=slots)
    loop = asyncio.new_event_loop()
    try:
        request = loop.create_task(cache.aget("k"))
        loop.run_until_complete(asyncio.to_thread(started.wait, 90))
        tasks = asyncio.all_tasks(loop)
        for task in tasks:  # what asyncio.run does at its end
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        assert request.cancelled()
        assert not slots.acquire(blocking=False), "released while the render still runs"
        go.set()
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        go.set()
        loop.close()
    assert slots.acquire(blocking=False) and cache("k") == b"x"
    slots.release()
