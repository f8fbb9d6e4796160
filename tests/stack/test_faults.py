"""Faults on real processes: each test asserts what must happen AND measures the recovery.

Every measurement goes through stackutil.record_fault: printed, and written to
$TRADESTACK_FAULT_RESULTS/<test>.json when that variable names a directory (bench/report.py
tabulates them). Times are CLOCK_MONOTONIC, the clock every process stamps its ticks and orders
with, so a duration can run from an event in this test to a write in another process. The kill -9
of the OrderManager with orders in flight is in test_faults_orders.py; hostile input on every
port is in test_hostile.py.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import mainutil as tm
import pytest
from stackutil import (
    CTX,
    Child,
    hold_port,
    make_config,
    record_fault,
    rss_bytes,
    shm_exists,
    start,
    wait_until,
)

from ext import SharedPriceBook
from ext.layout import pid_alive
from processes.shared import telemetry


def snapshot(tmp_path: Path, process: str, since_ns: int = 0) -> dict:
    """The process's latest stats snapshot, or {} if none was published since since_ns."""
    snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / f"{process}.json")
    if not snap or snap.get("mono_ns", 0) < since_ns:
        return {}
    return snap


def counters(tmp_path: Path, process: str, since_ns: int = 0) -> dict:
    return snapshot(tmp_path, process, since_ns).get("counters", {})


def booked(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in text.splitlines() if x.endswith("}")]


def newest_write(book: SharedPriceBook) -> int:
    return max(book.read_slot(i)[3] for i in range(book.nsymbols))


def trading_config(tmp_path: Path, **extra):
    """Rates and strategy settings that make orders flow every few ticks."""
    return make_config(tmp_path, **{
        "gateway.tick_rate": 2000, "gateway.news_rate": 200, "gateway.seed": 11,
        "strategy.params.short_window": 2, "strategy.params.long_window": 4,
        "strategy.params.bullish": 50, "strategy.params.bearish": 50,
        "logging.stats_interval": 0.1, **extra})


# --- kill -9 the Gateway --------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_kill_9_the_gateway_and_restart_it_ticks_flow_again(tmp_path, children):
    """The restarted Gateway (on the same ports, held by the test so that nobody takes them
    meanwhile) starts its sequences again. It runs at a slower rate than the killed one had
    run up to, so every symbol's first new sequence is below its old one: the OrderBook counts
    exactly one reset per symbol, and no gap."""
    held = [hold_port(), hold_port()]
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 2000, "logging.stats_interval": 0.1,
                                   "network.price_port": held[0].getsockname()[1],
                                   "network.news_port": held[1].getsockname()[1]})
    slow = copy.deepcopy(cfg)
    slow.gateway.tick_rate = 100       # 20 per symbol and second: far below the old sequences
    try:
        start(children, "gateway", cfg)
        start(children, "orderbook", cfg)
        with SharedPriceBook(name=cfg.market.shm_name, create=False) as book:
            n = book.nsymbols
            wait_until(lambda: min(book.read_slot(i)[2] for i in range(n)) >= 1000, 20,
                       what="1000 ticks of every symbol")
            mark = time.monotonic_ns()
            wait_until(lambda: counters(tmp_path, "orderbook", mark), 5, what="a fresh snapshot")
            before = counters(tmp_path, "orderbook", mark)
            assert before["seq_resets"] == 0 and before["reconnects"] == 0, before
            children[0].kill()                                   # SIGKILL mid-stream
            kill_ns = time.monotonic_ns()
            ob_log = tmp_path / "logs" / "orderbook.log"
            wait_until(lambda: "price feed lost" in ob_log.read_text(), 10,
                       what="the loss noticed")
            assert newest_write(book) < kill_ns + 20_000_000, "ticks without a Gateway"
            mark = time.monotonic_ns()
            wait_until(lambda: counters(tmp_path, "orderbook", mark), 5, what="a fresh snapshot")
            gaps_at_kill = counters(tmp_path, "orderbook", mark)["gaps"]
            restarted = Child("gateway", slow)                   # the same ports
            children.append(restarted)
            restart_ns = time.monotonic_ns()
            restarted.start()
            ready_ns = time.monotonic_ns()
            first = [0]

            def fresh() -> bool:
                writes = [w for w in (book.read_slot(i)[3] for i in range(n)) if w > restart_ns]
                if writes:
                    first[0] = min(writes)
                return bool(writes)

            wait_until(fresh, 15, interval=0.001, what="the first tick after the restart")
            wait_until(lambda: all(book.read_slot(i)[3] > restart_ns for i in range(n)), 15,
                       what="a new tick of every symbol")
            wait_until(lambda: counters(tmp_path, "orderbook").get("seq_resets", 0) >= n, 5,
                       what="a reset per symbol")
    finally:
        for sock in held:
            sock.close()
    ob = counters(tmp_path, "orderbook")
    result = record_fault(
        "kill9_gateway", (first[0] - restart_ns) / 1e9,
        what="kill -9 the Gateway mid-stream, restart it: recovery = restart -> first new tick "
             "in shared memory",
        restart_to_ready_s=(ready_ns - restart_ns) / 1e9, reconnects=ob["reconnects"],
        seq_resets=ob["seq_resets"], gaps=ob["gaps"])
    assert ob["reconnects"] == 1
    assert ob["seq_resets"] == n, ob
    assert ob["gaps"] == gaps_at_kill, "the new sequences start below the old: no gap"
    assert result["recovery_s"] < 10


@pytest.mark.timeout(60)
def test_the_strategy_redials_the_news_of_a_restarted_gateway(tmp_path, children):
    """kill -9 the Gateway under a Strategy: the Strategy logs the lost news feed, redials with
    backoff, and hears the restarted Gateway's news (its order connection is not touched)."""
    held = [hold_port(), hold_port()]
    orders = socket.create_server(("127.0.0.1", 0))   # connections wait in its backlog
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 100, "gateway.news_rate": 200,
                                   "logging.stats_interval": 0.05,
                                   "network.price_port": held[0].getsockname()[1],
                                   "network.news_port": held[1].getsockname()[1],
                                   "network.order_port": orders.getsockname()[1]})
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    strategy_log = tmp_path / "logs" / "strategy.log"
    try:
        start(children, "gateway", cfg)
        start(children, "strategy", cfg)
        wait_until(lambda: counters(tmp_path, "strategy").get("news", 0) >= 20, 15,
                   what="news to reach the Strategy")
        children[0].kill()
        wait_until(lambda: "news feed lost" in strategy_log.read_text(), 10,
                   what="the Strategy to notice the lost feed")
        mark = time.monotonic_ns()
        wait_until(lambda: counters(tmp_path, "strategy", mark), 5, what="a fresh snapshot")
        lost = counters(tmp_path, "strategy", mark)
        assert lost["reconnects"] == 0, lost
        start(children, "gateway", cfg)                    # the same ports
        restart_ns = time.monotonic_ns()
        wait_until(lambda: counters(tmp_path, "strategy", restart_ns).get("news", 0)
                   >= lost["news"] + 20, 15, what="news from the restarted Gateway")
        heard = counters(tmp_path, "strategy", restart_ns)
        assert strategy_log.read_text().count("news feed lost") == 1
    finally:
        for sock in (*held, orders):
            sock.close()
        for child in reversed(children):
            child.stop()
        book.close()
        book.unlink()
    assert heard["reconnects"] == 1, "one redial, of the news feed"
    assert heard["bad_news"] == 0 and heard["unknown_news"] == 0


# --- kill -9 the OrderBook ------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_kill_9_the_orderbook_stops_trading_until_it_is_back(tmp_path, children):
    """The Strategy notices the dead OrderBook (its pid is gone), trades nothing while its prices
    are stale, re-attaches to the segment of the restarted OrderBook and trades again, with its
    positions kept."""
    cfg = trading_config(tmp_path, **{"strategy.max_price_age": 1.0})
    cfg.network.order_port = start(children, "order_manager", cfg)["order_port"]
    gw = start(children, "gateway", cfg)
    cfg.network.price_port, cfg.network.news_port = gw["price_port"], gw["news_port"]
    start(children, "orderbook", cfg)
    start(children, "strategy", cfg)
    nsym = len(cfg.market.symbols)
    orders_path = tmp_path / "orders.jsonl"
    wait_until(lambda: len(booked(orders_path)) >= 10, 20, what="orders to flow")

    children[2].kill()                                       # the OrderBook, SIGKILL
    kill_ns = time.monotonic_ns()
    wait_until(lambda: counters(tmp_path, "strategy", kill_ns).get("stale_symbols") == nsym, 10,
               what="the Strategy to see every price go stale")
    stale_ns = time.monotonic_ns()
    stale = counters(tmp_path, "strategy")
    wait_until(lambda: counters(tmp_path, "strategy").get("book_dead") is True, 10,
               what="the Strategy to see the OrderBook's heartbeat stop")
    dead_ns = time.monotonic_ns()
    # News keeps coming from the live Gateway: each one is a decision taken on stale prices.
    wait_until(lambda: counters(tmp_path, "strategy")["news"] >= stale["news"] + 50, 10,
               what="50 news decided on while stale")
    assert counters(tmp_path, "strategy")["orders"] == stale["orders"], "traded while stale"

    restarted = Child("orderbook", cfg)                     # reclaims the dead one's segment
    children.append(restarted)
    restart_ns = time.monotonic_ns()
    restarted.start()
    ready_ns = time.monotonic_ns()
    wait_until(lambda: any(r["tick_ns"] > restart_ns for r in booked(orders_path)), 20,
               what="an order on a price from the restarted OrderBook")
    records = booked(orders_path)
    first = min(r["received_ns"] for r in records if r["tick_ns"] > restart_ns)
    wait_until(lambda: counters(tmp_path, "strategy").get("reattaches", 0) >= 1, 5)
    wait_until(lambda: counters(tmp_path, "strategy").get("stale_symbols") == 0, 5,
               what="every price fresh again")
    after = counters(tmp_path, "strategy")

    assert not [r for r in records if kill_ns < r["tick_ns"] < restart_ns], \
        "an order on a tick the dead OrderBook never wrote"
    assert after["stale_symbols"] == 0 and after["book_dead"] is False
    log_text = (tmp_path / "logs" / "strategy.log").read_text()
    assert "is dead: its prices are stale" in log_text
    assert "re-attached to" in log_text and "positions kept" in log_text
    assert "reclaimed segment" in (tmp_path / "logs" / "orderbook.log").read_text()
    result = record_fault(
        "kill9_orderbook", (first - restart_ns) / 1e9,
        what="kill -9 the OrderBook, restart it: recovery = restart -> first order booked on a "
             "price the new OrderBook wrote (the Strategy re-attaches by itself)",
        restart_to_ready_s=(ready_ns - restart_ns) / 1e9,
        kill_to_all_stale_s=(stale_ns - kill_ns) / 1e9,
        kill_to_heartbeat_dead_s=(dead_ns - kill_ns) / 1e9,
        reattaches=after["reattaches"])
    assert result["recovery_s"] < 15


# --- a stopped price subscriber -------------------------------------------------------------------

def _subscriber(port: int, stop, out) -> None:
    """A raw price subscriber that reads as fast as it can until stop.value is set; per read,
    (receive time, send time of the newest complete frame)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(0.1)
    samples: list[tuple[int, int]] = []
    closed, nbytes, tail = False, 0, b""
    while not stop.value:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        now = time.monotonic_ns()
        nbytes += len(chunk)
        data = tail + chunk
        end = data.rfind(b"*")
        if end < 0:
            tail = data[-512:]
            continue
        frame = data[data.rfind(b"*", 0, end) + 1:end]
        tail = data[end + 1:]
        parts = frame.split(b",")
        if len(parts) == 4 and parts[3].isdigit():
            samples.append((now, int(parts[3])))
    sock.close()
    out.put((samples, closed, nbytes))


def _p50(values: list[int]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


STOPPED_S = 5.0   # how long the subscriber stays SIGSTOPped: far past filling its bounded buffer


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy, rate", [("conflate", 0), ("drop", 0), ("close", 100_000)])
def test_a_stopped_subscriber_stalls_nobody(tmp_path, children, policy, rate):
    """SIGSTOP one price subscriber for STOPPED_S s at full rate: the Gateway's memory stays
    bounded, the other subscriber's ticks keep coming without a latency blow-up, and the stopped one
    resumes with fresh prices after SIGCONT (or is closed, under "close").

    "close" runs paced at 100k ticks/s (a rate this test's Python reader keeps up with on a
    loaded 2-core machine), not unpaced: at tick_rate 0 the feed runs at the pace
    of its fastest client, so under "close" every slower one, this test's Python reader
    included, would be closed sooner or later.
    """
    bound = 1 << 20
    cfg = make_config(tmp_path, **{"gateway.tick_rate": rate, "gateway.news_rate": 1,
                                   "gateway.slow_client": policy,
                                   "gateway.max_client_buffer": bound,
                                   "logging.stats_interval": 0.2})
    info = start(children, "gateway", cfg)
    gw_pid = children[0].proc.pid
    # The subscribers share nothing that takes a lock: a multiprocessing Event's is_set() takes
    # one held in common by every process with the Event, so a SIGSTOP landing inside it would
    # block the live subscriber for the whole stop. A shared byte read plainly cannot.
    stop, out_live, out_stopped = CTX.RawValue("b", 0), CTX.Queue(), CTX.Queue()
    procs = [CTX.Process(target=_subscriber, args=(info["price_port"], stop, q))
             for q in (out_live, out_stopped)]
    for p in procs:
        p.start()
    live, stopped = procs
    try:
        time.sleep(1.5)                                        # both read at full rate
        rss0 = rss_bytes(gw_pid)
        stop_ns = time.monotonic_ns()
        os.kill(stopped.pid, signal.SIGSTOP)
        rss_max = rss0
        t_end = time.monotonic() + STOPPED_S
        while time.monotonic() < t_end:
            rss_max = max(rss_max, rss_bytes(gw_pid))
            time.sleep(0.1)
        cont_ns = time.monotonic_ns()
        os.kill(stopped.pid, signal.SIGCONT)
        time.sleep(2.5)       # the measured window: the resumed reader's backlog, then ticks
        stop.value = 1
        live_samples, live_closed, live_bytes = out_live.get(timeout=20)
        st_samples, st_closed, st_bytes = out_stopped.get(timeout=20)
    finally:
        stop.value = 1
        for p in procs:
            if p.pid is not None and pid_alive(p.pid):
                os.kill(p.pid, signal.SIGCONT)
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    gw = counters(tmp_path, "gateway")
    before = [r - s for r, s in live_samples if stop_ns - 1_000_000_000 < r < stop_ns]
    during = [r - s for r, s in live_samples if stop_ns + 500_000_000 < r < cont_ns]
    reads = [r for r, _ in live_samples]
    gaps = sorted(((b - a) / 1e6, (a - stop_ns) / 1e6) for a, b in zip(reads, reads[1:]))[-3:]
    assert not live_closed and before and len(during) > 10, (
        f"the live subscriber stalled: {len(during)} reads while the other was stopped; its "
        f"longest gaps (ms, starting at ms after the SIGSTOP): {gaps}; cont at "
        f"{(cont_ns - stop_ns) / 1e6:.0f} ms; closed {live_closed}; {live_bytes:,} bytes read "
        "in all (a read is sampled only when its last frame parses)")
    p50_before, p50_during = _p50(before), _p50(during)
    # Generous: 2 shared vCPUs, and at tick_rate 0 the live reader's own queue sets its latency.
    assert p50_during < max(5 * p50_before, 50e6), (p50_before, p50_during)
    growth = rss_max - rss0
    assert growth < 8 * bound, f"Gateway RSS grew {growth} bytes while a subscriber was stopped"
    log_text = (tmp_path / "logs" / "gateway.log").read_text()
    details = {"policy": policy, "tick_rate": rate, "live_p50_before_ms": p50_before / 1e6,
               "live_p50_during_ms": p50_during / 1e6, "gateway_rss_growth_bytes": growth,
               "gateway": {k: gw.get(k) for k in ("dropped_batches", "slow_events",
                                                  "conflated", "conflated_batches")}}
    if policy == "close":
        assert st_closed, "the stopped subscriber must have been closed as a slow consumer"
        assert "slow consumer" in log_text
        record_fault(f"sigstop_subscriber_{policy}", 0.0,
                     what=f"SIGSTOP a price subscriber {STOPPED_S:g} s at {rate:,} ticks/s: it is "
                          "closed; the other subscriber never waits", **details)
        return
    fresh = [r for r, s in st_samples if s >= cont_ns]
    assert not st_closed and fresh, "the stopped subscriber did not get fresh ticks after SIGCONT"
    assert re.search(r"price client \S+ is slow", log_text) and "caught up" in log_text
    if policy == "conflate":
        assert gw["conflated"] >= 1
    result = record_fault(
        f"sigstop_subscriber_{policy}", (fresh[0] - cont_ns) / 1e9,
        what=f"SIGSTOP a price subscriber {STOPPED_S:g} s at tick_rate 0, SIGCONT: recovery = "
             "SIGCONT -> first tick sent after SIGCONT received by it", **details)
    assert result["recovery_s"] < 10


# --- main.py: supervision and SIGTERM -------------------------------------------------------------

@pytest.mark.timeout(120)
def test_main_restarts_a_killed_child_and_keeps_trading(tmp_path):
    """kill -9 each child of a running main.py in turn: each death is logged with its exit
    code, the child is restarted, and orders flow again before the next kill."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    run = tm.MainRun(tmp_path, shm, "--set", "strategy.params.short_window=2", "--set",
                  "strategy.params.long_window=4", "--set", "strategy.params.bullish=50", "--set",
                  "strategy.params.bearish=50", "--set", "supervisor.backoff=0.2")
    orders_path = tmp_path / "orders.jsonl"
    recoveries: dict[str, dict] = {}
    try:
        run.wait_for("stack running")
        wait_until(lambda: len(booked(orders_path)) >= 5, 20, what="orders to flow")
        for name in ("gateway", "orderbook", "order_manager", "strategy"):
            pid = tm.child_pids(run.output)[name]
            mark = len(run.lines)
            os.kill(pid, signal.SIGKILL)
            kill_ns = time.monotonic_ns()
            run.wait_for(rf"{name} died \(killed by SIGKILL\); restarting it", 10, mark)
            restarted = run.wait_for(rf"{name} restarted \(pid (\d+)\)", 30, mark)
            seen_ns = time.monotonic_ns()
            assert int(restarted[1]) != pid and pid_alive(int(restarted[1]))
            wait_until(lambda k=kill_ns: any(r["tick_ns"] > k for r in booked(orders_path)), 30,
                       what=f"orders on fresh prices after restarting {name}")
            first = min(r["received_ns"] for r in booked(orders_path) if r["tick_ns"] > kill_ns)
            recoveries[name] = {"kill_to_restarted_s": (seen_ns - kill_ns) / 1e9,
                                "kill_to_first_order_s": (first - kill_ns) / 1e9}
        assert run.proc.poll() is None, "main.py must still be running"
        os.kill(run.proc.pid, signal.SIGTERM)
        run.proc.wait(30)
    finally:
        run.close()
    out = run.output
    assert run.proc.returncode == 0, out[-3000:]
    tm.assert_nothing_left(out, shm)
    ids = [r["id"] for r in booked(orders_path)]
    assert len(ids) == len(set(ids)), "an order was booked twice across the restarts"
    # The restarted OrderManager continued main.py's session: one session, numbering unbroken.
    assert len({r["session"] for r in booked(orders_path)}) == 1
    numbers = [r["order_no"] for r in booked(orders_path)]
    assert numbers == list(range(1, len(numbers) + 1))
    for name, rec in recoveries.items():
        record_fault(f"main_restarts_{name}", rec["kill_to_first_order_s"],
                     what=f"kill -9 the {name} under main.py: restarted by the supervisor; "
                          "recovery = kill -> first order booked on a tick sent after the kill",
                     **rec)


@pytest.mark.timeout(90)
def test_main_stops_the_stack_when_a_child_has_used_up_its_restarts(tmp_path):
    """supervisor.max_restarts 2: the Gateway is restarted twice; its third death in a row
    stops the whole stack, downstream first, and main.py exits 1, leaving nothing behind."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    run = tm.MainRun(tmp_path, shm, "--set", "supervisor.max_restarts=2",
                     "--set", "supervisor.backoff=0.05", "--set", "supervisor.backoff_max=0.1")
    pids: list[int] = []
    try:
        run.wait_for("stack running")
        pid = tm.child_pids(run.output)["gateway"]
        for k in (1, 2):
            mark = len(run.lines)
            os.kill(pid, signal.SIGKILL)
            pids.append(pid)
            run.wait_for(rf"gateway died \(killed by SIGKILL\); restarting it in [\d.]+s "
                         rf"\(restart {k} of 2\)$", 10, mark)
            pid = int(run.wait_for(r"gateway restarted \(pid (\d+)\)", 30, mark)[1])
        mark = len(run.lines)
        os.kill(pid, signal.SIGKILL)
        pids.append(pid)
        run.wait_for(r"gateway died \(killed by SIGKILL\); stopping the stack \(it was restarted 2 "
                     r"times in a row \(supervisor.max_restarts\)\)$", 10, mark)
        run.proc.wait(40)
        run._reader.join(5)
    finally:
        run.close()
    out = run.output
    assert run.proc.returncode == 1, out[-3000:]
    assert len(set(pids)) == 3 and not any(pid_alive(p) for p in pids)
    assert re.search(r"children exited badly: gateway killed by SIGKILL$", out, re.M), out[-2000:]
    assert re.search(r"stopped: order_manager exit 0, gateway killed by SIGKILL, orderbook exit "
                     r"0, strategy exit 0$", out, re.M), out[-2000:]
    assert "restarting it" not in out[out.index("stopping the stack"):]
    tm.assert_nothing_left(out, shm)


@pytest.mark.timeout(60)
def test_sigterm_to_main_mid_run_leaves_nothing(tmp_path):
    """The clean-stop path as a fault: how long SIGTERM -> every process gone, no segment."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc, lines = tm.start_main(tmp_path, shm)
    try:
        assert shm_exists(shm)
        wait_until(lambda: (tmp_path / "orders.jsonl").exists()   # mid-run: orders flow
                   and (tmp_path / "orders.jsonl").read_text().strip(), 20, what="an order")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        tm.reap(proc)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    tm.assert_nothing_left(out, shm)
    record_fault("sigterm_main", took,
                 what="SIGTERM main.py mid-run: recovery = SIGTERM -> main.py exited, every "
                      "child gone and no segment left")
