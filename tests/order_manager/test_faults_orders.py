"""Fault: SIGKILL the OrderManager while orders flow, restart it; no order lost, none doubled.

The whole pipeline runs (Gateway -> OrderBook -> shm -> Strategy -> OrderManager) with rates and
strategy settings that make orders flow. The OrderManager is frozen (SIGSTOP) until orders are
in flight, then SIGKILLed; the Strategy keeps trading into its outbox, and a new OrderManager
starts on the same port and order log. Then the feed stops, every order must be answered, and the
ids the Strategy made (its DEBUG "created" lines) must be exactly the ids in the order log, once.

The frozen OrderManager reads nothing, so the orders the Strategy resends were never booked. The
other half of dedup after a restart, a resend of an order the dead process DID book (its ack
lost with the connection), is what a client under the Strategy's own name does: it resends the
Strategy's last order booked before the kill, frame for frame, and must get that order's number
back with nothing booked again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from stackutil import Child, hold_port, make_config, record_fault, recv_frames, wait_until

from processes.shared import telemetry
from processes.shared.protocol import Order, encode_hello, encode_order

CREATED = re.compile(r"order (\S+) created: ")


def snapshot(tmp_path: Path, process: str) -> dict:
    snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / f"{process}.json")
    return snap or {"counters": {}}


def counter(tmp_path: Path, process: str, key: str, since_ns: int = 0) -> int:
    """A counter from the process's latest snapshot; -1 if none was published since since_ns."""
    snap = snapshot(tmp_path, process)
    if snap.get("mono_ns", 0) < since_ns:
        return -1
    return snap["counters"].get(key, -1)


def booked(tmp_path: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]


def resend_as(port: int, client: str, record: dict) -> dict:
    """Send a booked order-log record's order again as `client` (a client whose ack was lost);
    the OrderManager's reply."""
    order = Order(**{k: record[k] for k in Order.__struct_fields__})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_hello(client))
        welcome, = recv_frames(sock, 1)
        assert json.loads(welcome)["type"] == "welcome", welcome
        sock.sendall(encode_order(order))
        return json.loads(recv_frames(sock, 1)[0])


@pytest.mark.timeout(90)
def test_kill_9_the_order_manager_mid_stream_loses_and_doubles_nothing(tmp_path):
    cfg = make_config(tmp_path, **{
        "gateway.tick_rate": 2000, "gateway.news_rate": 200, "gateway.seed": 7,
        "strategy.params.short_window": 2, "strategy.params.long_window": 4,
        # news agrees with a trend half the time
        "strategy.params.bullish": 50, "strategy.params.bearish": 50,
        "logging.level": "DEBUG", "logging.stats_interval": 0.1,
        # One order in flight per symbol and side: with ten symbols, the orders frozen at the
        # kill leave sides free for the orders the Strategy makes during the outage.
        "market.symbols": ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "NFLX",
                           "INTC", "ORCL"],
    })
    children: list[Child] = []
    held = hold_port()          # the restarted OrderManager binds the same port: nobody else may
    cfg.network.order_port = held.getsockname()[1]

    def start(name: str) -> dict:
        child = Child(name, cfg)
        children.append(child)
        return child.start()

    try:
        assert start("order_manager")["order_port"] == cfg.network.order_port
        gw = start("gateway")
        cfg.network.price_port, cfg.network.news_port = gw["price_port"], gw["news_port"]
        start("orderbook")
        strategy = start("strategy")
        om, gateway = children[0], children[1]

        wait_until(lambda: len(booked(tmp_path)) >= 20, 20, what="orders to flow")
        # Freeze it first, so that orders are surely in flight (sent, unanswered) at the kill.
        os.kill(om.proc.pid, signal.SIGSTOP)
        frozen_ns = time.monotonic_ns()
        wait_until(lambda: counter(tmp_path, "strategy", "pending", frozen_ns) >= 3, 10,
                   what="orders in flight")
        om.kill()                                    # SIGKILL
        before_kill = len(booked(tmp_path))
        # The Strategy keeps trading: its new orders wait in the outbox.
        unsent = counter(tmp_path, "strategy", "unsent")
        wait_until(lambda: counter(tmp_path, "strategy", "unsent") >= unsent + 3, 10,
                   what="orders made while the OrderManager is down")
        restarted = Child("order_manager", cfg)      # same port, same order log
        children.append(restarted)
        restart_ns = time.monotonic_ns()
        info = restarted.start()
        ready_ns = time.monotonic_ns()
        assert info["replayed"] == before_kill and info["next_order_no"] == before_kill + 1
        # An order the killed process booked, resent: deduplicated from the order log alone.
        last_booked = booked(tmp_path)[before_kill - 1]
        again = resend_as(info["order_port"], cfg.strategy.name, last_booked)
        assert again == {"type": "ack", "id": last_booked["id"],
                         "order_no": last_booked["order_no"]}, (
            f"a resend of {last_booked['id']}, booked before the kill as order "
            f"{last_booked['order_no']}, was not deduplicated: {again}")

        wait_until(lambda: counter(tmp_path, "strategy", "resent") >= 6, 15,
                   what="the Strategy to reconnect and resend")
        wait_until(lambda: len(booked(tmp_path)) >= before_kill + 10, 15,
                   what="orders to flow again")
        gateway.stop()                               # no more ticks, so no more orders
        quiet_ns = time.monotonic_ns()
        wait_until(lambda: counter(tmp_path, "strategy", "pending", quiet_ns) == 0, 15,
                   what="every order answered")
        children[3].stop()                           # the Strategy: final snapshot
        restarted.stop()
        om_final = snapshot(tmp_path, "order_manager")
    finally:
        for child in reversed(children):
            child.stop()
        held.close()

    made = CREATED.findall((tmp_path / "logs" / "strategy.log").read_text())
    records = booked(tmp_path)
    ids = [r["id"] for r in records]
    final = snapshot(tmp_path, "strategy")
    assert final["final"] and final["pid"] == strategy["pid"]
    stats = final["counters"]

    assert len(made) == len(set(made)) == stats["orders"]
    assert len(ids) == len(set(ids)), "an order was booked twice"
    assert set(ids) == set(made), (f"lost: {sorted(set(made) - set(ids))[:5]}, "
                                   f"unknown: {sorted(set(ids) - set(made))[:5]}")
    assert [r["order_no"] for r in records] == list(range(1, len(records) + 1))
    assert stats["acks"] == stats["orders"] and stats["rejects"] == 0 and stats["pending"] == 0
    assert stats["unsent"] >= 3 and stats["resent"] >= 6   # in flight at the kill + outbox
    assert [r["order_no"] for r in records if r["id"] == last_booked["id"]] == [
        last_booked["order_no"]], "the resent booked order is in the log once"
    assert om_final["final"] and om_final["pid"] == info["pid"]
    assert om_final["counters"]["duplicates"] >= 1, om_final["counters"]

    # Recovery: restart -> the first order made before the restart that the new process booked.
    waiting = [r["received_ns"] for r in records[before_kill:] if r["tick_ns"] < restart_ns]
    assert waiting, "no order made during the outage was booked after the restart"
    result = {
        "orders": len(records), "booked_before_kill": before_kill,
        "resent": stats["resent"], "unsent": stats["unsent"],
        "restart_to_ready_s": (ready_ns - restart_ns) / 1e9,
        "restart_to_first_resent_booked_s": (min(waiting) - restart_ns) / 1e9,
        "ready_to_first_resent_booked_s": (min(waiting) - ready_ns) / 1e9,
    }
    (tmp_path / "recovery.json").write_text(json.dumps(result, indent=1))
    record_fault("kill9_order_manager", result["restart_to_first_resent_booked_s"],
                 what="kill -9 the OrderManager with orders in flight, restart it: recovery = "
                      "restart -> first order made during the outage booked", **result)
    assert result["restart_to_first_resent_booked_s"] < 15   # generous: 2 shared vCPUs
