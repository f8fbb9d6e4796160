"""One order client flooding valid orders: how long the price path stalls, and why.

The real stack (processes.supervisor.stack.Stack, as main.py runs it) at 1,000 ticks/s; after a
second of normal trading one raw TCP client sends new valid orders to the OrderManager as fast
as it takes them, reading its acks, for FLOOD_SECONDS. A watcher above every real-time rank
(tests/floodutil.py) collects each price write the book shows; the figure is the longest time
between consecutive writes during the flood, against the bound MAX_GAP_MS. Runs: the default
layout, the same with the real-time budget off (order_manager.rt_budget_us = 0: the hazard that
processes/shared/rt_budget.py removes), and unpinned at normal priority (a reference).

What the kernel did meanwhile comes from /proc, over the flood: CPU time of each process
(sched's sum_exec_runtime) and of ksoftirqd on the stack's core, the OrderManager's voluntary
context switches (how often it blocked), NET_RX softirqs on that core, and the real-time
throttle (sched_rt_runtime_us). Run:
    python -m pytest bench/bench_flood.py --benchmark-only
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from floodutil import BookWatch, flood, gaps_ns, sched_fifo_problem

from bench.harness import Latency, hop_latency, run_once, seconds
from processes.shared import config, placement
from processes.supervisor.stack import Stack

pytestmark = [pytest.mark.benchmark(group="flood"), pytest.mark.timeout(120)]

FLOOD_SECONDS = 5.0
BEFORE_SECONDS = 1.0      # normal trading watched before the flood starts
MAX_GAP_MS = 50.0         # the bound on a price-path stall during one client's flood
_DEFAULT = placement.layout_overrides(placement.DEFAULT_LAYOUT)
VARIANTS = {
    placement.DEFAULT_LAYOUT: _DEFAULT,
    f"{placement.DEFAULT_LAYOUT}, rt_budget_us=0": {**_DEFAULT, "order_manager.rt_budget_us": 0},
    "unpinned": placement.layout_overrides("unpinned"),
}


def flood_config(tmp_path: Path, overrides: dict[str, Any]) -> config.Config:
    return config.load(None, {
        "network.price_port": 0, "network.news_port": 0, "network.order_port": 0,
        "market.shm_name": f"tsbench_{uuid.uuid4().hex[:12]}",
        "logging.dir": str(tmp_path / "logs"), "logging.level": "WARNING",
        "order_manager.order_log": str(tmp_path / "orders.jsonl"),
        "logging.stats_interval": 0.25,
        # The Strategy trades often (bench_e2e's settings), so its own acks during the flood
        # show what one client's flood costs another.
        "gateway.news_rate": 200.0, "gateway.seed": 11,
        "strategy.params.short_window": 2, "strategy.params.long_window": 4,
        "strategy.params.bullish": 50, "strategy.params.bearish": 50, **overrides})


def _sched(pid: int) -> dict[str, float]:
    """sum_exec_runtime (ms) and voluntary switches of a process's main thread."""
    out = {}
    with open(f"/proc/{pid}/sched") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("se.sum_exec_runtime", "nr_voluntary_switches"):
                out[key] = float(value)
    return out


def _ksoftirqd(cpu: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == f"ksoftirqd/{cpu}":
                    return int(entry.name)
            except OSError:
                continue
    return None


def _net_rx(cpu: int) -> int:
    for line in Path("/proc/softirqs").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "NET_RX:":
            return int(fields[1 + cpu])
    return 0


def _kernel_view(pids: dict[str, int], cpu: int) -> dict[str, float]:
    view = {f"{name}_{key}": value for name, pid in pids.items()
            for key, value in _sched(pid).items()}
    view["net_rx"] = _net_rx(cpu)
    return view


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_order_flood(benchmark, tmp_path: Path, variant: str) -> None:
    overrides = VARIANTS[variant]
    real_time = any(v for k, v in overrides.items() if k.endswith(".rt_priority"))
    problem = sched_fifo_problem() if real_time else None
    if problem:
        pytest.skip(problem)
    cfg = flood_config(tmp_path, overrides)
    flood_s = seconds(benchmark, FLOOD_SECONDS)
    before_s = seconds(benchmark, BEFORE_SECONDS)

    def run() -> dict[str, Any]:
        stack = Stack(cfg)
        try:
            stack.start()
            pids = {name: proc.pid for name, proc in stack.procs.items()}
            cpu = (cfg.order_manager.cpus or [0])[0]
            soft = _ksoftirqd(cpu)
            if soft is not None:
                pids["ksoftirqd"] = soft
            with BookWatch(cfg.market.shm_name) as watch:
                time.sleep(before_s)   # the measurement: normal trading, watched
                before = _kernel_view(pids, cpu)
                strategy_before = stack.snapshots().get("strategy", {})
                result = flood(stack.info["order_manager"]["order_port"], cfg.market.symbols,
                               flood_s)
                after = _kernel_view(pids, cpu)
                ranks = {name: info["rt_priority"] for name, info in stack.info.items()}
        finally:
            stack.stop()
        snaps = stack.snapshots()
        om = snaps.get("order_manager", {}).get("counters", {})
        start, end = result["start_ns"], result["end_ns"]
        gaps = Latency()
        during_s = (end - start) / 1e9
        all_gaps = gaps_ns(watch.writes, start, end)
        for gap in all_gaps:
            gaps.record(gap)
        pre = [w for w in watch.writes if start - int(before_s * 1e9) <= w < start]
        info: dict[str, Any] = {
            "variant": variant, "flood_seconds": round(during_s, 2), "ranks": ranks,
            "rt_runtime_us": int(Path("/proc/sys/kernel/sched_rt_runtime_us").read_text()),
            "max_gap_ms": round(max(all_gaps) / 1e6, 1),
            "max_gap_bound_ms": MAX_GAP_MS,
            "max_gap_at_s": round((sum(all_gaps[:all_gaps.index(max(all_gaps))])) / 1e9, 3),
            "watch_longest_look_ms": round(watch.longest_look_ns / 1e6, 2),
            "writes_per_s_before": round(len(pre) / before_s),
            "writes_per_s_during": round(sum(start < w < end for w in watch.writes) / during_s),
            "flood_acks_per_s": round(result["acks"] / during_s),
            "flood_closed": result["closed"],
            "om_rt_demotions": om.get("rt_demotions", 0),
            **gaps.summary("gap"),
            # The Strategy's own orders, from its snapshot before the flood (up to one stats
            # interval older) to its final one, taken when the flood ends.
            **hop_latency(strategy_before, snaps.get("strategy", {}), "order_to_ack",
                          "strategy_ack"),
        }
        info["max_gap_ok"] = info["max_gap_ms"] < MAX_GAP_MS
        for key, value in after.items():
            delta = value - before.get(key, 0)
            name = key.replace("se.sum_exec_runtime", "cpu_ms").replace(
                "nr_voluntary_switches", "blocks")
            info[f"flood_{name}"] = round(delta, 1) if "cpu_ms" in name else int(delta)
        return info

    info = run_once(benchmark, run)
    assert info["flood_acks_per_s"] > 0 and not info["flood_closed"], info
    assert info["writes_per_s_before"] > 0, info
