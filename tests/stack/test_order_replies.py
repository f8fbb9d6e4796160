"""A real OrderManager's replies to real clients: a risk reject sent to a real Strategy restores
its position, and a client that stops reading its acks is closed while the others trade on."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from stackutil import make_config, recv_frames, shm_exists, start, wait_until

from ext import SharedPriceBook
from processes.shared import telemetry
from processes.shared.protocol import Order, encode_hello, encode_order


def counters(tmp_path, process: str) -> dict:
    snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / f"{process}.json")
    return snap["counters"] if snap else {}


@pytest.mark.timeout(60)
def test_a_risk_reject_from_the_order_manager_restores_the_strategys_position(tmp_path,
                                                                              children):
    """max_position 5 and quantity 10: the built-in strategy's BUY 10 would make AAPL +10, so
    the OrderManager rejects it. The Strategy counted +10 at submit; the reject must take it
    back to 0, so once the backoff is over, still flat, it asks again and is rejected again
    (a Strategy that kept +10 would believe it is long and never ask)."""
    cfg = make_config(tmp_path, **{
        "market.symbols": "AAPL,MSFT", "order_manager.max_position": 5,
        "strategy.params.short_window": 2, "strategy.params.long_window": 4,
        "strategy.params.quantity": 10, "logging.stats_interval": 0.05})
    news_srv = socket.create_server(("127.0.0.1", 0))
    cfg.network.news_port = news_srv.getsockname()[1]
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    news = None
    try:
        cfg.network.order_port = start(children, "order_manager", cfg)["order_port"]
        start(children, "strategy", cfg)
        news_srv.settimeout(10)
        news, _ = news_srv.accept()
        news.sendall(b"AAPL,90*")
        wait_until(lambda: (counters(tmp_path, "strategy").get("sentiment") or [0])[0] == 90,
                   10, what="the Strategy to hear the news")
        price = [100.0]

        def rising_until(predicate, what: str) -> None:
            def step() -> bool:
                price[0] += 0.01
                book.update("AAPL", price[0], time.monotonic_ns(), 0)
                return predicate()
            wait_until(step, 20, interval=0.02, what=what)

        rising_until(lambda: counters(tmp_path, "strategy").get("rejects", 0) >= 1,
                     "the first reject")
        first = counters(tmp_path, "strategy")
        assert first["positions"] == [0, 0], f"the reject did not restore the position: {first}"
        assert first["pending"] == 0 and first["acks"] == 0
        rising_until(lambda: counters(tmp_path, "strategy").get("rejects", 0) >= 2,
                     "a second order once the backoff is over")
        for child in reversed(children):
            child.stop()
    finally:
        if news is not None:
            news.close()
        news_srv.close()
        book.close()
        book.unlink()
    final = counters(tmp_path, "strategy")
    om = counters(tmp_path, "order_manager")
    assert final["positions"] == [0, 0] and final["acks"] == 0
    assert final["rejects"] == om["rejects"] == om["rejects_max_position"] >= 2
    assert final["backoffs"] == final["rejects"]
    log = (tmp_path / "logs" / "strategy.log").read_text()
    lines = re.findall(r"order \S+ BUY 10 AAPL rejected: (.*)", log)
    assert lines and all(line == "risk: max_position 5 exceeded for AAPL (would be 10) "
                                 "(position back to +0)" for line in lines), lines
    assert not (tmp_path / "orders.jsonl").read_text(), "nothing may be booked"
    assert not shm_exists(cfg.market.shm_name)


@pytest.mark.timeout(60)
def test_the_order_manager_closes_a_client_that_stops_reading_acks(tmp_path, children):
    """A client that sends orders and never reads a reply: once the kernel buffers and the
    OrderManager's write buffer (1 MiB) are full, the OrderManager closes it as a slow consumer
    instead of dropping acks for booked orders or growing without bound; a client that reads
    keeps being served, and the order is booked once however often it was resent."""
    cfg = make_config(tmp_path)
    port = start(children, "order_manager", cfg)["order_port"]
    deaf = socket.socket()
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # fill up soon
    deaf.settimeout(10)
    deaf.connect(("127.0.0.1", port))
    good = socket.create_connection(("127.0.0.1", port), timeout=10)
    om_log = tmp_path / "logs" / "order_manager.log"
    try:
        for sock, name in ((deaf, "deaf"), (good, "good")):
            sock.sendall(encode_hello(name))
        assert json.loads(recv_frames(good, 1)[0])["type"] == "welcome"
        # The same order again and again: one booking, every resend acked (a long id makes
        # each ack big, so fewer orders fill the buffers).
        order = encode_order(Order(id="d" * 128, symbol="AAPL", side="BUY", qty=1, price=10.0))
        batch = order * 1000
        sent = 0

        def closed() -> bool:
            return "slow consumer" in om_log.read_text()

        def send_more() -> bool:
            nonlocal sent
            try:
                deaf.sendall(batch)
                sent += 1000
            except OSError:   # reset by the close
                return True
            return closed()

        wait_until(send_more, 40, interval=0, what="the OrderManager to close the deaf client")
        wait_until(closed, 10, what="the slow-consumer line")
        good.sendall(encode_order(Order(id="g-1", symbol="MSFT", side="SELL", qty=2,
                                        price=20.0)))
        reply = json.loads(recv_frames(good, 1)[0])
        assert reply == {"type": "ack", "id": "g-1", "order_no": 2}, reply
    finally:
        deaf.close()
        good.close()
    assert children[0].stop() == 0
    text = om_log.read_text()
    assert re.search(r"order client \S+ gone \(slow consumer: \d+ bytes pending \+ \d+ > "
                     r"max_write_buffer 1048576\)", text), text[-2000:]
    c = counters(tmp_path, "order_manager")
    assert c["orders"] == 2 and c["duplicates"] >= 1000 and c["rejects"] == 0
    records = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    assert [(r["client"], r["id"], r["order_no"]) for r in records] == [
        ("deaf", "d" * 128, 1), ("good", "g-1", 2)]
