"""processes.shared.rt_budget in a real reactor at SCHED_FIFO: a process demoted for a flood of
work gets its rank back once the flood is over, even when it then sits idle with nothing to
wake it (the first event after the lull is served ranked). In a child process, which the kernel
really signals and reschedules."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time

import pytest
from floodutil import sched_fifo_problem
from stackutil import wait_until

CTX = mp.get_context("spawn")
PRIORITY = 10


def _flood_then_idle(report) -> None:
    from processes.shared.rt_budget import RtBudget
    from reactor import Reactor

    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
    reactor = Reactor()
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    budget = RtBudget(reactor, "flooded", PRIORITY, 4000, logging.getLogger("rt-test"))
    deadline = time.monotonic() + 10

    def work() -> None:   # a backlog that never ends, a turn at a time, until demoted
        if budget.demoted or time.monotonic() > deadline:
            report.send(budget.demoted)   # then idle: no timer, no fd, nothing to wake it
            return
        until = time.monotonic() + 0.001
        while time.monotonic() < until:
            pass
        reactor.call_soon(work)
    reactor.call_soon(work)
    try:
        reactor.run()
    finally:
        budget.close()
        reactor.close()


@pytest.mark.timeout(60)
def test_a_demoted_process_gets_its_rank_back_while_idle():
    problem = sched_fifo_problem()
    if problem:
        pytest.skip(problem)
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_flood_then_idle, args=(child,))
    proc.start()
    try:
        assert parent.poll(30) and parent.recv() is True, "never demoted by its flood"
        wait_until(lambda: os.sched_getscheduler(proc.pid) == os.SCHED_FIFO, 10,
                   what="the idle process back at SCHED_FIFO")
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    assert proc.exitcode == 0
