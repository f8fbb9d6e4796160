"""tradestack against the Python floor (bench/floor_pipeline.py), interleaved in one session.

    python -m pytest bench/bench_floor.py --benchmark-only

Rounds alternate stack, floor, stack, floor... in the default layout, so drift of a shared, noisy
machine lands on both alike; each side's histograms are merged over its rounds. The floor trades
at the orders-per-tick ratio the stack showed in the rounds before it, so both pay for the same
order traffic. extra_info carries, per side and hop, count / p50 / p99 / p99.9 / max (us), the
ours/floor ratios and each side's order rate. Under --benchmark-disable (CI) one short round of
each proves the path (orders acked, histograms filled; the stack's round lasts until a few
orders are acked) and measures nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import floor_pipeline
from bench.bench_e2e import run_stack, trading_config
from processes.shared import placement, telemetry

pytestmark = pytest.mark.timeout(300)

ROUNDS, FULL_SECONDS = 3, 12.0
SMOKE_ROUNDS, SMOKE_SECONDS = 1, 0.5
HOPS = ("tick_to_shm", "tick_to_decision", "send_to_order", "tick_to_order", "om_ack",
        "order_to_ack", "tick_to_ack")


def merged(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per hop: count and p50 / p99 / p99.9 / max (us) over every run's histogram merged."""
    out: dict[str, dict[str, float]] = {}
    for hop in HOPS:
        hists = [h for snaps in runs for snap in snaps.values()
                 if (h := snap.get("latency", {}).get(hop)) and h.get("count")]
        if not hists:
            continue
        row = telemetry.summarize_merged(hists)
        out[hop] = {k: v if k == "count" else round(v / 1e3, 2) for k, v in row.items()}
    return out


def counter(runs: list[dict[str, dict[str, Any]]], proc: str, key: str) -> int:
    return sum(snaps[proc]["counters"][key] for snaps in runs)


def figures(side: str, runs: list[dict[str, dict[str, Any]]], seconds: float
            ) -> dict[str, Any]:
    """{side}_{hop}_{p50,p99,p99.9,max}_us, _count, _p99_over_p50, and the side's rates."""
    info: dict[str, Any] = {}
    for hop, row in merged(runs).items():
        info[f"{side}_{hop}_count"] = row["count"]
        for key in ("p50", "p99", "p99.9", "max"):
            info[f"{side}_{hop}_{key}_us"] = row[key]
        info[f"{side}_{hop}_p99_over_p50"] = round(row["p99"] / max(row["p50"], 1e-3), 2)
    orders, decisions = counter(runs, "strategy", "orders"), counter(runs, "strategy", "decisions")
    info[f"{side}_orders"] = orders
    info[f"{side}_orders_per_s"] = round(orders / seconds, 1)
    info[f"{side}_ticks_per_s"] = round(decisions / seconds, 1)
    info[f"{side}_orders_per_tick"] = round(orders / max(decisions, 1), 4)
    return info


@pytest.mark.benchmark(group="e2e-floor")
def test_stack_vs_floor(benchmark, tmp_path: Path) -> None:
    """Stack and floor in turns, default layout; ratios ours/floor per hop in extra_info."""
    rounds = SMOKE_ROUNDS if benchmark.disabled else ROUNDS
    seconds = SMOKE_SECONDS if benchmark.disabled else FULL_SECONDS
    layout = placement.DEFAULT_LAYOUT
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"stack": [], "floor": []}
    floor_info: dict[str, Any] = {}

    def run() -> None:
        for k in range(rounds):
            cfg = trading_config(tmp_path / f"stack{k}", layout)
            runs["stack"].append(run_stack(cfg, None if benchmark.disabled else seconds))
            made = counter(runs["stack"], "strategy", "orders")
            rate = made / max(counter(runs["stack"], "strategy", "decisions"), 1)
            snaps = floor_pipeline.run(seconds, tmp_path / f"floor{k}", layout,
                                       orders_per_tick=rate or floor_pipeline.ORDERS_PER_TICK)
            floor_info.update(snaps.pop("info"))
            runs["floor"].append(snaps)

    benchmark.pedantic(run, rounds=1, iterations=1)
    for side, side_runs in runs.items():
        assert all(set(s) == set(placement.PROCESSES) for s in side_runs), side
        strat = [s["strategy"]["counters"] for s in side_runs]
        assert sum(c["decisions"] for c in strat) > 0, side
        assert sum(c["orders"] for c in strat) > 0, side
        # Every order was acked, but for those in flight when the Strategy was stopped.
        assert all(c["acks"] == c["orders"] - c["pending"] for c in strat), (side, strat)
    info = benchmark.extra_info
    info.update(layout=layout, rounds=rounds, seconds_per_round=seconds,
                tick_rate=floor_pipeline.TICK_RATE, mode="smoke" if benchmark.disabled else "full",
                floor_rt_priority={n: i.get("rt_priority", 0) for n, i in floor_info.items()})
    total = rounds * seconds
    for side, side_runs in runs.items():
        info.update(figures(side, side_runs, total))
    for hop in HOPS:
        ours, floor = info.get(f"stack_{hop}_p50_us"), info.get(f"floor_{hop}_p50_us")
        assert floor is not None and info[f"floor_{hop}_count"] > 0, hop   # histograms filled
        if ours is not None:
            for key in ("p50", "p99"):
                info[f"ratio_{hop}_{key}"] = round(info[f"stack_{hop}_{key}_us"]
                                                   / max(info[f"floor_{hop}_{key}_us"], 1e-3), 2)
