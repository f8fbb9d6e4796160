"""One order client flooding the OrderManager in the default layout does not stop the price path.

The default layout runs the four processes on one core at SCHED_FIFO ranks, the OrderManager
above the feed; a flooded OrderManager never blocks, so without a limit it starves the Gateway
and the OrderBook (processes/shared/rt_budget.py). The figures (the longest gap between price
writes, against its 50 ms bound) are bench/bench_flood.py's; this test checks what holds on any
machine: the book is written in every 100 ms window of the flood, and the flood is served at the
OrderManager's spare time (it gave up its rank), not stopped.
"""

from __future__ import annotations

import os

import pytest
from floodutil import BookWatch, flood, sched_fifo_problem, silent_windows
from stackutil import make_config, shm_exists, wait_until

from processes.shared import placement
from processes.supervisor.stack import Stack

FLOOD_SECONDS = 3.0
WINDOW_NS = 100_000_000


@pytest.mark.timeout(90)
def test_an_order_flood_does_not_stop_the_price_path(tmp_path):
    problem = sched_fifo_problem()
    if problem:
        pytest.skip(problem)
    cfg = make_config(tmp_path, **placement.layout_overrides(placement.DEFAULT_LAYOUT),
                      **{"logging.level": "WARNING", "logging.stats_interval": 0.2})
    stack = Stack(cfg)
    try:
        stack.start()
        ranks = {name: info["rt_priority"] for name, info in stack.info.items()}
        assert all(ranks.values()), f"the default layout runs every process real-time: {ranks}"
        with BookWatch(cfg.market.shm_name) as watch:
            result = flood(stack.info["order_manager"]["order_port"], cfg.market.symbols,
                           FLOOD_SECONDS)
        # Once the flood is over (and its backlog booked), the OrderManager has its rank back.
        om_pid = stack.procs["order_manager"].pid
        wait_until(lambda: os.sched_getscheduler(om_pid) == os.SCHED_FIFO, 20,
                   what="the OrderManager back at SCHED_FIFO after the flood")
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert not shm_exists(cfg.market.shm_name)
    snaps = stack.snapshots()
    om = snaps["order_manager"]["counters"]
    assert not result["closed"], result
    assert result["acks"] > 0 and result["rejects"] == 0, result
    assert om["orders"] >= result["acks"], (om["orders"], result)
    # A flood: the OrderManager ran past its real-time budget and gave up its rank; the feed
    # and the Strategy never did.
    assert om["rt_demotions"] >= 1, om
    assert {name: snaps[name]["counters"]["rt_demotions"]
            for name in ("gateway", "orderbook", "strategy")} == dict.fromkeys(
        ("gateway", "orderbook", "strategy"), 0)
    silent = silent_windows(watch.writes, result["start_ns"], result["end_ns"], WINDOW_NS)
    assert not silent, (f"no price reached shared memory in {len(silent)} of the flood's "
                        f"100 ms windows (first: {silent[:5]}); affinity {os.sched_getaffinity(0)}")
