"""Coalescing concurrent calls into batches (`worker.coalescer`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from worker import coalescer
from worker.coalescer import Coalescer

pytestmark = pytest.mark.timeout(30)


class Gate:
    """A batch runner that holds its first batch until `release`, so that the calls made
    meanwhile queue up and must leave together."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            self.release.wait(10)
        return [ValueError(f"odd {item}") if item % 2 else item * 10 for item in items]


def queue_behind_the_first(
    pool: ThreadPoolExecutor, batcher: Coalescer[int, int], gate: Gate, items: list[int]
) -> tuple[Future[int], list[Future[int]]]:
    """Call with 0, and while its batch is held at `gate`, with each of `items`; release the
    gate once they all wait. The first call's future and the others'."""
    first = pool.submit(batcher.call, 0)
    assert gate.entered.wait(5)
    rest = [pool.submit(batcher.call, item) for item in items]
    deadline = time.monotonic() + 5
    while batcher.waiting < len(items) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.release.set()
    return first, rest


def test_calls_made_while_a_batch_is_out_leave_together_with_their_own_results() -> None:
    gate = Gate()
    batcher: Coalescer[int, int] = Coalescer("test", gate, max_batch=50, senders=1)
    with ThreadPoolExecutor(12) as pool:
        first, rest = queue_behind_the_first(pool, batcher, gate, list(range(1, 11)))
        assert first.result() == 0
        for item, future in zip(range(1, 11), rest, strict=True):
            if item % 2:
                with pytest.raises(ValueError, match=f"odd {item}"):
                    future.result()
            else:
                assert future.result() == item * 10
    assert gate.batches[0] == [0]
    assert sorted(gate.batches[1]) == list(range(1, 11))


def test_batches_are_capped_at_max_batch() -> None:
    gate = Gate()
    batcher: Coalescer[int, int] = Coalescer("test", gate, max_batch=3, senders=1)
    with ThreadPoolExecutor(10) as pool:
        doubled = [item * 2 for item in range(1, 8)]
        first, rest = queue_behind_the_first(pool, batcher, gate, doubled)
        assert [f.result() for f in rest] == [item * 20 for item in range(1, 8)]
        first.result()
    assert [len(batch) for batch in gate.batches[1:]] == [3, 3, 1]


def test_a_failing_batch_fails_each_of_its_calls() -> None:
    def broken(items: Sequence[int]) -> list[int]:
        raise ConnectionError("store unavailable")

    batcher: Coalescer[int, int] = Coalescer("test", broken, max_batch=10)
    with pytest.raises(ConnectionError, match="store unavailable"):
        batcher.call(1)


def test_a_runner_returning_the_wrong_number_of_results_is_an_error() -> None:
    batcher: Coalescer[int, int] = Coalescer("test", lambda items: [], max_batch=10)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        batcher.call(1)


def test_idle_senders_leave_and_come_back_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalescer, "IDLE_SECONDS", 0.05)
    batcher: Coalescer[int, int] = Coalescer(
        "test", lambda items: [i + 1 for i in items], max_batch=10, senders=2
    )
    assert batcher.call(1) == 2
    deadline = time.monotonic() + 5
    while batcher.senders_running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.senders_running == 0
    assert batcher.call(2) == 3


@pytest.mark.parametrize(("field", "kwargs"), [("max_batch", {"max_batch": 0}),
                                                ("senders", {"max_batch": 1, "senders": 0})])
def test_bad_settings_name_the_field(field: str, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=f"{field}: must be at least 1"):
        Coalescer("test", lambda items: list(items), **kwargs)
