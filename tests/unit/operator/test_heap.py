"""`heap.collector_paused`: one pause shared by nested and concurrent blocks, the collector's
earlier state restored by the last one out, exceptions included."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from stt_operator.heap import collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_pauses_and_resumes() -> None:
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still holds the pause
    assert gc.isenabled()


def test_resumes_after_an_exception() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("list refused")
    assert gc.isenabled()


def test_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_no_collection_runs_inside_however_much_is_allocated() -> None:
    collections: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(record)
    try:
        with collector_paused():
            decoded = [{"pod": i, "requests": [i]} for i in range(300_000)]  # far past any threshold
            total = sum(len(d["requests"]) for d in decoded)
            del decoded
        assert collections == []
    finally:
        gc.callbacks.remove(record)
    assert total == 300_000


def test_overlapping_threads_share_one_pause() -> None:
    first_in = threading.Event()
    second_out = threading.Event()
    states: dict[str, bool] = {}

    def first() -> None:
        with collector_paused():
            first_in.set()
            second_out.wait(5)
            states["first, after the second left"] = gc.isenabled()

    def second() -> None:
        first_in.wait(5)
        with collector_paused():
            pass
        second_out.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert states == {"first, after the second left": False}
    assert gc.isenabled()
