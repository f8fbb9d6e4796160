"""Pure-Python twin of ext/_demote.pyx: demote a SCHED_FIFO thread that uses more than half of
its core.

The same contract, with two differences. The checks come from ITIMER_PROF (the process's CPU
time, which the kernel samples at its ticks) rather than from a CPU-time timer of the thread;
the share itself is the thread's own CPU time against the wall clock, as in the compiled one.
And a Python-level handler runs between two bytecodes, so during a long C call (a garbage
collection pass) the demotion waits until the call returns: the reason for the compiled one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

_state: dict[str, Any] = {"demotions": 0, "tid": 0, "fd": -1, "last": None, "previous": None,
                          "installed": False, "interval_ns": 0}


def _on_sigprof(_signum: int, _frame: Any) -> None:
    now = (time.monotonic_ns(), time.thread_time_ns())   # handlers run in the main thread
    last = _state["last"]
    tid = _state["tid"]
    if not tid or last is None:
        _state["last"] = now
        return
    wall, cpu = now[0] - last[0], now[1] - last[1]
    # ITIMER_PROF counts the whole process's CPU time, charged a tick at a time: another thread
    # caught running by another CPU's tick fires it a fraction of a millisecond after the last
    # check, and in so short a window a thread that just ran looks like it uses its whole core.
    # A share is judged over at least one interval of wall time.
    if wall < _state["interval_ns"]:
        return
    _state["last"] = now
    if 2 * cpu <= wall:
        return
    try:
        if os.sched_getscheduler(tid) not in (os.SCHED_FIFO, os.SCHED_RR):
            return
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        return
    _state["demotions"] += 1
    if _state["fd"] >= 0:
        try:
            os.write(_state["fd"], b"\x01")
        except BlockingIOError:
            pass   # a full pipe: already rung


def install(fd: int, interval_us: int) -> None:
    """From now on the calling (main) thread, while SCHED_FIFO (or RR), drops to SCHED_OTHER
    once it has used over half of its core between two checks, one each `interval_us` of CPU
    time; each demotion writes one byte to `fd` (-1: none). Once per process until uninstall()."""
    if interval_us <= 0:
        raise ValueError("interval_us must be > 0")
    if _state["installed"]:
        raise OSError("already installed")
    _state.update(tid=threading.get_native_id(), fd=fd, last=None, interval_ns=interval_us * 1000)
    _state["previous"] = signal.signal(signal.SIGPROF, _on_sigprof)
    _state["installed"] = True
    signal.setitimer(signal.ITIMER_PROF, interval_us / 1e6, interval_us / 1e6)


def uninstall() -> None:
    """The timer off, and the SIGPROF handler that was there before install()."""
    if _state["installed"]:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, _state["previous"])
        _state.update(installed=False, tid=0, fd=-1)


def demotions() -> int:
    """Times the handler demoted the thread since the process started."""
    return _state["demotions"]
