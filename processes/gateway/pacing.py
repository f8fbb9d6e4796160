"""One pacer for every Gateway feed: the random walk, its sentiment, and a replayed file.

A feed is a Schedule (when items are due) plus an emit(n) callback (format and send the next n).
The Schedule answers two questions in wall seconds since the feed's clock started: how many items
are due in total at elapsed time t (the walk: rate x t; a file: by its timestamps and csv_speed),
and when the next one is due. The Pacer counts what it has emitted and sends the difference.

Paced: a timer at the next item's due time (never sooner than MIN_PERIOD after the last), so items
due together share one send. After a stall a Schedule that may skip (the synthetic walk) jumps to
what is due now and sends at most MAX_BATCH; one that may not (a replayed file) sends MAX_BATCH
per loop turn until it is on time, so no row is lost. Unpaced (rate or speed 0): FAST_BATCH items
per loop turn while some client has room; while none has, a look every MIN_PERIOD.

The clock starts when `ready()` first holds (checked at start() and on every wake(), i.e. when a
client arrives); feeds that must stay in step (a file's prices and news) share one Clock.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Protocol

from reactor import Connection, Reactor

MAX_BATCH = 4096          # items formatted into one send; bounds the burst after a stall
FAST_BATCH = 256          # items per loop turn when unpaced ("as fast as clients drain")
MIN_PERIOD = 0.001        # at most one pacing timer per millisecond; closer items share a batch
ENDLESS = sys.maxsize     # Schedule.total of a source that never ends


class Schedule(Protocol):
    """When a feed's items are due, in wall seconds since its clock started."""

    skips: bool           # after a stall, drop the overdue items instead of sending them all
    total: int            # items the source holds (ENDLESS for a walk or a looping file)

    def due(self, elapsed: float) -> int:
        """Items due in total (emitted or not) at `elapsed` seconds."""
        ...

    def when(self, k: int) -> float:
        """Elapsed seconds at which item k (0-based, k < total) is due."""
        ...


class RateSchedule:
    """`rate` items per second, evenly spaced: the random walk and its sentiment."""

    __slots__ = ("rate", "skips", "total")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.skips = True
        self.total = ENDLESS

    def due(self, elapsed: float) -> int:
        # The nudge absorbs rounding: at when(k), item k must count as due.
        return int(elapsed * self.rate + 1e-9)

    def when(self, k: int) -> float:
        return (k + 1) / self.rate if self.rate > 0 else math.inf


class Clock:
    """A start time shared by the feeds that follow it; unset until the first of them starts."""

    __slots__ = ("reactor", "t0")

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.t0: float | None = None

    def start(self) -> None:
        if self.t0 is None:
            self.t0 = self.reactor.time()

    def elapsed(self) -> float:
        return self.reactor.time() - self.t0 if self.t0 is not None else 0.0


class Pacer:
    """Drives one feed on the reactor: start() once, wake() when a client arrives."""

    __slots__ = ("reactor", "schedule", "paced", "emit", "clients", "room", "ready", "clock",
                 "on_done", "done", "_scheduled", "_finished")

    def __init__(self, reactor: Reactor, schedule: Schedule, paced: bool,
                 emit: Callable[[int], None], clients: list[Connection], room: int,
                 ready: Callable[[], bool] | None = None, clock: Clock | None = None,
                 on_done: Callable[[], None] | None = None) -> None:
        self.reactor = reactor
        self.schedule = schedule
        self.paced = paced
        self.emit = emit
        self.clients = clients          # the live broadcast list: unpaced output waits for room
        self.room = room
        # Paced feeds run from start() unless told otherwise; unpaced ones need a client anyway.
        self.ready = ready or (lambda: True)
        self.clock = clock or Clock(reactor)
        self.on_done = on_done
        self.done = 0                   # items emitted or skipped
        self._scheduled = False
        self._finished = False

    @property
    def remaining(self) -> int:
        total = self.schedule.total
        return ENDLESS if total == ENDLESS else total - self.done

    def start(self) -> None:
        self.wake()

    def wake(self) -> None:
        """Start the clock once `ready()` holds; restart an unpaced feed that went idle."""
        if self._scheduled or self._finished or not self.ready():
            return
        if self.remaining <= 0:
            self._finish()
            return
        self._scheduled = True
        if self.paced:
            self.clock.start()
            self.reactor.call_soon(self._paced)
        else:
            self.reactor.call_soon(self._pump)

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            if self.on_done is not None:
                self.on_done()

    def _paced(self) -> None:
        schedule = self.schedule
        due = min(schedule.due(self.clock.elapsed()), schedule.total)
        n = due - self.done
        if n > MAX_BATCH:
            if schedule.skips:
                self.done = due - MAX_BATCH
            n = MAX_BATCH
        if n > 0:
            self.emit(n)
            self.done += n
        if self.remaining <= 0:
            self._scheduled = False
            self._finish()
            return
        delay = schedule.when(self.done) - self.clock.elapsed()
        if delay <= 0 and n > 0:
            self.reactor.call_soon(self._paced)      # behind: the next batch on the next turn
        else:
            self.reactor.call_later(max(delay, MIN_PERIOD), self._paced)

    def _pump(self) -> None:
        self._scheduled = False
        if not self.clients:
            return  # nobody listening: idle until wake()
        if any(c.pending < self.room for c in self.clients):
            n = min(FAST_BATCH, self.remaining)
            if n > 0:
                self.emit(n)
                self.done += n
            if self.remaining <= 0:
                self._finish()
                return
            self.wake()
        else:
            self._scheduled = True
            self.reactor.call_later(MIN_PERIOD, self._pump)
