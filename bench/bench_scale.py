"""Scale: more symbols (segment size, poll scan cost) and more price subscribers (Gateway fan-out).

Symbols: Gateway + OrderBook at a paced 10k ticks/s, tick -> shm latency from a busy-polling
reader (latest tick per symbol, conflated) and the OrderBook's own every-tick histogram, achieved
rate and the segment size. Subscribers: N raw
TCP clients of the Gateway's price port, all in this process on one selectors loop; latency is
receipt time - SENT_NS of the first complete frame of each recv() (the oldest frame in it, so the
worst of that read), and the rate counts every frame delivered. With 64 subscribers this Python
loop is part of what is measured: it shares the 2 vCPUs with the Gateway. Run:
    python -m pytest bench/bench_scale.py --benchmark-only
"""

from __future__ import annotations

import selectors
import time
from typing import Any

import pytest

from bench.harness import (
    Latency,
    Procs,
    bench_config,
    hop_latency,
    poll_latency,
    run_once,
    seconds,
    symbols,
)
from ext.wire_py import parse_price_frame

pytestmark = pytest.mark.benchmark(group="scale")

RATE = 10_000          # ticks/s, paced
POINT_SECONDS = 5.0    # per measurement point (full)
STAR = 42              # ord("*")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("nsym", [5, 100, 10_000])
def test_symbols(benchmark, procs: Procs, tmp_path, nsym: int) -> None:
    """tick -> shm latency and achieved rate as the book grows; poll() scans every slot."""
    duration = seconds(benchmark, POINT_SECONDS)
    cfg = bench_config(tmp_path, **{"gateway.tick_rate": RATE, "market.symbols": symbols(nsym)})
    book = procs.feed(cfg)   # returns once the connect snapshot is written
    before = procs.snapshot("orderbook")
    benchmark.extra_info.update({"symbols": nsym, "segment_bytes": book.size,
                                 "target_ticks_per_s": RATE})
    result = run_once(benchmark, lambda: poll_latency(book, duration))
    ob = procs.stop("orderbook")
    assert ob, "no final stats snapshot: the OrderBook did not stop cleanly"
    benchmark.extra_info.update(hop_latency(before, ob, "tick_to_shm", "orderbook_tick_to_shm"))
    assert book.nsymbols == nsym and result["ticks"] > 0 and result["tick_to_shm_samples"] > 0
    assert ob["counters"]["unknown"] == 0 and ob["counters"]["malformed"] == 0


def subscribe(socks: list[Any], duration: float, warmup: float = 0.3) -> dict[str, Any]:
    """Read every subscriber for `duration` s after `warmup`; count frames, sample latency."""
    sel = selectors.DefaultSelector()
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    counts = [0] * len(socks)
    aligned = [True] * len(socks)   # the previous read ended on a frame boundary
    for k, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, k)
    hist = Latency()
    now = time.monotonic_ns
    start = now() + int(warmup * 1e9)
    end = start + int(duration * 1e9)
    measuring = False
    try:
        while True:
            for key, _ in sel.select(0.1):
                k = key.data
                n = key.fileobj.recv_into(view)
                t = now()
                if not n:
                    raise ConnectionError(f"gateway closed subscriber {k}")
                if measuring:
                    counts[k] += buf.count(b"*", 0, n)
                    # First whole frame of this read: at 0 if the previous read ended on a
                    # boundary, else after the first delimiter (0 here means there is none).
                    begin = 0 if aligned[k] else buf.find(b"*", 0, n) + 1
                    stop = buf.find(b"*", begin, n) if begin or aligned[k] else -1
                    if stop > begin:
                        sent_ns = parse_price_frame(bytes(view[begin:stop]))[3]
                        hist.record(t - sent_ns)
                aligned[k] = buf[n - 1] == STAR
            t = now()
            if t >= end:
                break
            if not measuring and t >= start:
                measuring, start = True, t
    finally:
        sel.close()
    elapsed = (now() - start) / 1e9
    total = sum(counts)
    return {"delivered_ticks_per_s": round(total / elapsed),
            "per_subscriber_min_ticks_per_s": round(min(counts) / elapsed),
            "ticks_delivered": total, "seconds": round(elapsed, 2),
            **hist.summary("tick_to_subscriber")}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("nsubs", [1, 8, 64])
def test_subscribers(benchmark, procs: Procs, tmp_path, nsubs: int) -> None:
    """Delivered ticks/s and tick -> subscriber latency as the Gateway fans out to N clients."""
    duration = seconds(benchmark, POINT_SECONDS)
    cfg = bench_config(tmp_path, **{"gateway.tick_rate": RATE})
    port = procs.start("gateway", cfg)["price_port"]
    socks = [procs.connect(port) for _ in range(nsubs)]
    benchmark.extra_info.update({"subscribers": nsubs, "target_ticks_per_s": RATE})
    result = run_once(benchmark, lambda: subscribe(socks, duration))
    gw = procs.stop("gateway")
    assert gw, "no final stats snapshot: the Gateway did not stop cleanly"
    benchmark.extra_info["gateway_dropped_batches"] = gw["counters"]["dropped_batches"]
    assert result["per_subscriber_min_ticks_per_s"] > 0, "every subscriber must get ticks"
    assert result["tick_to_subscriber_samples"] > 0
