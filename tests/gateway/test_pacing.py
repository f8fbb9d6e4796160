"""The one pacer (processes.gateway.pacing) on a virtual clock: rate and file schedules, paced
and unpaced, skip-ahead for the walk, none for a file, the end of a file, the start rule."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from processes.gateway.pacing import (
    ENDLESS,
    FAST_BATCH,
    MAX_BATCH,
    MIN_PERIOD,
    Clock,
    Pacer,
    RateSchedule,
)
from processes.gateway.replay import FileSchedule


class FakeReactor:
    """Timers on a virtual clock: run_until() fires them in time order; call_soon = now."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, Callable[[], Any]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], Any]) -> None:
        heapq.heappush(self._timers, (self.now, next(self._order), callback))

    def call_later(self, delay: float, callback: Callable[[], Any]) -> None:
        heapq.heappush(self._timers, (self.now + delay, next(self._order), callback))

    def run_until(self, t: float, max_calls: int = 1_000_000) -> None:
        for _ in range(max_calls):
            if not self._timers or self._timers[0][0] > t:
                break
            when, _, callback = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            callback()
        self.now = max(self.now, t)

    def stall(self, seconds: float) -> None:
        """The loop was busy elsewhere: time passes, no timer fires."""
        self.now += seconds


class Client:
    def __init__(self, pending: int = 0) -> None:
        self.pending = pending


def rig(schedule: Any, paced: bool = True, clients: list | None = None, **kw: Any
        ) -> tuple[FakeReactor, Pacer, list[int]]:
    reactor = FakeReactor()
    sent: list[int] = []
    pacer = Pacer(reactor, schedule, paced, sent.append,
                  [Client()] if clients is None else clients, 100, **kw)
    return reactor, pacer, sent


def test_a_rate_emits_rate_times_t_batching_above_the_timer_floor():
    reactor, pacer, sent = rig(RateSchedule(100.0))
    pacer.start()
    reactor.run_until(1.0)
    assert sum(sent) == 100 and set(sent) == {1}      # one item per 10 ms timer
    reactor, pacer, sent = rig(RateSchedule(50_000.0))
    pacer.start()
    reactor.run_until(0.1)
    assert sum(sent) == pytest.approx(5000, abs=50)
    assert max(sent) <= 60                            # ~50 per MIN_PERIOD timer, not 1 per item


def test_the_walk_skips_ahead_after_a_stall_and_a_file_does_not():
    reactor, pacer, sent = rig(RateSchedule(10_000.0))
    pacer.start()
    reactor.run_until(0.01)
    before = sum(sent)
    reactor.stall(2.0)                                # 20 000 items overdue
    reactor.run_until(2.02)
    assert sent[len(sent) - 1] <= MAX_BATCH
    assert MAX_BATCH in sent[-30:]                    # one capped burst ...
    assert sum(sent) - before < 20_000                # ... and the rest skipped
    assert pacer.done == pytest.approx(20_200, abs=150)   # the count is on time again

    times = [i * 0.0001 for i in range(20_000)]       # a file: 10 000 rows/s recorded
    sched = FileSchedule(times, 3.0, 1.0, loop=False)
    reactor, pacer, sent = rig(sched)
    pacer.start()
    reactor.run_until(0.01)
    reactor.stall(1.5)
    reactor.run_until(1.6)
    assert max(sent) == MAX_BATCH                     # caught up in MAX_BATCH bursts
    assert sum(sent) == pacer.done                    # every row due is sent, none lost
    assert sched.due(1.6) - pacer.done <= 1           # (the last timer may fire just after)


def test_a_file_ends_or_loops():
    done: list[bool] = []
    sched = FileSchedule([0.0, 0.5, 1.0], 1.5, 1.0, loop=False)
    reactor, pacer, sent = rig(sched, on_done=lambda: done.append(True))
    pacer.start()
    reactor.run_until(10.0)
    assert sum(sent) == 3 and done == [True] and pacer.remaining == 0
    pacer.wake()                                      # a late client: nothing more
    reactor.run_until(20.0)
    assert sum(sent) == 3 and done == [True]
    sched = FileSchedule([0.0, 0.5, 1.0], 1.5, 1.0, loop=True)
    assert sched.total == ENDLESS
    reactor, pacer, sent = rig(sched)
    pacer.start()
    reactor.run_until(3.0)                            # passes at 0, 1.5, 3.0
    assert sum(sent) == 7


def test_unpaced_sends_fast_batches_while_a_client_has_room():
    client = Client()
    reactor, pacer, sent = rig(RateSchedule(0.0), paced=False, clients=[client])
    pacer.start()
    reactor.run_until(0.0, max_calls=10)
    assert sent == [FAST_BATCH] * 10
    client.pending = 1000                             # full: it waits, polling every MIN_PERIOD
    n = len(sent)
    reactor.run_until(0.01)
    assert len(sent) == n                             # nothing while it is full
    client.pending = 0
    reactor.run_until(0.01 + MIN_PERIOD, max_calls=5)
    assert len(sent) > n
    reactor, pacer, sent = rig(FileSchedule([0.0] * 600, 1.0, 0.0, loop=False), paced=False)
    pacer.start()
    reactor.run_until(0.0)
    assert sent == [FAST_BATCH, FAST_BATCH, 600 - 2 * FAST_BATCH]


def test_nothing_runs_before_ready_and_a_shared_clock_keeps_two_feeds_in_step():
    ready = [False]
    reactor = FakeReactor()
    clock = Clock(reactor)
    prices: list[int] = []
    news: list[int] = []
    a = Pacer(reactor, FileSchedule([0.0, 1.0, 2.0], 3.0, 1.0, False), True, prices.append,
              [Client()], 100, lambda: ready[0], clock)
    b = Pacer(reactor, FileSchedule([0.5, 1.5], 3.0, 1.0, False), True, news.append,
              [Client()], 100, lambda: ready[0], clock)
    a.start()
    b.start()
    reactor.run_until(5.0)
    assert prices == news == [] and clock.t0 is None
    ready[0] = True
    a.wake()
    b.wake()
    reactor.run_until(6.0)
    assert clock.t0 == 5.0 and sum(prices) == 2 and sum(news) == 1
    reactor.run_until(7.6)
    assert sum(prices) == 3 and sum(news) == 2
