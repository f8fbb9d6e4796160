"""Throughput: Gateway -> OrderBook -> shared memory, at the maximum rate and under load.

Real Gateway and OrderBook processes; this process attaches to the segment. The rate is the
advance of the per-symbol tick sequences in the slots (every tick the OrderBook writes carries the
Gateway's sequence), cross-checked against the OrderBook's own count. Latency is tick -> shm
(write_ns - sent_ns) sampled by a busy-polling reader here, which itself takes one of the
machine's CPUs: that is the cost of observing every tick on a 2-vCPU host. The OrderBook's own
histogram of the same hop (every tick, not conflated) goes next to it as orderbook_tick_to_shm_*.
Run:
    python -m pytest bench/bench_throughput.py --benchmark-only
"""

from __future__ import annotations

import time

import pytest

from bench.harness import (
    Procs,
    bench_config,
    hop_latency,
    poll_latency,
    run_once,
    seconds,
    tick_seq_total,
)

pytestmark = pytest.mark.benchmark(group="throughput")

MAX_SECONDS = 10.0      # sustained max-rate run (full)
LOAD_SECONDS = 5.0      # per latency-vs-load point (full)
SETTLE = 0.3            # s after start-up before measuring: the queues between processes fill


@pytest.mark.timeout(90)
def test_max_sustained_rate(benchmark, procs: Procs, tmp_path) -> None:
    """gateway.tick_rate = 0: as fast as the OrderBook drains. This process only sleeps."""
    duration = seconds(benchmark, MAX_SECONDS)
    book = procs.feed(bench_config(tmp_path, **{"gateway.tick_rate": 0}))
    time.sleep(SETTLE)
    before = procs.snapshot("orderbook")

    def measure() -> dict:
        seq0, t0 = tick_seq_total(book), time.monotonic()
        time.sleep(duration)
        ticks, elapsed = tick_seq_total(book) - seq0, time.monotonic() - t0
        return {"ticks_per_s": round(ticks / elapsed), "ticks": ticks,
                "seconds": round(elapsed, 2), "symbols": book.nsymbols}

    result = run_once(benchmark, measure)
    written = tick_seq_total(book)
    ob = procs.stop("orderbook")
    gw = procs.stop("gateway")
    assert ob and gw, "no final stats snapshot: a process did not stop cleanly"
    obc, gwc = ob["counters"], gw["counters"]
    benchmark.extra_info.update({
        "orderbook_ticks": obc["ticks"], "orderbook_gaps": obc["gaps"],
        # ticks its latency buffer had no room for: its histogram is a subset at high rates
        "orderbook_latency_unrecorded": obc.get("latency_unrecorded", 0),
        "gateway_ticks": gwc["ticks"], "gateway_dropped_batches": gwc["dropped_batches"],
        **hop_latency(before, ob, "tick_to_shm", "orderbook_tick_to_shm")})
    assert result["ticks"] > 0
    assert obc["gaps"] == 0 and obc["malformed"] == 0 and obc["unknown"] == 0
    # Cross-check: the OrderBook wrote at least every tick the slots account for (it also wrote
    # the connect snapshot and whatever arrived after the last read).
    assert obc["ticks"] >= written


@pytest.mark.timeout(90)
@pytest.mark.parametrize("rate", [1_000, 10_000, 100_000, 0], ids=["1k", "10k", "100k", "max"])
def test_latency_vs_load(benchmark, procs: Procs, tmp_path, rate: int) -> None:
    """tick -> shm percentiles at a paced rate (0 = max); latest tick per symbol (conflated)."""
    duration = seconds(benchmark, LOAD_SECONDS)
    book = procs.feed(bench_config(tmp_path, **{"gateway.tick_rate": rate}))
    time.sleep(SETTLE)
    before = procs.snapshot("orderbook")
    benchmark.extra_info["target_ticks_per_s"] = rate or "max"
    result = run_once(benchmark, lambda: poll_latency(book, duration))
    ob = procs.stop("orderbook")
    assert ob, "no final stats snapshot: the OrderBook did not stop cleanly"
    benchmark.extra_info.update({
        "orderbook_gaps": ob["counters"]["gaps"],
        "orderbook_latency_unrecorded": ob["counters"].get("latency_unrecorded", 0),
        **hop_latency(before, ob, "tick_to_shm", "orderbook_tick_to_shm")})
    assert result["ticks"] > 0 and result["tick_to_shm_samples"] > 0
    assert ob["counters"]["malformed"] == 0 and ob["counters"]["unknown"] == 0
