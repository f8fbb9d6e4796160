"""The Python floor: the stack's four hops in the least Python that can do them.

    python -m bench.floor_pipeline [--seconds 10] [--orders-per-tick 0.046] [--layout one-core-rt]

Gateway --TCP `SYM,PRICE,SEQ,SENT_NS*`--> OrderBook --shm seqlock + doorbell--> Strategy
--TCP order--> OrderManager --TCP ack--> Strategy; four spawned processes, each one loop and no
framework. This is what tradestack is measured against (bench/bench_floor.py runs both,
interleaved): whatever the stack's latency is above this, its own code adds.

Choices, and why:
- Shared memory is the project's own ext.SharedPriceBook and its PriceReader doorbell (a datagram
  socket the writer rings only when the reader armed it before sleeping). Pure Python has no
  futex and no seqlock without ctypes, and a floor built on another primitive would measure that
  primitive; this way the only differences left are the processes' own code.
- Loops are `selectors` (epoll on Linux), as a newcomer would write them; frames are split on
  b"*" and fields on b",". No validation beyond what parsing does, no logging, no order log.
- Every process takes its placement (cpus, SCHED_FIFO rank) from the same
  processes.shared.placement.LAYOUTS entry as the stack under test, and falls back to normal
  scheduling when real-time is not allowed. Only layouts whose processes all block are mirrored.
- Pacing as the stack's Gateway: one tick per due time (1 ms at 1,000 ticks/s), each its own send,
  symbols round-robin; after a stall the overdue ticks are skipped, not bunched.
- Orders: `orders_per_tick` orders per tick read, spread evenly (an accumulator), so the floor can
  trade at the rate the stack under test trades at.
- Histograms are processes.shared.telemetry Recorders, published in the stack's snapshot format
  (one final snapshot per process), so the same summary code reads both.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import selectors
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from ext import SharedPriceBook
from processes.shared import placement, telemetry
from processes.shared.runtime import die_with_parent

SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA")
TICK_RATE = 1000.0
# bench_e2e's trading configuration books about one order per ~20 ticks; bench_floor replaces
# this with the ratio the stack really traded at in the same session.
ORDERS_PER_TICK = 0.05
STOP_ORDER = ("strategy", "orderbook", "gateway", "order_manager")   # as the stack stops


class _Stop(Exception):
    """Raised by the SIGTERM handler: leaves the loop wherever it blocks."""


# Set as the first statement of each loop's `except`: no signal check can run between the
# exception and that store, so a second SIGTERM (a process that left its loop because a peer went
# away is still sent the stop signal) can never interrupt the final snapshot.
_leaving = False


def _on_term(_signum: int, _frame: Any) -> None:
    if not _leaving:
        raise _Stop


def _final(pub: telemetry.Publisher) -> None:
    """The last snapshot (SIGTERM is a no-op by now: see _leaving)."""
    pub.publish(final=True)


def _setup(cpus: list[int], rt_priority: int) -> int:
    """Placement and the process hygiene every floor process shares; the rank applied."""
    die_with_parent()
    signal.signal(signal.SIGTERM, _on_term)
    usable = [c for c in cpus if c in os.sched_getaffinity(0)]
    if usable:
        os.sched_setaffinity(0, usable)
    applied = 0
    if rt_priority:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
            applied = rt_priority
        except (OSError, AttributeError):
            pass   # no CAP_SYS_NICE: normal scheduling, as the stack falls back
    # The stack's GC setting (processes.shared.runtime.quiet_gc), so GC policy is not a difference.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return applied


def _publisher(name: str, stats_dir: str, counters: dict[str, int],
               recorders: list[telemetry.Recorder]) -> telemetry.Publisher:
    return telemetry.Publisher(name, stats_dir, lambda: dict(counters), lambda: recorders)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _accept(srv: socket.socket) -> socket.socket:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setblocking(False)
    return conn


# --- the four processes ---------------------------------------------------------------------

def gateway(ready: Any, stats_dir: str, tick_rate: float, cpus: list[int], rt: int) -> None:
    """Serves one subscriber: one tick per due time, stamped CLOCK_MONOTONIC just before send."""
    applied = _setup(cpus, rt)
    srv = socket.create_server(("127.0.0.1", 0))
    ready.send({"port": srv.getsockname()[1], "rt_priority": applied})
    ready.close()
    counters = {"ticks": 0}
    pub = _publisher("gateway", stats_dir, counters, [])
    names = [s.encode() for s in SYMBOLS]
    prices = [100.0 + 10 * i for i in range(len(names))]
    seqs = [0] * len(names)
    rng = random.Random(11)
    period = int(1e9 / tick_rate)
    now = time.monotonic_ns
    try:
        conn = _accept(srv)
        conn.setblocking(True)
        k, t0 = 0, now()
        pub.started_ns = t0   # rates count from the first tick, not from the spawn
        while True:
            wait = t0 + k * period - now()
            if wait > 0:
                time.sleep(wait / 1e9)
            elif wait < -period:   # a stall: skip what is overdue, as the stack's pacer does
                k = (now() - t0) // period
            i = k % len(names)
            prices[i] = max(1.0, prices[i] + rng.uniform(-0.05, 0.05))
            seqs[i] += 1
            conn.sendall(b"%b,%.2f,%d,%d*" % (names[i], prices[i], seqs[i], now()))
            counters["ticks"] += 1
            k += 1
    except (_Stop, OSError):
        global _leaving
        _leaving = True
    _final(pub)


def orderbook(ready: Any, stats_dir: str, gw_port: int, shm_name: str, cpus: list[int],
              rt: int) -> None:
    """Reads ticks, writes each into its seqlock slot, publishes (rings sleepers) per read."""
    applied = _setup(cpus, rt)
    book = SharedPriceBook(list(SYMBOLS), name=shm_name)
    try:
        sock = _connect(gw_port)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        counters = {"ticks": 0}
        shm = telemetry.Recorder("tick_to_shm")
        pub = _publisher("orderbook", stats_dir, counters, [shm])
        ready.send({"rt_priority": applied})
        ready.close()
        index, write, publish, record = book.byte_index, book.write, book.publish, shm.record
        now, select, recv = time.monotonic_ns, sel.select, sock.recv
        pending = b""
        try:
            while True:
                select()
                data = recv(65536)
                if not data:
                    break
                *frames, pending = (pending + data).split(b"*")
                for frame in frames:
                    sym, price, seq, sent = frame.split(b",")
                    sent_ns = int(sent)
                    write(index[sym], float(price), sent_ns, int(seq))
                    record(now() - sent_ns)
                counters["ticks"] += len(frames)
                publish()
        except (_Stop, OSError):
            global _leaving
            _leaving = True
        _final(pub)
    finally:
        book.close()
        book.unlink()


def strategy(ready: Any, stats_dir: str, shm_name: str, om_port: int, orders_per_tick: float,
             cpus: list[int], rt: int) -> None:
    """Wakes on the doorbell, decides on every changed slot, orders at `orders_per_tick`."""
    applied = _setup(cpus, rt)
    book = SharedPriceBook(name=shm_name, create=False)
    reader = book.reader()
    try:
        sock = _connect(om_port)
        sel = selectors.DefaultSelector()
        sel.register(reader.fileno(), selectors.EVENT_READ, "bell")
        sel.register(sock, selectors.EVENT_READ, "ack")
        counters = {"ticks": 0, "decisions": 0, "orders": 0, "acks": 0, "pending": 0}
        decision = telemetry.Recorder("tick_to_decision")
        round_trip = telemetry.Recorder("order_to_ack")
        tick_ack = telemetry.Recorder("tick_to_ack")
        pub = _publisher("strategy", stats_dir, counters, [decision, round_trip, tick_ack])
        ready.send({"rt_priority": applied})
        ready.close()
        names = [s.encode() for s in book.symbols]
        last = [0.0] * len(names)
        inflight: dict[bytes, tuple[int, int]] = {}
        poll, arm, disarm, drain = reader.poll, reader.arm, reader.disarm, reader.drain
        indices, prices, sent_ns = reader.indices, reader.prices, reader.sent_ns
        now, select, send, recv = time.monotonic_ns, sel.select, sock.send, sock.recv
        rec_decision, rec_rtt, rec_tick_ack = decision.record, round_trip.record, tick_ack.record
        credit, oid, pending = 0.0, 0, b""
        poll()   # what was written before we attached is not a tick we wait for
        try:
            while True:
                n = poll()
                for k in range(n):
                    i, price, sent = indices[k], prices[k], sent_ns[k]
                    side = b"BUY" if price >= last[i] else b"SELL"   # the trivial decision
                    last[i] = price
                    rec_decision(now() - sent)
                    credit += orders_per_tick
                    if credit >= 1.0:
                        credit -= 1.0
                        oid += 1
                        key = b"%d" % oid
                        t = now()
                        inflight[key] = (sent, t)
                        send(b"%b,%b,%b,1,%.2f,%d,%d*" % (key, names[i], side, price, sent, t))
                        counters["orders"] += 1
                if n:
                    counters["ticks"] += n
                    counters["decisions"] += n
                if arm():   # nothing pending in the book: sleep until a ring or an ack
                    ready_keys = select()
                    disarm()
                else:
                    ready_keys = select(0)
                for key_, _ in ready_keys:
                    if key_.data == "bell":
                        drain()
                        continue
                    data = recv(65536)
                    if not data:
                        raise _Stop
                    t = now()
                    *acks, pending = (pending + data).split(b"*")
                    for ack in acks:
                        tick_ns, sent_t = inflight.pop(ack.split(b",", 1)[0])
                        rec_rtt(t - sent_t)
                        rec_tick_ack(t - tick_ns)
                    counters["acks"] += len(acks)
        except (_Stop, OSError):
            global _leaving
            _leaving = True
        counters["pending"] = len(inflight)
        _final(pub)
    finally:
        reader.close()
        book.close()


def order_manager(ready: Any, stats_dir: str, cpus: list[int], rt: int) -> None:
    """Parses each order and acks it with its order number; nothing else."""
    applied = _setup(cpus, rt)
    srv = socket.create_server(("127.0.0.1", 0))
    ready.send({"port": srv.getsockname()[1], "rt_priority": applied})
    ready.close()
    try:
        conn = _accept(srv)
    except _Stop:
        return
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    counters = {"orders": 0}
    hop = telemetry.Recorder("send_to_order")
    tick_order = telemetry.Recorder("tick_to_order")
    inside = telemetry.Recorder("om_ack")
    pub = _publisher("order_manager", stats_dir, counters, [hop, tick_order, inside])
    now, select, recv, send = time.monotonic_ns, sel.select, conn.recv, conn.send
    order_no, pending = 0, b""
    try:
        while True:
            select()
            data = recv(65536)
            if not data:
                break
            t_read = now()
            *frames, pending = (pending + data).split(b"*")
            for frame in frames:
                oid, _sym, _side, qty, price, tick_ns, sent_ns = frame.split(b",")
                int(qty), float(price)   # the parse an order must survive
                order_no += 1
                send(b"%b,%d*" % (oid, order_no))
                t_ack = now()
                hop.record(t_read - int(sent_ns))
                tick_order.record(t_read - int(tick_ns))
                inside.record(t_ack - t_read)
            counters["orders"] = order_no
    except (_Stop, OSError):
        global _leaving
        _leaving = True
    _final(pub)


# --- running it -----------------------------------------------------------------------------

def layout_of(layout: str) -> dict[str, tuple[list[int], int]]:
    """{process: (cpus, rt_priority)} of a stack layout whose processes all block."""
    out = {}
    for proc in placement.PROCESSES:
        keys = placement.layout_placement(layout, proc)
        if keys["idle"] != "block":
            raise ValueError(f"layout {layout!r}: the floor mirrors blocking layouts only")
        out[proc] = (keys["cpus"], keys["rt_priority"])
    return out


def run(seconds: float, workdir: Path, layout: str = placement.DEFAULT_LAYOUT,
        orders_per_tick: float = ORDERS_PER_TICK, tick_rate: float = TICK_RATE
        ) -> dict[str, dict[str, Any]]:
    """Start the four processes, let them trade for `seconds`, stop them; final snapshots.

    Snapshots are keyed by process name like processes.supervisor.stack.Stack.snapshots(), plus
    "info": what each process reported at start (ports, the real-time rank it got).
    """
    from bench.harness import READY, Child  # bench's process helpers, not the stack's

    where = layout_of(layout)
    stats_dir = str(workdir / "stats")
    shm_name = f"tsbench_floor_{uuid.uuid4().hex[:12]}"
    children: dict[str, Child] = {}
    info: dict[str, dict[str, Any]] = {}

    def start(name: str, target: Any, *args: Any) -> dict[str, Any]:
        children[name] = Child(f"floor-{name}", target, READY, stats_dir, *args, *where[name])
        info[name] = children[name].start()
        return info[name]

    try:
        om_port = start("order_manager", order_manager)["port"]
        gw_port = start("gateway", gateway, tick_rate)["port"]
        start("orderbook", orderbook, gw_port, shm_name)
        start("strategy", strategy, shm_name, om_port, orders_per_tick)
        time.sleep(seconds)
    finally:
        codes = {name: children[name].stop() for name in STOP_ORDER if name in children}
        if os.path.exists(f"/dev/shm/{shm_name}"):   # an OrderBook killed before its unlink
            os.unlink(f"/dev/shm/{shm_name}")
    bad = {n: c for n, c in codes.items() if c not in (0, -signal.SIGTERM)}
    if bad:
        raise RuntimeError(f"floor processes exited badly: {bad}")
    snaps = telemetry.read_all(stats_dir)
    return {**{n: s for n, s in snaps.items() if s.get("final")}, "info": info}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from processes.supervisor import summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--orders-per-tick", type=float, default=ORDERS_PER_TICK)
    parser.add_argument("--tick-rate", type=float, default=TICK_RATE)
    parser.add_argument("--layout", default=placement.DEFAULT_LAYOUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tsfloor_") as tmp:
        snaps = run(args.seconds, Path(tmp), args.layout, args.orders_per_tick, args.tick_rate)
    info = snaps.pop("info")
    print(f"floor, layout {args.layout}: real-time ranks "
          f"{ {n: i.get('rt_priority', 0) for n, i in info.items()} }")
    print(summary.render(summary.build(snaps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
