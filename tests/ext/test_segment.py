"""SegmentWatcher against real shared memory: a book that is missing, half-created, replaced by
an OrderBook restart, vanished, or left behind by a dead owner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from ext import SharedPriceBook, layout
from ext.segment import SegmentWatcher
from reactor import Backoff

ROOT = Path(__file__).resolve().parents[2]


class Rig:
    """A watcher on a fresh name, a fake clock for its backoff, and a log of its callbacks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.now = 0.0
        self.events: list[tuple[str, object]] = []
        self.watcher = SegmentWatcher(
            name, Backoff(initial=0.1, maximum=2.0, jitter=0.0), clock=lambda: self.now,
            on_attach=self._attached, on_detach=self._detached)

    def _attached(self, book) -> None:
        self.events.append(("attach", book.symbols))

    def _detached(self, reason: str) -> None:
        # Called while the old book is still mapped: a PriceReader can be closed here.
        assert self.watcher.book is not None and not self.watcher.book.closed
        self.events.append(("detach", reason))

    def later(self, seconds: float = 5.0) -> None:
        self.now += seconds


@pytest.fixture
def rig() -> Iterator[Rig]:
    name = f"tstest_seg_{uuid4().hex[:10]}"
    r = Rig(name)
    yield r
    r.watcher.close()
    with contextlib.suppress(FileNotFoundError):
        layout.unlink_untracked(name)


def create(name: str, symbols: tuple[str, ...] = ("AAPL",)) -> SharedPriceBook:
    return SharedPriceBook(list(symbols), name=name, create=True)


def stop(book: SharedPriceBook) -> None:
    """An OrderBook's clean exit: close and unlink its segment."""
    book.close()
    book.unlink()


def test_waits_with_backoff_for_a_missing_segment_then_attaches(rig):
    w = rig.watcher
    assert not w.poll() and "waiting" in w.status and w.failures == 1
    book = create(rig.name)
    try:
        assert not w.poll(), "must wait out the backoff, not retry at once"
        assert 0 < w.retry_in() <= 0.1
        rig.later()
        assert w.poll() and w.attached and w.retry_in() is None
        assert w.identity == (os.getpid(), book.header()["created_ns"])
        assert rig.events == [("attach", ("AAPL",))]
        book.update("AAPL", 10.5, 0, 7)
        assert w.prices() == {"AAPL": 10.5}
        assert w.quotes()["AAPL"][1] == 7
        assert w.liveness() is None and w.heartbeat_age() < 1.0
    finally:
        stop(book)


def test_follows_an_orderbook_restart_to_the_replacing_segment(rig):
    w = rig.watcher
    old = create(rig.name)
    w.poll()
    stop(old)
    new = create(rig.name, ("AAPL", "MSFT"))   # the restarted OrderBook, same name
    try:
        new.update("MSFT", 3.25)
        assert w.poll(), "the new segment is there: re-attached on the same poll"
        assert rig.events == [("attach", ("AAPL",)), ("detach", f"{rig.name} was replaced by a "
                              "new OrderBook"), ("attach", ("AAPL", "MSFT"))]
        assert w.identity == (os.getpid(), new.header()["created_ns"]) and w.attaches == 2
        assert w.prices() == {"MSFT": 3.25}
    finally:
        stop(new)


def test_a_vanished_segment_is_let_go_and_waited_for(rig):
    w = rig.watcher
    book = create(rig.name)
    w.poll()
    stop(book)
    assert not w.poll() and not w.attached
    assert rig.events[-1] == ("detach", f"{rig.name} vanished")
    assert w.quotes() is None and w.prices() == {} and w.liveness() == "not attached"
    book = create(rig.name)
    try:
        rig.later()
        assert w.poll()
    finally:
        stop(book)


def test_a_half_created_file_is_not_attached(rig):
    w = rig.watcher
    path = f"/dev/shm/{rig.name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        assert not w.poll() and "waiting" in w.status     # empty: not even mappable
        os.ftruncate(fd, layout.segment_size(1))           # sized, but the magic is still 0
        rig.later()
        assert not w.poll() and "LayoutError" in w.status and w.failures == 2
    finally:
        os.close(fd)
    os.unlink(path)
    book = create(rig.name)
    try:
        rig.later()
        assert w.poll() and rig.events == [("attach", ("AAPL",))]
        # Replaced by a half-created file while attached: not ours any more.
        stop(book)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.close(fd)
        assert not w.poll() and rig.events[-1][0] == "detach"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_a_dead_owner_is_reported_and_its_successor_attached(rig):
    # A real OrderBook crash: the owner is SIGKILLed, and (outside a supervisor) nothing
    # unlinks its segment, so it stays under the name with a dead owner_pid.
    code = textwrap.dedent(f"""
        import os, signal, sys
        from multiprocessing import resource_tracker
        from ext import SharedPriceBook
        book = SharedPriceBook(["AAPL"], name={rig.name!r}, create=True)
        book.update("AAPL", 42.0)
        resource_tracker.unregister("/" + {rig.name!r}, "shared_memory")
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    dead = int(done.stdout.split()[0])
    w = rig.watcher
    assert w.poll() and w.owner_pid == dead
    assert w.prices() == {"AAPL": 42.0}, "a dead owner's last prices stay readable"
    assert w.liveness() == f"OrderBook pid {dead} is dead"
    successor = create(rig.name)          # reclaims the name: the owner is dead
    try:
        assert successor.reclaimed
        assert w.poll() and w.owner_pid == os.getpid() and w.liveness() is None
        assert [e[0] for e in rig.events] == ["attach", "detach", "attach"]
    finally:
        stop(successor)


def test_a_silent_owner_is_not_live(rig):
    book = create(rig.name)
    try:
        w = rig.watcher
        w.poll()
        later = time.monotonic_ns() + int(3e9)
        assert w.liveness(later) == f"OrderBook pid {os.getpid()} silent for 3.0s"
        book.heartbeat()
        w.poll()
        assert w.liveness() is None
    finally:
        stop(book)


def test_segment_owner_reads_the_header_as_the_probe_does(rig):
    assert layout.segment_owner(rig.name) is None
    book = create(rig.name)
    try:
        assert layout.segment_owner(rig.name) == os.getpid()
    finally:
        stop(book)
    with open(f"/dev/shm/{rig.name}", "wb") as fh:
        fh.write(b"\0" * layout.segment_size(1))
    assert layout.segment_owner(rig.name) is None


def test_pid_alive_counts_a_zombie_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while layout.pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)       # exited but not reaped: a zombie
    assert not layout.pid_alive(proc.pid)
    proc.wait()
    assert not layout.pid_alive(0) and not layout.pid_alive(2**40) and layout.pid_alive(os.getpid())


def test_a_book_the_caller_cannot_use_is_not_half_attached(rig):
    """on_attach raising (every reader entry taken, say) leaves the watcher detached, and the
    next try waits out the backoff."""
    w = rig.watcher
    calls = []

    def refuse(book) -> None:
        calls.append(book.symbols)
        if len(calls) == 1:
            raise RuntimeError("no free reader entry")

    w.on_attach = refuse
    book = create(rig.name)
    try:
        assert not w.poll() and not w.attached and w.book is None and w.identity is None
        assert "not usable" in w.status and w.failures == 1
        assert not w.poll(), "must wait out the backoff"
        rig.later()
        assert w.poll() and w.attached and calls == [("AAPL",), ("AAPL",)]
    finally:
        stop(book)
