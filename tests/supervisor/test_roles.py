"""`main.py --role core` and `--role trading` on loopback: two supervised halves of one stack.

Runs everywhere (no namespaces): the core binds ephemeral ports, and the trading host is given
the ones the core reports, as a remote host would be given the core's fixed ports.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid

import pytest
from mainutil import MainRun, child_pids
from stackutil import shm_exists, wait_until

from ext.layout import pid_alive

pytestmark = pytest.mark.timeout(90)

FAST = ("--layout", "unpinned", "--set", "strategy.params.short_window=2", "--set",
        "strategy.params.long_window=4", "--set", "strategy.params.bullish=50", "--set",
        "strategy.params.bearish=50")


def _stop(run: MainRun) -> int:
    run.proc.send_signal(signal.SIGTERM)
    try:
        return run.proc.wait(20)
    except subprocess.TimeoutExpired:
        run.close()
        raise


def test_a_core_and_a_trading_host_make_one_stack(tmp_path):
    core_shm, trading_shm = (f"tsrole_{uuid.uuid4().hex[:10]}" for _ in range(2))
    core = MainRun(tmp_path / "core", core_shm, "--role", "core", *FAST)
    trading = None
    try:
        ready = core.wait_for(r"gateway ready .*'price_port': (\d+), 'news_port': (\d+)")
        order_port = core.wait_for(r"order_manager ready .*'order_port': (\d+)")[1]
        core.wait_for("stack running")
        assert set(child_pids(core.output)) == {"order_manager", "gateway"}
        trading = MainRun(tmp_path / "trading", trading_shm, "--role", "trading", *FAST,
                          "--price-port", ready[1], "--news-port", ready[2],
                          "--order-port", order_port)
        trading.wait_for("stack running")
        assert set(child_pids(trading.output)) == {"orderbook", "strategy"}
        assert shm_exists(trading_shm) and not shm_exists(core_shm)
        core.wait_for(r"Received Order \d+: (BUY|SELL)", 30)
        assert _stop(trading) == 0
        assert _stop(core) == 0
        for run in (trading, core):
            pids = child_pids(run.output).values()
            wait_until(lambda p=pids: not any(pid_alive(x) for x in p), 5,
                       what="children to exit")
        assert not shm_exists(trading_shm)
        booked = [json.loads(line) for line in
                  (tmp_path / "core" / "orders.jsonl").read_text().splitlines()]
        assert booked and {rec["client"] for rec in booked} == {"strat-1"}
        assert not (tmp_path / "trading" / "orders.jsonl").exists()   # no OrderManager there
    finally:
        for run in (trading, core):
            if run is not None:
                run.close()
