"""OrderBook: subscribes to the Gateway's price stream and keeps the latest tick of every symbol in
shared memory (ext.SharedPriceBook), for any number of readers that never block it.

Each tick is published as soon as it is written: publish() is one atomic add when nobody sleeps, and
rings a sleeping reader's doorbell otherwise, so the first tick of a burst reaches the Strategy
without waiting for the rest of the recv() batch to be parsed.

When the Gateway's clock is another host's, the send times are written on this host's clock
(processes/orderbook/clock.py says how and what it costs), so readers judge ages on one clock.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from ext import IMPLEMENTATION, WIRE_IMPLEMENTATION, PriceFeedDecoder, SharedPriceBook
from processes.orderbook.clock import CLOCK_SKEW_WARN, ClockOffset
from processes.shared import config as config_mod
from processes.shared import runtime, telemetry
from processes.shared.dead_peer import DEAD_PEER_SOCKOPTS
from processes.shared.telemetry import Recorder
from reactor import Backoff, Connection, Dialer, Reactor

log = logging.getLogger("orderbook")

HEARTBEAT_INTERVAL = 0.5  # seconds; readers (the Strategy) and the next OrderBook's reclaim
                          # judge our liveness by it (ext.layout.HEARTBEAT_STALE_S)
GAP_CHECK_INTERVAL = 1.0  # seconds between looks at the decoder's gap counter (off the hot path)
GAP_LOG_EVERY = 10.0      # at most one gap line per this many seconds while gaps keep coming
LOGGED_REJECTS = 5        # malformed/unknown frames logged one by one; the rest only counted
MAX_PRICE_FRAME = 256     # bytes; a longer price frame closes the feed connection


class OrderBookService:
    """Price-feed client writing into a SharedPriceBook it creates and unlinks."""

    def __init__(self, reactor: Reactor, cfg: config_mod.Config, lock: Any = None) -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.lock = lock
        self.book: SharedPriceBook | None = None
        self.decoder: PriceFeedDecoder | None = None
        self.dialer: Dialer | None = None
        self.disconnects = 0
        self.tick_to_shm = Recorder("tick_to_shm")   # Gateway send -> slot written
        # Gap reporting: the decoder counts every missing sequence number on the hot path (in
        # total and per symbol); a timer turns the counters into one line per burst.
        self._gaps_reported = 0
        self._gaps_by_symbol: list[int] = []
        self._gap_logged_at = float("-inf")
        self.repairs = 0           # corrupted parts of our segment rewritten (check_segment)
        self.recreated = 0         # segments re-created after ours was unlinked or replaced
        self.clock = ClockOffset()  # the Gateway's clock onto ours (processes/orderbook/clock.py)
        self.latency_other_clock = 0   # samples dropped: measured against another host's clock
        self._repairing = False    # a corruption episode is on (logged at start and end)
        self._lock_skips_seen = 0
        self._lock_episode = False
        self._recreate_failed = False

    def start(self) -> dict[str, Any]:
        m, net = self.cfg.market, self.cfg.network
        self.book = SharedPriceBook(m.symbols, name=m.shm_name, create=True, lock=self.lock)
        if self.book.reclaimed:
            log.warning("reclaimed segment %s left behind by a crashed run", self.book.name)
        # The hot path: framing, parsing, gap accounting, seqlock write and publish of every tick
        # of a recv() in one native call (ext.PriceFeedDecoder), no Python call per frame.
        self.decoder = PriceFeedDecoder(self.book, max_frame=MAX_PRICE_FRAME,
                                        on_reject=self._reject)
        self.reactor.call_every(HEARTBEAT_INTERVAL, self._heartbeat)
        self.reactor.call_every(telemetry.FOLD_INTERVAL, self._drain_latencies)
        self._gaps_by_symbol = [0] * self.book.nsymbols
        self.reactor.call_every(GAP_CHECK_INTERVAL, self._check_gaps)
        self.dialer = Dialer(self.reactor, net.gateway_host, net.price_port,
                             on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                             on_data=self.decoder.feed, backoff=Backoff(),
                             max_frame=MAX_PRICE_FRAME, read_capacity=1 << 18,
                             sockopts=_feed_sockopts(self.cfg.gateway.socket_buffer)
                             + DEAD_PEER_SOCKOPTS)
        self.dialer.start()
        return {"shm_name": self.book.name, "symbols": self.book.nsymbols,
                "bytes": self.book.size, "impl": IMPLEMENTATION, "codec": WIRE_IMPLEMENTATION}

    def close(self) -> None:
        if self.dialer is not None:
            self.dialer.close()
        if self.book is not None:
            self.book.unlink()   # first: the name must go even if unmapping fails
            self.book.close()

    def recorders(self) -> tuple[Recorder, ...]:
        self._drain_latencies()
        return (self.tick_to_shm,)

    def _drain_latencies(self) -> None:
        """The decoder stamps latencies into its own bounded buffer; move them into the
        histogram often enough that it never fills at the rates we sustain.

        Each drain is also a window of the clock check: the samples are write - send on the
        offset the decoder applied, so their smallest plus that offset is the window's raw
        write - send (processes/orderbook/clock.py). Taken and applied in this one call, on the
        reactor's thread, no sample ever mixes two offsets.
        """
        d = self.decoder
        if d is None:
            return
        samples = d.take_latencies()
        if not samples.size:
            return
        was = self.clock.applied_ns
        if self.clock.observe(int(samples.min()) + was):
            d.clock_offset = self.clock.applied_ns
            if self._clock_changed(was):
                self.latency_other_clock += int(samples.size)
                return   # measured against a clock we now know is not ours
        self.tick_to_shm.extend(samples)

    def _clock_changed(self, was: int) -> bool:
        """Log a change of the applied offset that is a change of clock (on, off, or a jump:
        another Gateway host); True for those. The estimate following a drifting clock is not
        logged."""
        now = self.clock.applied_ns
        if abs(now - was) <= CLOCK_SKEW_WARN * 1e9:
            return False
        if now:
            log.warning("the Gateway's clock is %+.1f s off this host's (CLOCK_MONOTONIC counts "
                        "from each host's boot): writing its send times into the book on this "
                        "host's clock, so price ages (strategy.max_price_age) and tick "
                        "latencies are this host's, younger by the smallest transit",
                        now / 1e9)
        else:
            log.warning("the Gateway's clock is this host's again: writing its send times "
                        "into the book as they come")
        return True

    def stats(self) -> dict[str, Any]:
        d = self.decoder
        return {"ticks": d.ticks if d else 0, "malformed": d.malformed if d else 0,
                "unknown": d.unknown if d else 0, "empty": d.empty if d else 0,
                "gaps": d.gaps if d else 0, "seq_resets": d.seq_resets if d else 0,
                "latency_unrecorded": d.latency_dropped if d else 0,
                "lock_skips": self.book.lock_skips if self.book else 0,
                "repairs": self.repairs, "recreated": self.recreated,
                "connected": bool(self.dialer and self.dialer.connected),
                "clock_skew_s": round((self.clock.estimate_ns or 0) / 1e9, 3),
                "clock_offset_s": round(self.clock.applied_ns / 1e9, 6),
                "latency_other_clock": self.latency_other_clock,
                "reconnects": self.dialer.reconnects if self.dialer else 0}

    # --- the segment we own: heartbeat, repair, re-create (timer, never per tick) ----------------
    def _heartbeat(self) -> None:
        """Every HEARTBEAT_INTERVAL: stamp the heartbeat, then check what we own.

        Anything that can open the name can scribble on the segment, unlink it (a tracked
        SharedMemory attach makes Python's resource tracker unlink it at exit) or hold the
        writers' semaphore. The checks are cheap (a header line, the symbol table, 16 reader
        entries, one seq word per symbol) and each kind of trouble is one episode: logged when
        it starts and when it ends, counted in stats, never a line per heartbeat.
        """
        book = self.book
        assert book is not None
        gone = book.mapping_gone()
        if gone is not None:
            self._recreate(gone)
            return
        book.heartbeat()
        fixed = book.check_segment()
        if fixed:
            self.repairs += len(fixed)
            if not self._repairing:
                log.warning("segment %s was corrupted; rewrote %s", book.name, ", ".join(fixed))
            self._repairing = True
        elif self._repairing:
            self._repairing = False
            log.warning("segment %s is consistent again (%d repairs so far)", book.name,
                        self.repairs)
        self._check_lock(book)

    def _check_lock(self, book: SharedPriceBook) -> None:
        """A lock episode starts with the first skipped write and ends when an acquire
        succeeds again (a write, or check_segment's try)."""
        skips = book.lock_skips
        if not self._lock_episode:
            if skips > self._lock_skips_seen:
                self._lock_episode = True
                log.error("the writers' lock of %s is held by another process (holder unknown:"
                          " a POSIX semaphore does not record one); skipping writes, prices go "
                          "stale", book.name)
            else:
                self._lock_skips_seen = skips
        elif not book.lock_stalled:
            self._lock_episode = False
            log.warning("the writers' lock of %s is free again; %d writes were skipped",
                        book.name, skips - self._lock_skips_seen)
            self._lock_skips_seen = skips

    def _recreate(self, why: str) -> None:
        """Our segment is no longer at the name: create a new one there and write into it, so
        readers (which follow the name: ext.segment) re-attach. The old mapping is closed, not
        unlinked: the name is no longer its."""
        old = self.book
        assert old is not None and self.decoder is not None
        m = self.cfg.market
        try:
            new = SharedPriceBook(m.symbols, name=m.shm_name, create=True, lock=self.lock)
        except (FileExistsError, OSError) as exc:
            if not self._recreate_failed:
                log.error("segment %s: %s, and it cannot be re-created (%s); retrying every "
                          "heartbeat", m.shm_name, why, exc)
            self._recreate_failed = True
            return
        self._recreate_failed = False
        self.decoder.rebind(new)
        self.book = new
        self._lock_skips_seen = 0
        old.close()
        self.recreated += 1
        log.warning("segment %s: %s; re-created it (readers re-attach)", new.name, why)

    # --- feed ------------------------------------------------------------------------------------
    def _on_connect(self, conn: Connection) -> None:
        log.info("connected to price feed %s", conn.peer)
        # The Gateway may be another one now, on another host's clock: the old connection's
        # samples are judged first, so no window mixes the two.
        self._drain_latencies()
        self.clock.reset()

    def _on_disconnect(self, reason: str | None) -> None:
        if self.dialer is not None and self.dialer.closed:
            return  # our own shutdown, not a lost feed
        self.disconnects += 1
        log.warning("price feed lost (%s); reconnecting with backoff", reason or "closed by peer")

    def _check_gaps(self) -> None:
        """Timer: one warning when the gap counter moved, never one per tick or per gap.

        While gaps keep coming (a slow-consumer policy dropping or conflating our feed, say) the
        next line waits GAP_LOG_EVERY seconds and then covers them all, split by symbol.
        """
        d = self.decoder
        if d is None or d.gaps == self._gaps_reported:
            return
        now = self.reactor.time()
        if now - self._gap_logged_at < GAP_LOG_EVERY:
            return
        by_symbol = d.gaps_by_symbol()
        assert self.book is not None
        missed = [f"{sym} {n - n0}" for sym, n, n0
                  in zip(self.book.symbols, by_symbol, self._gaps_by_symbol) if n > n0]
        log.warning("price feed has sequence gaps: %d ticks missing since the last report "
                    "(%d in total); by symbol: %s", d.gaps - self._gaps_reported, d.gaps,
                    ", ".join(missed[:20]) + (", ..." if len(missed) > 20 else ""))
        self._gaps_reported, self._gaps_by_symbol = d.gaps, by_symbol
        self._gap_logged_at = now

    def _reject(self, frame: bytes, reason: str) -> None:
        """Called by the decoder for each bad frame (not the hot path); logs the first few."""
        if self.decoder is not None and self.decoder.malformed + self.decoder.unknown \
                <= LOGGED_REJECTS:
            log.warning("skipped price frame %r: %s", frame[:80], reason)


def _feed_sockopts(size: int) -> tuple[tuple[int, int, int], ...]:
    """The receive side of gateway.socket_buffer: at full rate an autotuned receive buffer grows
    to megabytes, and each tick then waits behind all of them before we even read it."""
    return ((socket.SOL_SOCKET, socket.SO_RCVBUF, size),) if size else ()


def run(cfg: config_mod.Config, ready: Any = None, supervised: bool = False,
        lock: Any = None) -> int:
    return runtime.serve("orderbook", cfg, lambda r: OrderBookService(r, cfg, lock), ready,
                         supervised=supervised)


def main(argv: list[str] | None = None) -> int:
    cfg = runtime.cli("orderbook", "Price-feed client that maintains the shared-memory book.",
                      ("orderbook",), argv, extra=(("network", "price_port"),))
    return 0 if cfg is None else run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
