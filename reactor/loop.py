"""Single-threaded epoll reactor: fd callbacks, timers, idle sources and signals.

One loop turn:
  1. poll every IdleSource (any True -> this turn does not block), unless the previous turn
     polled them right after its wait;
  2. timeout from the earliest live timer and the idle mode;
  3. if about to block, arm() every source (any False -> do not block);
  4. epoll_wait; 5. disarm the armed sources;
  6. dispatch fd callbacks; 7. run call_soon callbacks and due timers.

Linux only: ``select.epoll`` is used directly rather than through ``selectors``, which
wraps every event in a SelectorKey tuple and costs about twice as much per wait.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["HasFileno", "IdleSource", "Reactor", "Timer"]

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
# epoll reports ERR/HUP whether asked or not; hand them to whichever side is registered so
# its own recv/send surfaces the error (the same mapping selectors uses).
_READ_EVENTS = select.EPOLLIN | select.EPOLLPRI | select.EPOLLERR | select.EPOLLHUP
_WRITE_EVENTS = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
# Level-triggered: anything beyond this is reported by the next wait, so the cap only bounds
# the per-call buffer CPython allocates.
_MAX_EVENTS = 256
# Compact the timer heap once this many cancelled entries make up over half of it.
_COMPACT_MIN = 64

_IDLE_MODES = {"block": 0, "spin": 1, "hybrid": 2}
_BLOCK, _SPIN, _HYBRID = 0, 1, 2


@runtime_checkable
class HasFileno(Protocol):
    def fileno(self) -> int: ...


@runtime_checkable
class IdleSource(Protocol):
    """Something that has work without a file descriptor becoming readable (e.g. a
    shared-memory price reader)."""

    def poll(self) -> bool:
        """Do ready work without blocking; True if it did any."""
        ...

    def arm(self) -> bool:
        """About to block: announce it; False = work arrived since the last poll(), do not
        block (the loop may arm without polling again right after a wake-up's poll)."""
        ...

    def disarm(self) -> None:
        """Woke up (always called after a blocking wait for which arm() returned True)."""
        ...


def _fileno(fd: int | HasFileno) -> int:
    return fd if isinstance(fd, int) else fd.fileno()


def _noop(*_args: Any) -> None:
    pass


class Timer:
    """Handle for a scheduled callback; cancellation is lazy (the heap entry is skipped)."""

    __slots__ = ("deadline", "interval", "callback", "args", "cancelled", "_reactor", "_in_heap")

    def __init__(
        self,
        reactor: Reactor,
        deadline: float,
        interval: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        self.deadline = deadline
        self.interval = interval
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._reactor = reactor
        self._in_heap = False

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        # Drop references now so a cancelled timer does not keep its closure alive until the
        # heap gets round to discarding it.
        self.callback = _noop
        self.args = ()
        if self._in_heap:
            self._reactor._timer_cancelled()

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else f"at {self.deadline:.6f}"
        return f"<Timer {state} interval={self.interval}>"


class Reactor:
    """Single-threaded epoll loop shared by every process of the stack.

    ``idle`` picks what a turn with nothing to do costs: "block" sleeps in epoll_wait until a
    timer, fd or signal; "spin" never sleeps (dedicated core); "hybrid" spins for ``spin_us``
    after the last work, then sleeps.
    """

    __slots__ = (
        "idle",
        "running",
        "iterations",
        "_mode",
        "_spin_s",
        "_epoll",
        "_handlers",
        "_heap",
        "_soon",
        "_seq",
        "_ncancelled",
        "_sources",
        "_polls",
        "_arms",
        "_disarms",
        "_stopping",
        "_closed",
        "_clock_res",
        "_sig_r",
        "_sig_w",
        "_sig_prev_wakeup",
        "_sig_prev_handlers",
        "_sig_callbacks",
        "_sig_pending",
    )

    def __init__(self, idle: str = "block", spin_us: float = 50.0) -> None:
        if idle not in _IDLE_MODES:
            raise ValueError(f"idle must be one of {sorted(_IDLE_MODES)}, not {idle!r}")
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        self.idle = idle
        self.running = False
        self.iterations = 0
        self._mode = _IDLE_MODES[idle]
        self._spin_s = spin_us * 1e-6
        self._epoll = select.epoll()
        # fd -> [reader, writer]; the list is mutated in place so an event already fetched
        # for an fd whose callback was removed earlier in the same turn finds None.
        self._handlers: dict[int, list[Callable[[], None] | None]] = {}
        self._heap: list[tuple[float, int, Timer]] = []
        self._soon: deque[Timer] = deque()
        self._seq = itertools.count()
        self._ncancelled = 0
        self._sources: list[IdleSource] = []
        self._polls: tuple[Callable[[], bool], ...] = ()
        self._arms: tuple[Callable[[], bool], ...] = ()
        self._disarms: tuple[Callable[[], None], ...] = ()
        self._stopping = False
        self._closed = False
        self._clock_res = time.get_clock_info("monotonic").resolution
        self._sig_r: socket.socket | None = None
        self._sig_w: socket.socket | None = None
        self._sig_prev_wakeup = -1
        self._sig_prev_handlers: dict[int, Any] = {}
        self._sig_callbacks: dict[int, Callable[[], None]] = {}
        self._sig_pending: deque[int] = deque()

    # -- clock ---------------------------------------------------------------------------

    def time(self) -> float:
        return time.monotonic()

    # -- file descriptors ----------------------------------------------------------------

    def add_reader(self, fd: int | HasFileno, callback: Callable[[], None]) -> None:
        self._set_handler(_fileno(fd), 0, callback)

    def remove_reader(self, fd: int | HasFileno) -> None:
        """No-op if nothing is registered, so close paths can call it unconditionally."""
        self._set_handler(_fileno(fd), 0, None)

    def add_writer(self, fd: int | HasFileno, callback: Callable[[], None]) -> None:
        self._set_handler(_fileno(fd), 1, callback)

    def remove_writer(self, fd: int | HasFileno) -> None:
        self._set_handler(_fileno(fd), 1, None)

    def _set_handler(self, fd: int, side: int, callback: Callable[[], None] | None) -> None:
        if self._closed:
            if callback is None:
                return  # everything was dropped by close(); lets owners clean up late
            raise RuntimeError("reactor is closed")
        handlers = self._handlers
        entry = handlers.get(fd)
        if entry is None:
            if callback is None:
                return
            entry = [None, None]
            entry[side] = callback
            self._epoll.register(fd, _EPOLLIN if side == 0 else _EPOLLOUT)
            handlers[fd] = entry
            return
        had = entry[side] is not None
        entry[side] = callback
        if had == (callback is not None):
            return  # only the callback changed; the kernel's interest set is already right
        mask = (_EPOLLIN if entry[0] is not None else 0) | (
            _EPOLLOUT if entry[1] is not None else 0
        )
        if mask:
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:
                # The fd was closed without being unregistered (the kernel dropped it from the
                # epoll set) and its number has been reused: register the new file.
                self._epoll.register(fd, mask)
        else:
            del handlers[fd]
            try:
                self._epoll.unregister(fd)
            except OSError as exc:
                # Already closed (EBADF) or already gone from the set (ENOENT): nothing to undo.
                if exc.errno not in (errno.EBADF, errno.ENOENT):
                    raise

    # -- timers --------------------------------------------------------------------------

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run on the next turn (after fd dispatch); the turn that queues it does not block."""
        timer = Timer(self, 0.0, 0.0, callback, args)
        self._soon.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        if delay <= 0:
            # Via the ready queue so a callback re-arming itself with delay 0 cannot keep the
            # timer phase of one turn from ever finishing.
            return self.call_soon(callback, *args)
        timer = Timer(self, time.monotonic() + delay, 0.0, callback, args)
        self._push(timer)
        return timer

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """First call after ``interval``; then drift-free (deadline += interval, missed
        deadlines skipped rather than run in a burst)."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        timer = Timer(self, time.monotonic() + interval, interval, callback, args)
        self._push(timer)
        return timer

    def _push(self, timer: Timer) -> None:
        timer._in_heap = True
        heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))

    def _timer_cancelled(self) -> None:
        self._ncancelled += 1
        heap = self._heap
        if self._ncancelled > _COMPACT_MIN and 2 * self._ncancelled > len(heap):
            # In place: run() holds a reference to this list.
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._ncancelled = 0

    # -- idle sources --------------------------------------------------------------------

    def add_source(self, source: IdleSource) -> None:
        if source not in self._sources:
            self._sources.append(source)
            self._rebuild_sources()

    def remove_source(self, source: IdleSource) -> None:
        if source in self._sources:
            self._sources.remove(source)
            self._rebuild_sources()

    def _rebuild_sources(self) -> None:
        # Bound methods cached once: creating them on every turn would allocate.
        self._polls = tuple(s.poll for s in self._sources)
        self._arms = tuple(s.arm for s in self._sources)
        self._disarms = tuple(s.disarm for s in self._sources)

    # -- signals -------------------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` from the loop (never from the signal handler) when ``signum``
        arrives. Main thread only."""
        if self._closed:
            raise RuntimeError("reactor is closed")
        if self._sig_r is None:
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            # PEP 475 makes epoll.poll retry after EINTR once the Python handler has run, so
            # without a wakeup fd a blocked loop would sleep through the signal until its
            # timeout. The C-level handler writes to ``w``; ``r`` is in the epoll set.
            try:
                prev = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
            except BaseException:
                r.close()
                w.close()
                raise
            self._sig_r, self._sig_w, self._sig_prev_wakeup = r, w, prev
            self.add_reader(r.fileno(), self._drain_signals)
        prev_handler = signal.signal(signum, self._on_signal)
        self._sig_prev_handlers.setdefault(signum, prev_handler)
        self._sig_callbacks[signum] = callback

    def remove_signal_handler(self, signum: int) -> None:
        if self._sig_callbacks.pop(signum, None) is not None:
            self._restore_handler(signum, self._sig_prev_handlers.pop(signum))

    @staticmethod
    def _restore_handler(signum: int, prev: Any) -> None:
        # getsignal() returns None for handlers not installed from Python; DFL is the best
        # approximation signal.signal() accepts.
        signal.signal(signum, signal.SIG_DFL if prev is None else prev)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Runs between bytecodes of whatever the main thread is doing: only record.
        self._sig_pending.append(signum)

    def _drain_signals(self) -> None:
        recv = self._sig_r.recv  # type: ignore[union-attr]
        try:
            while recv(256):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._run_signals()

    def _run_signals(self) -> None:
        pending = self._sig_pending
        callbacks = self._sig_callbacks
        while pending:
            cb = callbacks.get(pending.popleft())
            if cb is not None:
                cb()

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        """Run turns until stop(). An exception from any callback propagates out of run()
        (the loop stays usable: run() may be called again)."""
        if self._closed:
            raise RuntimeError("reactor is closed")
        if self.running:
            raise RuntimeError("reactor is already running")
        self.running = True
        # Hot-loop state bound to locals: each self.x in the loop would be a lookup per turn.
        poll = self._epoll.poll
        handlers_get = self._handlers.get
        heap = self._heap
        soon = self._soon
        popleft = soon.popleft
        heappop = heapq.heappop
        heappush = heapq.heappush
        monotonic = time.monotonic
        next_seq = self._seq.__next__
        sig_pending = self._sig_pending
        mode = self._mode
        spin_s = self._spin_s
        res = self._clock_res
        read_events = _READ_EVENTS
        write_events = _WRITE_EVENTS
        max_events = _MAX_EVENTS
        last_work = monotonic()
        # The sources were polled right after the last wait (step 5): polling them again before
        # the next arm() would only repeat it, since arm() refuses when work arrived since that
        # poll. On a shared core this turn is on the critical path of whatever the process just
        # sent (its peer runs only once we block), so it goes straight to arming. Held as the
        # tuple polled: a source added since (a new tuple) is polled as usual.
        polled: tuple[Callable[[], bool], ...] | None = None
        try:
            while not self._stopping:
                self.iterations += 1

                # 1. idle sources
                worked = False
                polls = self._polls
                if polled is polls:
                    polled = None
                elif polls:
                    for p in polls:
                        if p():
                            worked = True
                if sig_pending:
                    # A signal whose wakeup byte was consumed before its Python handler ran.
                    self._run_signals()
                    worked = True

                # 2. timeout: 0 = poll, -1 = until an fd or signal
                if worked or soon or mode == _SPIN:
                    timeout = 0.0
                else:
                    timeout = -1.0
                    while heap:
                        entry = heap[0]
                        if entry[2].cancelled:
                            heappop(heap)
                            entry[2]._in_heap = False
                            self._ncancelled -= 1
                            continue
                        timeout = entry[0] - monotonic()
                        if timeout < 0.0:
                            timeout = 0.0
                        break
                    if mode == _HYBRID and timeout != 0.0 and monotonic() - last_work < spin_s:
                        timeout = 0.0

                # 3. arm sources before sleeping
                armed = 0
                if timeout != 0.0:
                    arms = self._arms
                    if arms:
                        disarms = self._disarms
                        for arm in arms:
                            if not arm():
                                timeout = 0.0
                                break
                            armed += 1
                        if timeout == 0.0:
                            # Work arrived while arming: no sleep, so no wait to wake from.
                            for i in range(armed):
                                disarms[i]()
                            armed = 0

                # 4. wait
                events = poll(timeout, max_events)

                # 5. disarm; a source is the likeliest reason we woke, so poll it now, before
                # the fd callbacks and timers (saves their cost on the wake-up -> work latency;
                # its doorbell fd callback then finds nothing to do).
                if armed:
                    for i in range(armed):
                        disarms[i]()
                    for p in polls:
                        if p():
                            worked = True
                    polled = polls

                # 6. fd callbacks
                if events:
                    worked = True
                    for fd, ev in events:
                        entry = handlers_get(fd)
                        if entry is None:
                            continue
                        if ev & read_events:
                            cb = entry[0]
                            if cb is not None:
                                cb()
                        if ev & write_events:
                            # Re-read: the reader may have just removed the writer.
                            cb = entry[1]
                            if cb is not None:
                                cb()

                # 7. call_soon callbacks queued before this phase, then due timers
                if soon:
                    worked = True
                    for _ in range(len(soon)):
                        t = popleft()
                        if not t.cancelled:
                            t.callback(*t.args)
                if heap:
                    now = monotonic() + res
                    while heap:
                        entry = heap[0]
                        t = entry[2]
                        if t.cancelled:
                            heappop(heap)
                            t._in_heap = False
                            self._ncancelled -= 1
                            continue
                        if entry[0] > now:
                            break
                        heappop(heap)
                        interval = t.interval
                        if interval:
                            # Reschedule before the call: the callback may cancel it, and an
                            # exception from it must not lose the schedule.
                            due = entry[0] + interval
                            if due <= now:
                                due += interval * ((now - due) // interval + 1)
                            t.deadline = due
                            heappush(heap, (due, next_seq(), t))
                        else:
                            t._in_heap = False
                        worked = True
                        t.callback(*t.args)

                if mode == _HYBRID and worked:
                    last_work = monotonic()
        finally:
            self.running = False
            self._stopping = False

    def run_for(self, seconds: float) -> None:
        timer = self.call_later(seconds, self.stop)
        try:
            self.run()
        finally:
            timer.cancel()

    def stop(self) -> None:
        """Make run() return after the current turn; before run() it makes run() return at
        once."""
        self._stopping = True

    def close(self) -> None:
        """Release the epoll fd and restore signal handlers and the wakeup fd. Registered
        fds belong to their owners and are not closed."""
        if self._closed:
            return
        if self.running:
            raise RuntimeError("cannot close a running reactor; stop() it first")
        self._closed = True
        for signum, prev in self._sig_prev_handlers.items():
            self._restore_handler(signum, prev)
        self._sig_prev_handlers.clear()
        self._sig_callbacks.clear()
        if self._sig_w is not None:
            signal.set_wakeup_fd(self._sig_prev_wakeup)
            self._sig_r.close()  # type: ignore[union-attr]
            self._sig_w.close()
            self._sig_r = self._sig_w = None
        self._epoll.close()
        self._handlers.clear()
        for _, _, t in self._heap:
            t._in_heap = False
        self._heap.clear()
        self._soon.clear()
        self._sources.clear()
        self._rebuild_sources()
