"""OrderBook: subscribes to the Gateway's price stream and keeps the latest tick of every symbol in
shared memory (ext.SharedPriceBook), for any number of readers that never block it.

Each tick is published as soon as it is written: publish() is one atomic add when nobody sleeps, and
rings a sleeping reader's doorbell otherwise, so the first tick of a burst reaches the Strategy
without waiting for the rest of the recv() batch to be parsed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ext import IMPLEMENTATION, SharedPriceBook
from processes import config as config_mod
from processes import runtime
from processes.protocol import MAX_FRAME, ProtocolError, parse_price
from processes.telemetry import Recorder
from reactor import Backoff, Connection, Dialer, Reactor

log = logging.getLogger("orderbook")

HEARTBEAT_INTERVAL = 0.5  # seconds; written for readers and reclaim logic to judge liveness
                          # (today reclaim uses owner_pid only; see the reliability issue)
LOGGED_REJECTS = 5        # malformed/unknown frames logged one by one; the rest only counted


class OrderBookService:
    """Price-feed client writing into a SharedPriceBook it creates and unlinks."""

    def __init__(self, reactor: Reactor, cfg: config_mod.Config, lock: Any = None) -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.lock = lock
        self.book: SharedPriceBook | None = None
        self.dialer: Dialer | None = None
        self.ticks = 0
        self.malformed = 0
        self.unknown = 0
        self.gaps = 0            # ticks missing according to the Gateway's per-symbol sequence
        self.seq_resets = 0      # sequence went backwards: the Gateway restarted
        self.disconnects = 0
        self._last_seq: list[int] = []
        self.tick_to_shm = Recorder("tick_to_shm")   # Gateway send -> slot written

    def start(self) -> dict[str, Any]:
        m, net = self.cfg.market, self.cfg.network
        self.book = SharedPriceBook(m.symbols, name=m.shm_name, create=True, lock=self.lock)
        if self.book.reclaimed:
            log.warning("reclaimed segment %s left behind by a crashed run", self.book.name)
        self._last_seq = [0] * self.book.nsymbols
        self.reactor.call_every(HEARTBEAT_INTERVAL, self.book.heartbeat)
        self.dialer = Dialer(self.reactor, net.host, net.price_port,
                             on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                             on_frame=self._make_frame_handler(), backoff=Backoff(),
                             max_frame=MAX_FRAME, read_capacity=1 << 18)
        self.dialer.start()
        return {"shm_name": self.book.name, "symbols": self.book.nsymbols,
                "bytes": self.book.size, "impl": IMPLEMENTATION}

    def close(self) -> None:
        if self.dialer is not None:
            self.dialer.close()
        if self.book is not None:
            self.book.unlink()   # first: the name must go even if unmapping fails
            self.book.close()

    def recorders(self) -> tuple[Recorder, ...]:
        return (self.tick_to_shm,)

    def stats(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "malformed": self.malformed,
                "unknown": self.unknown, "gaps": self.gaps, "seq_resets": self.seq_resets,
                "connected": bool(self.dialer and self.dialer.connected),
                "reconnects": self.dialer.reconnects if self.dialer else 0}

    # --- feed ------------------------------------------------------------------------------------
    def _on_connect(self, conn: Connection) -> None:
        log.info("connected to price feed %s", conn.peer)

    def _on_disconnect(self, reason: str | None) -> None:
        if self.dialer is not None and self.dialer.closed:
            return  # our own shutdown, not a lost feed
        self.disconnects += 1
        log.warning("price feed lost (%s); reconnecting with backoff", reason or "closed by peer")

    def _reject(self, frame: memoryview, reason: str) -> None:
        if self.malformed + self.unknown <= LOGGED_REJECTS:
            log.warning("skipped price frame %r: %s", bytes(frame[:80]), reason)

    def _make_frame_handler(self):
        """The per-tick handler, every lookup bound once: this is the OrderBook hot path."""
        book = self.book
        assert book is not None
        index = book.byte_index.get
        write = book.write
        publish = book.publish
        last_seq = self._last_seq
        record = self.tick_to_shm.record
        now_ns = time.monotonic_ns

        def on_frame(frame: memoryview) -> None:
            try:
                sym, price, seq, sent_ns = parse_price(frame)
            except ProtocolError as exc:
                self.malformed += 1
                self._reject(frame, str(exc))
                return
            i = index(sym)
            if i is None:
                self.unknown += 1
                self._reject(frame, f"unknown symbol {sym.decode(errors='replace')!r}")
                return
            if seq:
                prev = last_seq[i]
                if seq > prev + 1 and prev:
                    self.gaps += seq - prev - 1
                elif seq < prev:  # (seq == prev is the snapshot sent on reconnect)
                    self.seq_resets += 1
                last_seq[i] = seq
            write(i, price, sent_ns, seq)
            publish()
            self.ticks += 1
            if sent_ns:
                record(now_ns() - sent_ns)

        return on_frame


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
