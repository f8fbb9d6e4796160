"""Strategies chosen by config, through main.py: a user's class, several at once, a real reject
storm that the host's backoff stops, and a typo that stops main.py before anything starts."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict

import pytest
from mainutil import MainRun, assert_nothing_left, child_pids, main_cmd
from stackutil import make_config, wait_until

from ext.layout import pid_alive
from processes.shared import config, telemetry
from processes.supervisor.stack import Stack, process_order


def run_main(tmp_path, *extra: str, timeout: float = 80) -> tuple[subprocess.CompletedProcess,
                                                                  str, str]:
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(main_cmd(tmp_path, shm, *extra), cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)
    return proc, proc.stdout + proc.stderr, shm


def run_until_booked(tmp_path, clients: set[str], *extra: str) -> tuple[int, str, str]:
    """main.py until each of `clients` has an order booked, then SIGTERM (as a user's kill);
    its exit code, its output, and its segment name."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    run = MainRun(tmp_path, shm, *extra)
    try:
        run.wait_for("stack running", 30)
        code = run.stop_when(lambda: clients <= {o["client"] for o in booked(tmp_path)},
                             f"orders booked from {sorted(clients)}")
    finally:
        run.close()
    return code, run.output, shm


def booked(tmp_path) -> list[dict]:
    path = tmp_path / "orders.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def snapshot(tmp_path, process: str) -> dict:
    return telemetry.read_snapshot(tmp_path / "logs" / "stats" / f"{process}.json")


@pytest.mark.timeout(90)
def test_a_user_strategy_class_trades_under_its_name(tmp_path):
    code, out, shm = run_until_booked(
        tmp_path, {"news-only"}, "--set", "strategy.class=examples.sentiment:SentimentOnly",
        "--set", "strategy.name=news-only")
    assert code == 0, out[-3000:]
    assert re.search(r"Received Order \d+: (BUY|SELL) \d+ [A-Z]+ @ \d+\.\d\d", out), out[-3000:]
    orders = booked(tmp_path)
    assert orders and {o["client"] for o in orders} == {"news-only"}
    log = (tmp_path / "logs" / "strategy.log").read_text()
    assert "class=examples.sentiment:SentimentOnly" in log
    counters = snapshot(tmp_path, "strategy")["counters"]
    assert counters["class"] == "examples.sentiment:SentimentOnly"
    assert counters["orders"] >= len(orders) and counters["strategy_errors"] == 0
    assert_nothing_left(out, shm)


@pytest.mark.timeout(90)
def test_two_strategies_at_once_are_separate_clients_with_their_own_files(tmp_path):
    code, out, shm = run_until_booked(
        tmp_path, {"strat-1", "sentiment"},
        "--set", "strategies.sentiment.class=examples.sentiment:SentimentOnly",
        "--set", "strategies.sentiment.params.threshold=70")
    assert code == 0, out[-3000:]
    clients = Counter(o["client"] for o in booked(tmp_path))
    assert set(clients) == {"strat-1", "sentiment"}, clients
    logs = tmp_path / "logs"
    assert "MovingAverageSentiment" in (logs / "strategy.log").read_text()
    own = (logs / "strategy.sentiment.log").read_text()
    assert "SentimentOnly" in own and "MovingAverageSentiment" not in own
    for process, name in (("strategy", "strat-1"), ("strategy.sentiment", "sentiment")):
        snap = snapshot(tmp_path, process)
        assert snap["final"] and snap["counters"]["name"] == name
        assert snap["counters"]["acks"] == clients[name]
    # The exit summary has a row per strategy, and its flow rows name the second one.
    assert re.search(r"strat-1 +processes\.strategy\.builtin:MovingAverageSentiment", out)
    assert re.search(r"sentiment +examples\.sentiment:SentimentOnly", out)
    assert "Strategy orders sent [sentiment]" in out
    assert_nothing_left(out, shm, "strategy.sentiment")


@pytest.mark.timeout(90)
def test_a_reject_storm_is_stopped_by_the_backoff(tmp_path):
    """Kill switch on: every order is rejected. The host restores each position and backs the
    symbol and side off, doubling; so rejects per symbol and side stay within the backoff
    periods that fit in the run, one backoff line each."""
    strategy_log = tmp_path / "logs" / "strategy.log"

    def storm() -> bool:   # rejects, and the strategy asking again while backed off
        c = (snapshot(tmp_path, "strategy") or {}).get("counters", {})
        return c.get("rejects", 0) >= 3 and c.get("refused_backoff", 0) > c["rejects"]

    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    run = MainRun(tmp_path, shm, "--set", "order_manager.kill_switch=true",
                  "--set", "logging.stats_interval=0.2")
    try:
        run.wait_for("stack running", 30)
        code = run.stop_when(storm, "a reject storm held off by the backoff")
    finally:
        run.close()
    duration = time.monotonic() - started    # no less than the strategy traded
    out = run.output
    assert code == 0, out[-3000:]
    assert booked(tmp_path) == []
    log = strategy_log.read_text()
    rejects = Counter(re.findall(r"order \S+ (BUY|SELL) \d+ (\w+) rejected: ", log))
    assert rejects, log[-3000:]
    backoffs = defaultdict(list)
    for side, sym, delay in re.findall(r"backing off (BUY|SELL) (\w+) for ([\d.]+)s", log):
        backoffs[(side, sym)].append(float(delay))
    # A run of D seconds fits at most n backoffs of 1, 2, 4, ... s with 1 + 2 + ... < D.
    bound = math.floor(math.log2(duration + 1)) + 1
    for key, count in rejects.items():
        assert count <= bound, (key, count, bound)
        assert len(backoffs[key]) == count, "one backoff line per reject"
        assert backoffs[key] == [min(2.0 ** k, 30.0) for k in range(count)], backoffs[key]
    counters = snapshot(tmp_path, "strategy")["counters"]
    om = snapshot(tmp_path, "order_manager")["counters"]
    assert counters["rejects"] == sum(rejects.values()) == om["rejects"]
    assert counters["refused_backoff"] > counters["rejects"], "the strategy kept asking"
    if counters["pending"] == 0:
        assert counters["positions"] == [0] * len(counters["symbols"]), "restored on reject"
    assert_nothing_left(out, shm)


@pytest.mark.timeout(90)
def test_a_killed_strategy_process_is_restarted_by_its_own_name(tmp_path):
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    run = MainRun(tmp_path, shm, "--set", "strategies.b.class=examples.sentiment:SentimentOnly",
                  "--set", "strategies.b.params.threshold=60", "--set", "supervisor.backoff=0.2")
    try:
        run.wait_for("stack running")
        pids = child_pids(run.output)
        wait_until(lambda: any(o["client"] == "b" for o in booked(tmp_path)), 20,
                   what="orders from strategy b")
        mark = len(run.lines)
        os.kill(pids["strategy.b"], signal.SIGKILL)
        kill_ns = time.monotonic_ns()
        run.wait_for(r"strategy\.b died \(killed by SIGKILL\); restarting it", 10, mark)
        restarted = run.wait_for(r"strategy\.b restarted \(pid (\d+)\)", 30, mark)
        assert pid_alive(int(restarted[1])) and pid_alive(pids["strategy"]), \
            "only strategy.b is restarted"
        wait_until(lambda: any(o["client"] == "b" and o["received_ns"] > kill_ns
                               for o in booked(tmp_path)), 30, what="b trading again")
        os.kill(run.proc.pid, signal.SIGTERM)
        run.proc.wait(30)
    finally:
        run.close()
    assert run.proc.returncode == 0, run.output[-3000:]
    assert "strategy died" not in run.output
    assert_nothing_left(run.output, shm, "strategy.b")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sets, message", [
    (["strategy.class=examples.nope:X"], "strategy.class: no module named 'examples.nope'"),
    (["strategy.params.short_window=x"],
     "strategy.params.short_window: Expected `int`, got `str`"),
    (["strategies.b.class=examples.sentiment:SentimentOnly", "strategies.b.params.thresh=1"],
     "strategies.b.params: unknown key 'thresh'"),
])
def test_a_strategy_typo_stops_main_before_anything_starts(tmp_path, sets, message):
    extra = [arg for item in sets for arg in ("--set", item)]
    proc, out, _ = run_main(tmp_path, *extra, "--duration", "5", timeout=25)
    assert proc.returncode == 2, out[-3000:]
    assert message in proc.stderr
    assert not (tmp_path / "logs" / "gateway.log").exists()


def test_each_strategy_process_has_its_own_section_and_place_in_the_order(tmp_path):
    cfg = make_config(tmp_path, **{"strategies.b.class": "examples.sentiment:SentimentOnly",
                                   "strategies.b.symbols": "AAPL"})
    assert process_order(cfg) == ("order_manager", "gateway", "orderbook", "strategy",
                                  "strategy.b")
    stack = Stack(cfg)
    own = stack.config_of("strategy.b")
    assert own.strategy.name == "b" and own.strategy.symbols == ["AAPL"]
    assert own.strategy.cls == "examples.sentiment:SentimentOnly" and own.strategies == {}
    assert stack.config_of("strategy").strategy.name == "strat-1"
    stack.cfg.network.order_port = 4242   # a port bound later reaches every strategy's config
    assert stack.config_of("strategy.b").network.order_port == 4242
    assert config.section_of("strategy.b") == "strategy"
