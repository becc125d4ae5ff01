"""`KeyedLocks` (D82): a key taken while free gets no lock object, yet anyone who wants it
while held waits for its release, a cancelled waiter leaves it to its holder, and nothing is
left behind."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.service.node import KeyedLocks


def test_a_key_held_by_a_batch_makes_a_single_holder_wait() -> None:
    async def main() -> list[str]:
        locks, order = KeyedLocks(), []
        async with locks.hold_many(["a", "b", "c"]):
            waiter = asyncio.create_task(_hold(locks, "b", order, "single"))
            for _ in range(5):
                await asyncio.sleep(0)
            order.append("batch done")
        await waiter
        assert len(locks) == 0
        return order

    assert asyncio.run(main()) == ["batch done", "single"]


async def _hold(locks: KeyedLocks, key: str, order: list[str], name: str) -> None:
    async with locks.hold(key):
        order.append(name)


def test_a_cancelled_waiter_leaves_the_key_to_its_holder() -> None:
    async def main() -> None:
        locks, order = KeyedLocks(), []
        async with locks.hold("k"):
            gone = asyncio.create_task(_hold(locks, "k", order, "cancelled"))
            await asyncio.sleep(0)
            gone.cancel()
            await asyncio.sleep(0)
            late = asyncio.create_task(_hold(locks, "k", order, "late"))
            await asyncio.sleep(0)
            assert order == [] and gone.cancelled()
        await late
        assert order == ["late"] and len(locks) == 0

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcde"), min_size=1, max_size=4), min_size=2,
                max_size=6), st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_no_two_holders_of_a_key_at_once(sets: list[list[str]], pauses: list[int]) -> None:
    """Batches of overlapping keys (sorted, as callers do) and single holders, interleaved:
    a key is never held twice at once, all finish (no deadlock), and nothing is left."""
    async def main() -> None:
        locks, inside = KeyedLocks(), set()

        async def batch(n: int, keys: list[str]) -> None:
            ctx = locks.hold(keys[0]) if n % 2 else locks.hold_many(sorted(keys))
            held = [keys[0]] if n % 2 else sorted(set(keys))
            async with ctx:
                assert not inside & set(held)
                inside.update(held)
                for _ in range(pauses[n % len(pauses)]):
                    await asyncio.sleep(0)
                inside.difference_update(held)

        await asyncio.wait_for(asyncio.gather(*(batch(n, k) for n, k in enumerate(sets))), 10)
        assert len(locks) == 0

    asyncio.run(main())
