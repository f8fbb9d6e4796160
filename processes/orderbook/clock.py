"""Whose clock the Gateway's send stamps are on, and the offset that puts them on ours.

Ticks carry the Gateway's CLOCK_MONOTONIC send time, and everything downstream compares it with
this host's CLOCK_MONOTONIC: a price's age (strategy.max_price_age) and the tick -> X latencies.
On one host, or in network namespaces of one kernel, that is one clock. Across real hosts each
counts from its own boot, so the OrderBook measures the difference and, when it cannot be
latency, has the decoder write the stamps on this host's clock (PriceFeedDecoder.clock_offset).

Why the estimate is min(write_ns - sent_ns): each difference is offset + that tick's transit,
and the smallest over many ticks is offset + the smallest transit. It overestimates the offset
by that smallest one-way transit, so corrected ages and tick -> X latencies come out that much
younger (a LAN's transit, against max_price_age's seconds); it never judges a price older than
it is.
"""

from __future__ import annotations

from collections import deque

CLOCK_SKEW_WARN = 1.0  # seconds; a smallest write - send above this cannot be latency: the
                       # Gateway's clock is another host's, and the offset is applied
CLOCK_SAME = 0.5       # seconds; a corrected feed whose offset falls below this is on our clock
                       # again (between the two, the state stays: no flapping)
CLOCK_WINDOWS = 40     # windows the estimate is the smallest over: a burst of queueing shorter
                       # than that never raises it, and a drifting clock is followed


class ClockOffset:
    """The offset (ns) to add to the Gateway's send stamps, from each window's smallest
    write - send difference as the Gateway stamped it (``observe``).

    The offset is 0 (stamps written as they come) until the estimate exceeds CLOCK_SKEW_WARN,
    then it is the estimate, following it, until the estimate falls below CLOCK_SAME. ``reset``
    forgets the windows (a new connection may be to a Gateway on another host); the applied
    offset stays until the next window says otherwise.
    """

    def __init__(self, windows: int = CLOCK_WINDOWS) -> None:
        if windows < 1:
            raise ValueError("windows must be >= 1")
        self._minima: deque[int] = deque(maxlen=windows)
        self.applied_ns = 0
        self.estimate_ns: int | None = None   # the smallest raw write - send over the windows

    def reset(self) -> None:
        self._minima.clear()

    def observe(self, raw_min_ns: int) -> bool:
        """One window's smallest write - send on the Gateway's clock; True when applied_ns
        changed."""
        self._minima.append(raw_min_ns)
        est = min(self._minima)
        self.estimate_ns = est
        if self.applied_ns:
            new = 0 if abs(est) < CLOCK_SAME * 1e9 else est
        else:
            new = est if abs(est) > CLOCK_SKEW_WARN * 1e9 else 0
        changed = new != self.applied_ns
        self.applied_ns = new
        return changed
