"""Follow the OrderBook's price book at a name, across OrderBook restarts.

One watcher serves every process that looks at the book from outside the OrderBook: the
Strategy (which hooks its PriceReader onto on_attach / on_detach), the dashboard and the
OrderManager's PnL marks (read-only quotes()). Call poll() from a timer; nothing here belongs
on a hot path.

Identity: a segment is the pair (owner_pid, created_ns) its creator stamps into header line 0
before it stores the magic. A restarted OrderBook creates a new segment under the same name
(reclaiming or after an unlink), stamping its own pid and a fresh CLOCK_MONOTONIC time, so the
pair changes exactly when the segment does. The file's inode adds nothing: every new file is a
new creation and so a new stamp; a half-created file (magic still 0) already fails validation;
and tmpfs may hand a freed inode number to the next file, so the inode is the weaker rule.
Reading the stamp through shm_open (probe_segment) also keeps /dev/shm paths out of the rule.

This module is part of ext, so it takes its backoff policy as a parameter (reactor.Backoff
fits) instead of importing reactor.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ext import SharedPriceBook, layout
from ext.layout import LayoutError

log = logging.getLogger("tradestack.shm")

# An OrderBook stamps its heartbeat every 0.5 s: four missed stamps mean it is dead or hung.
DEAD_AFTER_S = 2.0
# An implausible-price episode this long with no plausible price re-anchors the band on the
# latest price: a market that really moved by more than the band is traded again.
BAND_REANCHOR_S = 2.0


class PriceBand:
    """Prices more than `max_jump` (a fraction: 0.5 = +-50 %) away from a symbol's last
    accepted price are implausible: refused, counted per symbol, and logged once when an
    episode starts and once when it ends. 0 = off. Not for a hot path (the Strategy host
    inlines the same rule); the OrderManager's marks go through it."""

    def __init__(self, max_jump: float, logger: logging.Logger = log, what: str = "price",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_jump = max_jump
        self.log = logger
        self.what = what
        self.clock = clock
        self.last: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.episodes = 0
        self._since: dict[str, float] = {}   # symbol -> start of its open episode

    def accept(self, symbol: str, price: float) -> bool:
        if not 0.0 < price < math.inf:
            return False
        ref = self.last.get(symbol)
        jump = self.max_jump
        if jump and ref is not None and not ref * (1 - jump) <= price <= ref * (1 + jump):
            self.counts[symbol] = self.counts.get(symbol, 0) + 1
            start = self._since.get(symbol)
            now = self.clock()
            if start is None:
                self._since[symbol] = now
                self.episodes += 1
                self.log.warning("implausible %s %s %r (last accepted %r, band +-%g%%); not "
                                 "used until a plausible one", self.what, symbol, price, ref,
                                 jump * 100)
                return False
            if now - start < BAND_REANCHOR_S:
                return False
            self.log.warning("%s %s stayed out of the band for %.1fs: re-anchored on %r",
                             self.what, symbol, now - start, price)
        elif symbol in self._since:
            self.log.warning("plausible %s %s again: %r (%d implausible so far)", self.what,
                             symbol, price, self.counts.get(symbol, 0))
        self._since.pop(symbol, None)
        self.last[symbol] = price
        return True


class BackoffPolicy(Protocol):
    """Delays between attach attempts (reactor.Backoff is one)."""

    def next(self) -> float: ...
    def reset(self) -> None: ...


class SegmentWatcher:
    """The price book at `name`, attached when it is there and re-attached when it is replaced.

    poll() is the one entry point, from a timer: while detached it tries to attach when the
    backoff allows (a missing or half-created segment is retried, never in a tight loop);
    while attached it probes the header at the name and detaches when the segment vanished or
    was replaced, then attaches the new one on the same or a later poll. on_attach(book) runs
    after each attach; on_detach(reason) runs while the old book is still open, so a caller
    can close its PriceReader before the mapping goes.

    A dead OrderBook whose segment is still there is not detached (its last prices stay
    readable and its successor replaces the segment): liveness() says why it is not live.
    """

    def __init__(self, name: str, backoff: BackoffPolicy, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_attach: Callable[[Any], None] | None = None,
                 on_detach: Callable[[str], None] | None = None,
                 dead_after: float = DEAD_AFTER_S,
                 symbols: Sequence[str] | None = None,
                 max_jump: float = 0.0) -> None:
        self.name = layout.validate_name(name)
        self.backoff = backoff
        self.clock = clock
        self.on_attach = on_attach
        self.on_detach = on_detach
        self.dead_after = dead_after
        # The symbols the segment must have (None: any): a symbol table that differs is
        # corrupted, and attaching to it would map prices to the wrong symbols.
        self.symbols = None if symbols is None else tuple(symbols)
        self.band = PriceBand(max_jump, what="mark")
        self.book: Any = None          # the SharedPriceBook while attached
        self.identity: tuple[int, int] | None = None   # (owner_pid, created_ns)
        self.heartbeat_ns = 0          # the owner's last heartbeat, as of the last poll
        self.status = "not attached"
        self.attaches = 0
        self.failures = 0              # attach attempts failed in a row
        self._next_try = 0.0

    @property
    def attached(self) -> bool:
        return self.book is not None

    @property
    def owner_pid(self) -> int:
        return self.identity[0] if self.identity else 0

    def poll(self) -> bool:
        """Check the segment at the name and (re-)attach when due; True if attached after it."""
        if self.book is not None:
            probe = layout.probe_segment(self.name)
            if probe is None:
                self.detach(f"{self.name} vanished")
            elif (probe.owner_pid, probe.created_ns) != self.identity:
                self.detach(f"{self.name} was replaced by a new OrderBook")
            elif not probe.valid:
                # Corrupted in place (header or symbol table): stale until its owner repairs
                # it; attaching fails validation until then and is retried with backoff.
                self.detach(f"{self.name} is inconsistent ({probe.why})")
            elif probe.symbols != self.book.symbols:
                self.detach(f"{self.name}'s symbol table changed")
            else:
                self.heartbeat_ns = probe.heartbeat_ns
                return True
        return self._attach()

    def retry_in(self) -> float | None:
        """Seconds until the next attach attempt is due (0 = now); None while attached."""
        if self.book is not None:
            return None
        return max(0.0, self._next_try - self.clock())

    def _attach(self) -> bool:
        if self.clock() < self._next_try:
            return False
        try:
            book = SharedPriceBook(name=self.name, create=False, symbols=self.symbols)
        except (FileNotFoundError, ValueError, LayoutError, OSError) as exc:
            # Missing, or caught mid-creation (empty file, header not written yet).
            delay = self.backoff.next()
            self._next_try = self.clock() + delay
            self.failures += 1
            self.status = f"waiting for {self.name} ({type(exc).__name__}; retry in {delay:.1f}s)"
            (log.info if self.failures == 1 else log.debug)(
                "segment %s not ready (%s); retrying in %.2fs", self.name, exc, delay)
            return False
        head = book.header()
        self.book = book
        self.identity = (head["owner_pid"], head["created_ns"])
        self.heartbeat_ns = head["heartbeat_ns"]
        self.attaches += 1
        if self.on_attach is not None:
            try:
                self.on_attach(book)
            except Exception as exc:
                # The caller could not use it (every reader entry taken, say): not attached,
                # and retried with backoff like a missing segment, never half-attached.
                self.book, self.identity = None, None
                book.close()
                delay = self.backoff.next()
                self._next_try = self.clock() + delay
                self.failures += 1
                self.status = f"{self.name} not usable ({exc}); retry in {delay:.1f}s"
                log.warning("segment %s attached but not usable (%s: %s); retrying in %.2fs",
                            self.name, type(exc).__name__, exc, delay)
                return False
        self.backoff.reset()
        self.failures = 0
        self.status = f"attached to {self.name} (OrderBook pid {self.owner_pid})"
        return True

    def detach(self, reason: str = "detached") -> None:
        """Let go of the book (on_detach first, while it is still mapped); the next poll()
        attaches again."""
        book = self.book
        if book is None:
            return
        self.status = f"{reason}; re-attaching"
        try:
            if self.on_detach is not None:
                self.on_detach(reason)
        finally:
            self.book = None
            self.identity = None
            book.close()

    def close(self) -> None:
        self.detach("closed")
        self.status = "closed"

    # --- liveness -------------------------------------------------------------------------------
    def heartbeat_age(self, now_ns: int | None = None) -> float | None:
        """Seconds since the owner's last heartbeat as of the last poll; None while detached."""
        if self.book is None:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return (now - self.heartbeat_ns) / 1e9

    def liveness(self, now_ns: int | None = None) -> str | None:
        """None while the OrderBook behind the book is live, else why it is not."""
        age = self.heartbeat_age(now_ns)
        if age is None:
            return "not attached"
        if not layout.pid_alive(self.owner_pid):
            return f"OrderBook pid {self.owner_pid} is dead"
        if age > self.dead_after:
            return f"OrderBook pid {self.owner_pid} silent for {age:.1f}s"
        return None

    # --- read-only views, for tools -------------------------------------------------------------
    def quotes(self) -> dict[str, tuple[float, int, int]] | None:
        """{symbol: (price, tick_seq, write_ns)} (price NaN if never written), or None while
        not attached. Seqlock reads: they never block the writer and take no reader entry."""
        if not self.poll():
            return None
        book = self.book
        try:
            out = {}
            for i, sym in enumerate(book.symbols):
                if book.seq(i) & 1:
                    continue   # mid-write, or left odd: never wait on it (the owner repairs it)
                price, _sent_ns, tick_seq, write_ns = book.read_slot(i)
                out[sym] = (price, tick_seq, write_ns)
            return out
        except Exception as exc:   # e.g. a writer that died mid-write: the read times out
            self.detach(f"read failed ({type(exc).__name__}: {exc})")
            return None

    def prices(self) -> dict[str, float]:
        """{symbol: latest price} of the symbols written so far; {} while not attached. A price
        that is not finite and positive, or outside the band (max_jump), is left out."""
        quotes = self.quotes() or {}
        accept = self.band.accept
        return {sym: q[0] for sym, q in quotes.items() if accept(sym, q[0])}
