"""Across a veth link: tick -> ack with the core in one network namespace and a trading host in
another, against the whole stack on one host, measured back to back in one run.

Both runs are `python main.py` as a user starts them (README, "More than one host"): first
`--role all` on loopback, then `--role core` in one namespace and `--role trading` in another,
joined by a veth pair through a bridge (tests/netnsutil.py), with the same layout, rates and
strategy settings. The difference is the link: two more kernel network stacks (veth, bridge)
on every hop that crosses it (price, news, order, ack), and the trading host's own reactor loop.

The namespaces share one kernel, so CLOCK_MONOTONIC is one clock and tick -> ack (Gateway send
in the core, ack received on the trading host) is exact. On two real hosts the trading host's
OrderBook puts the send times on its own clock through a measured offset, which makes tick -> ack
shorter by the smallest one-way transit (README, "Clocks"); order send -> ack is exact there.
Needs root and `ip netns`; skipped with the reason otherwise. Run:
    python -m pytest bench/bench_multihost.py --benchmark-only
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from netnsutil import Desk, unavailable

from bench.harness import SMOKE_STATS_INTERVAL, hop_percentiles, until_acked
from processes.shared import placement, telemetry
from processes.supervisor import summary

pytestmark = [pytest.mark.timeout(180), pytest.mark.benchmark(group="e2e-link")]

TICK_RATE = 1000
NEWS_RATE = 200
FULL_SECONDS = 20.0        # under --benchmark-disable (CI) a run lasts until a few orders are acked
LAYOUT = placement.DEFAULT_LAYOUT
HOPS = ("tick_to_shm", "tick_to_decision", "send_to_order", "om_ack", "order_to_ack",
        "tick_to_ack")
SIDES = ("single", "link")


def _trade(desk: Desk, seconds: float | None, link: bool) -> dict[str, dict[str, Any]]:
    """One run: start, trade for `seconds` (the measurement window), stop; every process's
    final snapshot by name. seconds None (a smoke run) trades until SMOKE_ACKS orders are acked:
    that proves the path and measures nothing."""
    if link:
        (host,) = desk.lan.hosts
        desk.start_core()
        desk.start_trading(host)
        runs = {desk.lan.core: desk.core, host: desk.trading[host]}
        dirs = [desk.workdir(desk.lan.core), desk.workdir(host)]
    else:
        run = desk.start_single()
        runs = {desk.lan.core: run}
        dirs = [run.workdir]
    if seconds is None:
        strategy = dirs[-1] / "logs" / "stats" / "strategy.json"
        until_acked(lambda: (telemetry.read_snapshot(strategy) or {}).get("counters", {})
                    .get("acks", 0), "link" if link else "single")
    else:
        time.sleep(seconds)
    for ns in reversed(list(runs)):             # the trading host first, as a desk stops
        code = runs[ns].stop()
        assert code == 0, runs[ns].output[-2000:]
    snaps: dict[str, dict[str, Any]] = {}
    for directory in dirs:
        snaps.update(telemetry.read_all(directory / "logs" / "stats"))
    return snaps


def percentiles(side: str, snaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{side}_{hop}_{p50,p99,p99.9,max}_us and _count from the processes' final histograms."""
    latency = {row["name"]: row for row in summary.build(snaps)["latency"]}
    out = hop_percentiles(latency, HOPS, f"{side}_")
    strategy = snaps["strategy"]["counters"]
    out[f"{side}_orders"] = strategy["orders"]
    out[f"{side}_acks"] = strategy["acks"]
    return out


def test_tick_to_ack_across_a_veth_link(benchmark, tmp_path: Path) -> None:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    seconds = None if benchmark.disabled else FULL_SECONDS
    info = benchmark.extra_info
    smoke = ("--set", f"logging.stats_interval={SMOKE_STATS_INTERVAL}") if seconds is None else ()
    desk = Desk(tmp_path, hosts=1, common=(
        "--layout", LAYOUT, "--tick-rate", str(TICK_RATE), "--news-rate", str(NEWS_RATE),
        "--set", "gateway.seed=11", *smoke))

    def run() -> None:
        for side in SIDES:
            snaps = _trade(desk, seconds, link=side == "link")
            assert snaps["strategy"]["counters"]["acks"] > 0, side
            info.update(percentiles(side, snaps))

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        desk.close()
    info.update(layout=LAYOUT, seconds=seconds, tick_rate=TICK_RATE,
                link="veth pair + bridge between two network namespaces, one kernel")
    for key in ("p50", "p99"):
        single, link = (info.get(f"{side}_tick_to_ack_{key}_us") for side in SIDES)
        if single and link:
            info[f"ratio_tick_to_ack_{key}"] = round(link / single, 3)
