from __future__ import annotations

from collections import Counter

from bluegreen.router import Backend, Balancer

POOL = tuple(Backend(f"blue-{i}", "blue", "127.0.0.1", 8000 + i) for i in range(3))


def test_picks_least_outstanding() -> None:
    bal = Balancer()
    bal.acquire("blue-0")
    bal.acquire("blue-0")
    bal.acquire("blue-1")
    assert bal.pick(POOL) == POOL[2]
    bal.acquire("blue-2")
    bal.acquire("blue-2")
    assert bal.pick(POOL) == POOL[1]
    assert bal.outstanding("blue-0") == 2


def test_ties_spread_round_robin() -> None:
    bal = Balancer()
    picks = Counter(b.id for b in (bal.pick(POOL) for _ in range(30)) if b is not None)
    assert picks == {"blue-0": 10, "blue-1": 10, "blue-2": 10}


def test_concurrent_load_spreads() -> None:
    bal = Balancer()
    held = []
    for _ in range(6):
        b = bal.pick(POOL)
        assert b is not None
        bal.acquire(b.id)
        held.append(b.id)
    assert Counter(held) == {"blue-0": 2, "blue-1": 2, "blue-2": 2}
    for bid in held:
        bal.release(bid)
    assert all(bal.outstanding(b.id) == 0 for b in POOL)


def test_exclude_and_empty() -> None:
    bal = Balancer()
    assert bal.pick(POOL, exclude={"blue-0", "blue-1"}) == POOL[2]
    assert bal.pick(POOL, exclude={b.id for b in POOL}) is None
    assert bal.pick(()) is None


def test_release_never_negative() -> None:
    bal = Balancer()
    bal.release("blue-0")
    assert bal.outstanding("blue-0") == 0
    bal.acquire("blue-0")
    bal.release("blue-0")
    bal.release("blue-0")
    assert bal.outstanding("blue-0") == 0
