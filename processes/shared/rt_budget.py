"""A real-time process keeps its rank only while it uses at most half of its core.

Why: on a shared core, SCHED_FIFO ranks are absolute. A process that always has work (the
OrderManager with one client flooding valid orders, a Strategy whose on_tick never ends, a feed
that never sleeps) never blocks, so no process ranked below it runs. Measured in the default
layout with one client flooding the OrderManager (bench/bench_flood.py; figures in
performance_report.md, "Order flood"): the OrderManager almost never blocked and used the whole
real-time share of its core, the Gateway and the OrderBook below it got a few milliseconds of
CPU, and no price reached shared memory for seconds at a time. ksoftirqd, where deferred NET_RX
work would wait, barely ran: the loopback softirqs ran inline in the senders. Ranking the
OrderManager below the feed is not enough: its flood work is still real-time work, and once the
real-time class has used its share of the period (sched_rt_runtime_us), the kernel throttles
all of it, the feed included, for the rest of the period. Nor can the OrderManager fix it by
reading its clients in turns or by backpressure on acks: the flood client reads its acks, so
only CPU limits it, and under SCHED_FIFO only blocking (or losing the rank) hands the core to a
lower rank; sched_yield() yields to an equal one only.

So the rank is kept only while it is used as intended, waking, working briefly and blocking.
Each rt_budget_us of the process's CPU time (a CPU-time timer: nothing while it sleeps), a signal
handler compares that CPU time with the wall clock since its last check; over half of the core,
and the handler (ext.demote: C, so it acts at once even inside a long C call such as a garbage
collection pass, which a Python handler would wait out) drops the process to SCHED_OTHER, below
every real-time process: its backlog runs on what the ranked processes leave over. A share, not the
kernel's RLIMIT_RTTIME (run time since the last block): a flooded OrderManager still blocks now
and then (a write(2) that waits on the file system; "blocks" in "Order flood"), and each block
restarts that count while the process keeps the core. The handler rings a doorbell pipe in the
reactor; only then does this object join the loop as an IdleSource (a process that is never
demoted pays nothing per turn), and it gives the rank back just before the loop next may block
(arm()), once one of the loop's waits has blocked since the demotion (its backlog is gone) and
HOLD has passed.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from typing import Any

from ext import demote
from reactor import Reactor, Timer

LOGGED = 5   # demotions logged one by one; the rest are counted (rt_demotions in the stats)
# s a demotion lasts at least. Under a flood that goes on, a block is a moment's lull, and each
# rank taken back then gives the feed below one more budget's stall before the next demotion;
# this bounds those to one per HOLD. Unranked, the process still runs as soon as the ranked
# ones block, so holding it a little longer costs its orders almost nothing.
HOLD = 0.1


def _held() -> None:
    """The wake-up at the end of a demotion's HOLD: the loop's next arm() does the work."""


def _blocks() -> int:
    """Voluntary context switches of this thread: times it blocked."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


class RtBudget:
    """SCHED_FIFO at `priority` while the process uses at most half of its core (measured per
    `budget_us` of CPU), SCHED_OTHER from the moment it uses more until its reactor's wait has
    blocked again. Create it in the process's main thread once SCHED_FIFO is set, just before
    the loop runs; close() it before the process exits."""

    def __init__(self, reactor: Reactor, name: str, priority: int, budget_us: int,
                 log: logging.Logger) -> None:
        self.reactor = reactor
        self.name = name
        self.priority = priority
        self.log = log
        self.demoted = False
        self.demotions = 0
        self._blocks_then = 0     # this thread's blocks before the reactor's wait
        self._slept = False       # demoted, and a reactor wait has blocked since
        self._until = 0.0         # monotonic s: not promoted before
        self._stuck = False   # the rank could not be taken back (CAP_SYS_NICE lost): stop trying
        self._wake: Timer | None = None   # ends the loop's wait when HOLD is over
        self._bell_r, self._bell_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            demote.install(self._bell_w, budget_us)
        except (OSError, ValueError):
            os.close(self._bell_r)
            os.close(self._bell_w)
            raise
        reactor.add_reader(self._bell_r, self._on_demoted)

    def _on_demoted(self) -> None:
        """The doorbell: the handler has demoted this thread."""
        try:
            rung = os.read(self._bell_r, 64)
        except BlockingIOError:
            return
        self.demotions += len(rung)
        if self.demotions <= LOGGED:
            self.log.warning("%s used over half of its core at SCHED_FIFO %d (a flood of work): "
                             "normal scheduling until it is idle again%s", self.name,
                             self.priority, "; further demotions are only counted "
                             "(rt_demotions)" if self.demotions >= LOGGED else "")
        if not self.demoted:
            self.demoted = True
            self.reactor.add_source(self)
        self._slept = False
        self._blocks_then = _blocks()
        self._until = time.monotonic() + HOLD
        # A wake-up when HOLD is over: the rank comes back at the next arm() after it, not at
        # the first event after an idle spell (which would then be served unranked).
        if self._wake is not None:
            self._wake.cancel()
        self._wake = self.reactor.call_later(HOLD, _held)

    # --- IdleSource, while demoted ------------------------------------------------------------
    def poll(self) -> bool:
        return False

    def arm(self) -> bool:
        if not self._stuck:
            if self._slept and time.monotonic() >= self._until:
                self._promote()
            else:
                self._blocks_then = _blocks()
        return True

    def disarm(self) -> None:
        # The wait that just ended blocked (not a write that waited on the disk, not a wait
        # that found events at once): the backlog is gone.
        if _blocks() != self._blocks_then:
            self._slept = True

    def _promote(self) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.priority))
        except OSError as exc:
            self._stuck = True
            self.log.warning("%s: SCHED_FIFO %d not restored after a flood (%s); running with "
                             "normal scheduling", self.name, self.priority, exc)
            return
        self.demoted = False
        self.reactor.remove_source(self)
        if self.demotions <= LOGGED:
            self.log.info("%s idle again: back at SCHED_FIFO %d", self.name, self.priority)

    def stats(self) -> dict[str, Any]:
        return {"rt_demotions": self.demotions, "rt_demoted": self.demoted}

    def close(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
        demote.uninstall()
        self.reactor.remove_reader(self._bell_r)
        self.reactor.remove_source(self)
        os.close(self._bell_r)
        os.close(self._bell_w)
