"""The subscribers of one Gateway feed (prices or news), and what happens to one that cannot keep up
or that talks when it should listen.

Every client's pending output is bounded (reactor.Connection.max_write_buffer). Past the bound,
per `gateway.slow_client`:

- "drop": the batch is not queued for that client (counted in its dropped_sends); it gets later
  batches as soon as they fit again. Its stream has holes (the OrderBook counts them as gaps).
- "close": the client is disconnected as a slow consumer.
- "conflate": the client leaves the broadcast list. Once its queue has drained to the kernel it
  gets one snapshot, the latest value of every symbol, in place of everything it missed, and
  rejoins. A latest-value consumer (the OrderBook) thus reads fresh prices as soon as it reads
  again instead of working through a backlog; the skipped sequence numbers show up as gaps.

A batch larger than a client's whole bound is refused with nothing queued, so no drain follows it:
under "drop" and "conflate" the client stays in the broadcast list and loses that batch (counted
in its dropped_sends; one line logged per feed), as it cannot be behind with nothing queued.

One line is logged when a client starts being slow and one when it has caught up, never one per
batch; a client that keeps flapping between the two (at tick_rate 0 the feed runs at the fastest
client's pace, so every slower one overflows now and then) gets at most one pair per
SLOW_LOG_QUIET seconds, the rest counted in slow_events. The broadcast loop only ever walks
`live` and calls `lagging()` only for a send that failed, so a healthy stream costs exactly what
it did before.

Clients of these feeds must send nothing: any byte from one closes it with a log line (the first
LOGGED_BAD_CLIENTS; then counted), so a confused or hostile peer cannot make the Gateway buffer
or parse anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from reactor import Connection

LOGGED_BAD_CLIENTS = 20   # send-only violations logged one by one; the rest only counted
SLOW_LOG_QUIET = 10.0     # seconds: a client's next slow/caught-up pair is logged after this


class Subscribers:
    """One feed's clients: `live` ones get every batch; conflating ones wait for their drain."""

    def __init__(self, feed: str, policy: str, snapshot: Callable[[], bytes],
                 batches: Callable[[], int], on_rejoin: Callable[[], None],
                 log: logging.Logger) -> None:
        self.feed = feed                  # "price" or "news", for the log
        self.policy = policy
        self.snapshot = snapshot          # latest value of every symbol, as frames
        self.batches = batches            # batches broadcast so far (to count what was missed)
        self.on_rejoin = on_rejoin        # a client is back (wakes an idle unpaced feed)
        self.log = log
        self.live: list[Connection] = []
        self._slow: dict[Connection, tuple[float, int, bool]] = {}  # since, batches, logged
        self._quiet_until: dict[Connection, float] = {}   # no slow line for conn before this
        self.slow_events = 0              # times a client started being slow
        self.conflated = 0                # snapshots sent in place of missed batches
        self.conflated_batches = 0        # batches conflating clients missed
        self.bad_clients = 0              # closed for sending to a send-only feed
        self.oversized = 0                # batches refused for being over a client's whole bound

    def __len__(self) -> int:
        return len(self.live) + sum(1 for c in self._slow if c not in self.live)

    @property
    def slow(self) -> int:
        """Clients slow right now."""
        return len(self._slow)

    def add(self, conn: Connection) -> None:
        conn.on_data = lambda buf, start, end: self._unexpected(conn, buf, start, end)
        self.live.append(conn)

    def remove(self, conn: Connection) -> None:
        if conn in self.live:
            self.live.remove(conn)
        self._slow.pop(conn, None)
        self._quiet_until.pop(conn, None)

    def dropped(self) -> int:
        return sum(c.dropped_sends for c in {*self.live, *self._slow})

    # --- slow consumers (called only when a send failed) --------------------------------------
    def lagging(self, conn: Connection) -> None:
        """conn.send() refused a batch (its queue is full) and conn is still open."""
        if conn.closed or conn in self._slow:
            return
        if not conn.pending:
            # Nothing queued, so no drain follows: the batch alone is over the client's whole
            # bound. The client is not behind; it stays live (the batch is dropped and counted)
            # rather than wait, outside `live`, for an on_drain that never comes.
            self._oversized(conn)
            return
        now = time.monotonic()
        logged = now >= self._quiet_until.get(conn, 0.0)
        if logged:
            self._quiet_until[conn] = now + SLOW_LOG_QUIET
        self._slow[conn] = (now, self.batches(), logged)
        self.slow_events += 1
        conn.on_drain = self._drained
        if self.policy == "conflate":
            self.live.remove(conn)
            action = "conflating its feed to the latest value per symbol"
        else:
            action = "dropping batches"
        if logged:
            self.log.warning("%s client %s is slow (%d bytes pending): %s until it catches up",
                             self.feed, conn.peer, conn.pending, action)

    def _drained(self, conn: Connection) -> None:
        """Its queue went to the kernel: it reads again."""
        conn.on_drain = None
        since, batches0, logged = self._slow.pop(conn, (time.monotonic(), self.batches(), False))
        missed = self.batches() - batches0
        if self.policy == "conflate":
            self.conflated += 1
            self.conflated_batches += missed
            self.live.append(conn)
            conn.send(self.snapshot())
            self.on_rejoin()
            what = f"sent the latest value per symbol in place of {missed} batches"
        else:
            what = f"{conn.dropped_sends} batches dropped so far"
        if logged:
            self.log.info("%s client %s caught up after %.1fs; %s", self.feed, conn.peer,
                          time.monotonic() - since, what)

    def _oversized(self, conn: Connection) -> None:
        self.oversized += 1
        if self.oversized == 1:
            self.log.warning("a %s batch is larger than gateway.max_client_buffer (%d bytes): "
                             "dropped for client %s, as is every batch that size (raise the "
                             "bound)", self.feed, conn.max_write_buffer, conn.peer)

    # --- hostile input ------------------------------------------------------------------------
    def _unexpected(self, conn: Connection, buf: bytearray, start: int, end: int) -> int:
        """Bulk consumer of a client's input: there must be none, so close it."""
        self.bad_clients += 1
        if self.bad_clients <= LOGGED_BAD_CLIENTS:
            self.log.warning("closing %s client %s: it sent %d bytes (%r...) but clients of this "
                             "feed must send nothing", self.feed, conn.peer, end - start,
                             bytes(buf[start:min(end, start + 40)]))
        conn.close("sent data to a send-only feed")
        return end
