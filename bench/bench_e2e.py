"""End to end: the real four processes at a fixed tick rate, one run per CPU layout.

Each run starts the stack exactly as main.py does (processes.supervisor.stack.Stack), lets it trade
for a fixed time, stops it, and reads the per-hop HdrHistogram buckets every process published in
its final stats snapshot (processes.shared.telemetry). Latencies are CLOCK_MONOTONIC differences
taken in the processes themselves: tick -> decision for every tick the Strategy evaluates, tick ->
ack for every order. The strategy is tuned to trade often (short windows, a neutral sentiment band
of zero width, fast news) so that the ack percentiles rest on thousands of orders, not a handful.

The layouts come from processes.shared.placement.LAYOUTS; all runs share one pytest session, so
their ratios are comparable even on a noisy machine.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.harness import SMOKE_STATS_INTERVAL, hop_percentiles, until_acked
from processes.shared import config, placement, telemetry
from processes.supervisor import summary
from processes.supervisor.stack import Stack

pytestmark = pytest.mark.timeout(180)

TICK_RATE = 1000          # ticks/s over all symbols: one tick every ms, every hop wakes from idle
FULL_SECONDS = 20.0       # under --benchmark-disable (CI) a run lasts until a few orders are acked
LAYOUTS = ("unpinned", "one-core", "one-core-rt", "spread", "spread-rt", "strategy-spin",
           "strategy-spin-rt", "strategy-hybrid", "spin-om-rt", "om-spin-rt")
HOPS = ("tick_to_shm", "tick_to_decision", "send_to_order", "tick_to_order", "om_ack",
        "order_to_ack", "tick_to_ack")


def trading_config(tmp_path: Path, layout: str, tick_rate: float = TICK_RATE) -> config.Config:
    overrides: dict[str, Any] = {
        "network.price_port": 0, "network.news_port": 0, "network.order_port": 0,
        "market.shm_name": f"tsbench_{uuid.uuid4().hex[:12]}",
        "logging.dir": str(tmp_path / "logs"), "logging.level": "WARNING",
        "order_manager.order_log": str(tmp_path / "orders.jsonl"),
        "gateway.tick_rate": tick_rate, "gateway.news_rate": 200.0, "gateway.seed": 11,
        "strategy.params.short_window": 2, "strategy.params.long_window": 4,
        "strategy.params.bullish": 50, "strategy.params.bearish": 50,
        **placement.layout_overrides(layout),
    }
    return config.load(None, overrides)


def run_stack(cfg: config.Config, seconds: float | None) -> dict[str, dict[str, Any]]:
    """Start, trade for `seconds`, stop; the processes' final snapshots.

    seconds None is a smoke run (--benchmark-disable): it trades until SMOKE_ACKS orders are
    acked, which proves the path and measures nothing.
    """
    if seconds is None:
        cfg.logging.stats_interval = SMOKE_STATS_INTERVAL
    stack = Stack(cfg)

    def acks() -> int:
        return stack.snapshots().get("strategy", {}).get("counters", {}).get("acks", 0)

    try:
        stack.start()
        if seconds is None:
            until_acked(acks, f"stack on {cfg.market.shm_name}")
        else:
            time.sleep(seconds)
    finally:
        codes = stack.stop()
    assert all(c == 0 for c in codes.values()), codes
    return stack.snapshots()


@pytest.mark.benchmark(group="e2e")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_e2e_latency(benchmark, tmp_path: Path, layout: str) -> None:
    seconds = None if benchmark.disabled else FULL_SECONDS
    cfg = trading_config(tmp_path, layout)
    snaps: dict[str, dict[str, Any]] = {}

    def run() -> None:
        snaps.update(run_stack(cfg, seconds))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert set(snaps) == {"gateway", "orderbook", "strategy", "order_manager"}
    built = summary.build(snaps)
    latency = {row["name"]: row for row in built["latency"]}
    strategy = snaps["strategy"]["counters"]
    # Ticks sent before the Strategy attached are decisions but no samples.
    assert latency["tick_to_decision"]["count"] == strategy["decisions"] - strategy.get(
        "early_ticks", 0) > 0
    # Every order the Strategy made was booked, except those still unacknowledged when it was
    # stopped (the Strategy stops first), and every booked one it heard back about was acked.
    booked, pending = snaps["order_manager"]["counters"]["orders"], strategy["pending"]
    assert strategy["orders"] - pending <= booked <= strategy["orders"]
    assert strategy["acks"] == strategy["orders"] - pending
    info = benchmark.extra_info
    info.update(layout=layout, seconds=seconds, tick_rate=TICK_RATE,
                placement={p: list(getattr(cfg, p).cpus) for p in placement.PROCESSES},
                idle={p: getattr(cfg, p).idle for p in placement.PROCESSES},
                orders=strategy["orders"], decisions=strategy["decisions"])
    for row in built["flow"]:
        info[f"{row['process']}.{row['counter']}_per_s"] = round(row["per_s"], 1)
    info.update(hop_percentiles(latency, HOPS))
    for hop in HOPS:
        row = latency.get(hop)
        if row is not None:
            published = snaps[row["process"]]["latency"][hop]["pairs"]
            info[f"{hop}_pairs"] = telemetry.decode_pairs(published)


def _tick_seqs(book: Any) -> int:
    return sum(book.read_slot(i)[2] for i in range(book.nsymbols))


@pytest.mark.benchmark(group="faults")
def test_gateway_outage(benchmark, tmp_path: Path) -> None:
    """kill -9 the Gateway mid-stream, restart it after OUTAGE s: what do ticks and orders do?

    Sampled every 20 ms from outside: the sum of the slots' tick sequences (ticks reaching shared
    memory) and the Strategy's published counters (snapshots every 0.1 s).
    """
    from ext import SharedPriceBook
    from processes.shared import telemetry

    outage = 0.5 if benchmark.disabled else 2.0
    before = 0.5 if benchmark.disabled else 3.0
    # Long enough for the OrderBook's reconnect backoff; a smoke run ends at the first tick
    # that reaches shared memory after the restart.
    after = 3.0 if benchmark.disabled else 5.0
    cfg = trading_config(tmp_path, "one-core")
    cfg.logging.stats_interval = 0.1
    stack = Stack(cfg)
    timeline: list[tuple[float, int, int]] = []
    marks: dict[str, float] = {}

    def sample(book: Any, until: float, resumed_from: int | None = None) -> None:
        """Every 20 ms until `until`; with resumed_from (a smoke run), only until the sample
        after the first whose tick sum differs from resumed_from."""
        stats_file = Path(cfg.logging.dir) / "stats" / "strategy.json"
        first = len(timeline)
        while time.monotonic() < until:
            snap = telemetry.read_snapshot(stats_file) or {}
            orders = snap.get("counters", {}).get("orders", timeline[-1][2] if timeline else 0)
            timeline.append((time.monotonic(), _tick_seqs(book), orders))
            if (resumed_from is not None and len(timeline) - first > 1
                    and timeline[-2][1] != resumed_from):
                return
            time.sleep(0.02)

    def run() -> None:
        try:
            stack.start()
            book = SharedPriceBook(name=cfg.market.shm_name, create=False)
            try:
                t0 = time.monotonic()
                marks["start"] = t0
                sample(book, t0 + before)
                stack.procs["gateway"].kill()
                stack.procs["gateway"].join(5)
                marks["killed"] = time.monotonic()
                sample(book, marks["killed"] + outage)
                stack.restart("gateway")
                marks["restarted"] = time.monotonic()
                sample(book, marks["restarted"] + after,
                       timeline[-1][1] if benchmark.disabled else None)
            finally:
                book.close()
        finally:
            stack.stop()

    benchmark.pedantic(run, rounds=1, iterations=1)
    killed, restarted = marks["killed"], marks["restarted"]
    # Ticks stop while the Gateway is down (allow the last in-flight batch: 50 ms) ...
    during = [s for s in timeline if killed + 0.05 < s[0] <= restarted]
    assert during and during[0][1] == during[-1][1], "ticks reached shm with no Gateway"
    # ... and flow again after the restart: the OrderBook reconnected by itself. (A changed
    # sum, not a larger one: the new Gateway's sequences start again from 1.)
    resumed = next((s for s in timeline if s[0] > restarted and s[1] != during[-1][1]), None)
    assert resumed is not None, "no tick reached shared memory after the Gateway restart"
    orders_during = during[-1][2] - during[0][2]
    after = [s for s in timeline if s[0] > restarted]
    info = benchmark.extra_info
    info.update(outage_s=round(restarted - killed, 3),
                ticks_during_outage=during[-1][1] - during[0][1],
                orders_during_outage=orders_during,
                first_tick_after_restart_ms=round((resumed[0] - restarted) * 1e3, 1),
                orders_after_restart=after[-1][2] - after[0][2],
                ticks_after_restart=after[-1][1] - after[0][1])


@pytest.mark.benchmark(group="idle")
def test_idle_cpu(benchmark, tmp_path: Path) -> None:
    """With no ticks flowing, what does each process cost? (target: < 2 % of a core each)."""
    seconds = 1.0 if benchmark.disabled else 10.0
    cfg = trading_config(tmp_path, "unpinned", tick_rate=0.001)
    cfg.gateway.news_rate = 0.001
    stack = Stack(cfg)
    usage: dict[str, float] = {}

    def cpu(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run() -> None:
        try:
            stack.start()
            time.sleep(0.5)  # start-up work (imports, connects) is not idling
            pids = {name: p.pid for name, p in stack.procs.items()}
            t0, c0 = time.monotonic(), {n: cpu(p) for n, p in pids.items()}
            time.sleep(seconds)
            dt = time.monotonic() - t0
            usage.update({n: (cpu(p) - c0[n]) / dt * 100 for n, p in pids.items()})
        finally:
            stack.stop()

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert set(usage) == set(placement.PROCESSES)
    benchmark.extra_info.update({f"{n}_cpu_percent": round(v, 2) for n, v in usage.items()},
                                seconds=seconds)
    # A bound that catches a busy loop (100 %), not a timing assertion on a noisy machine.
    assert all(v < 25 for v in usage.values()), usage
