"""A core and two trading hosts in three network namespaces, as `python main.py --role ...` runs
them on three machines (README, "More than one host").

The core (Gateway + OrderManager) listens on its bridge address with a token; each trading host
(OrderBook + a strategy) dials it over its own veth link. One run checks, in order: orders from
both hosts are booked once each; a wrong token from a trading host is refused with its reason;
a trading host notices its link going down (a silent peer, not a closed connection) and trades
again when it comes back; a restarted core is re-dialled by both hosts and their unacknowledged
orders are resent, never booked twice.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mainutil import child_pids
from netnsutil import ROOT, Desk, clock_ahead, time_namespaces_unavailable, unavailable
from stackutil import shm_exists, wait_until

from processes.shared.dead_peer import DEAD_PEER_TIMEOUT

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

COMMON = ("--layout", "unpinned", "--set", "logging.stats_interval=0.2", "--news-rate", "50")


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path, common=COMMON)
    try:
        yield d
    finally:
        d.close()


def _hello_reply(ns: str, host: str, token: str) -> str:
    """What the core's OrderManager answers a hello with `token`, asked from inside `ns`."""
    code = ("import socket, sys\n"
            "from processes.shared.protocol import encode_hello\n"
            f"s = socket.create_connection(({host!r}, 5003), timeout=5)\n"
            f"s.sendall(encode_hello('intruder', {token!r}))\n"
            "data = b''\n"
            "while chunk := s.recv(4096):\n"
            "    data += chunk\n"
            "sys.stdout.write(data.decode())\n")
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=15)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(120)
def test_two_trading_hosts_trade_through_one_core_over_veth_links(desk: Desk) -> None:
    a, b = desk.lan.hosts
    core = desk.start_core()
    assert "the price feed is unauthenticated" in core.output   # listening beyond loopback
    for ns in (a, b):
        desk.start_trading(ns)
    wait_until(lambda: desk.booked_by(a) >= 3 and desk.booked_by(b) >= 3, 30,
               what="orders from both trading hosts booked")

    # A client with the wrong token is refused across the link, and the core says why.
    reply = _hello_reply(a, desk.lan.core_addr, "wrong-token")
    assert "refused" in reply and "bad token" in reply, reply
    om_log = desk.tmp / "core" / "logs" / "order_manager.log"
    wait_until(lambda: f"refused order client {desk.lan.addrs[a]}:" in om_log.read_text(), 5,
               what="the refusal in the OrderManager's log")

    # Host a's link goes down for longer than the dead-peer timeout: its OrderBook, which only
    # reads, notices the silent feed (keepalive) and drops it, while host b trades on. Then the
    # link comes back: host a redials and trades again, with the same processes.
    pids = child_pids(desk.trading[a].output)
    reconnects = desk.counter(a, "orderbook", "reconnects")
    desk.lan.link(a, up=False)
    try:
        wait_until(lambda: desk.snapshot(a, "orderbook").get("counters", {}).get("connected")
                   is False, DEAD_PEER_TIMEOUT + 10,
                   what="host a's OrderBook to notice the dead feed while its link is down")
        b_before = desk.booked_by(b)
        wait_until(lambda: desk.booked_by(b) > b_before, 10,
                   what="host b to keep trading while host a's link is down")
        a_down = desk.booked_by(a)
    finally:
        desk.lan.link(a, up=True)
    wait_until(lambda: desk.booked_by(a) > a_down + 2, 30,
               what="host a to trade again after its link came back")
    wait_until(lambda: desk.counter(a, "orderbook", "reconnects") > reconnects, 5,
               what="host a's redial in its OrderBook's stats")
    assert "died" not in desk.trading[a].output, desk.trading[a].output[-2000:]
    assert child_pids(desk.trading[a].output) == pids

    # The core stops and starts again (continuing its session): both hosts notice, redial
    # with backoff and trade on; what they resend is acked, not booked again.
    last_no = max(rec["order_no"] for rec in desk.booked())
    assert core.stop() == 0, core.output[-2000:]
    for ns in (a, b):
        desk.trading[ns].wait_for("order manager lost", 15)
    core = desk.start_core("--resume")
    for ns in (a, b):
        client = desk.client(ns)
        wait_until(lambda c=client: any(r["client"] == c and r["order_no"] > last_no
                                        for r in desk.booked()), 30,
                   what=f"{client}'s orders booked by the restarted core")
        wait_until(lambda n=ns: desk.counter(n, "strategy", "reconnects") >= 1
                   and desk.counter(n, "orderbook", "reconnects") >= 1, 10,
                   what=f"{client}'s feed and order connections redialled")

    for ns in (a, b):
        assert desk.trading[ns].stop() == 0, desk.trading[ns].output[-2000:]
        assert not shm_exists(desk.segments[ns])   # each host cleaned up its own segment
    assert core.stop() == 0, core.output[-2000:]

    records = desk.booked()
    assert len({r["session"] for r in records}) == 1   # the restart continued the session
    twice = [key for key, n in Counter((r["client"], r["id"]) for r in records).items() if n > 1]
    assert not twice, twice
    assert [r["order_no"] for r in records] == list(range(1, len(records) + 1))
    for ns in (a, b):
        final = desk.snapshot(ns, "strategy")["counters"]
        booked = desk.booked_by(ns)
        # Every ack is of a booked order; an order still pending when the host stopped may or
        # may not have been booked; nothing is booked that the strategy did not send.
        assert final["acks"] <= booked <= final["orders"], (final, booked)
        assert final["acks"] >= final["orders"] - final["pending"]
        assert final["rejects"] == 0


@pytest.mark.timeout(60)
def test_a_delayed_link_still_books_every_order(tmp_path: Path) -> None:
    """netem delays host a's packets by 5 ms; skipped where the kernel has no netem qdisc."""
    desk = Desk(tmp_path, hosts=1, common=COMMON)
    try:
        (a,) = desk.lan.hosts
        why = desk.lan.delay(a, 5)
        if why is not None:
            pytest.skip(why)
        desk.start_core()
        desk.start_trading(a)
        wait_until(lambda: desk.booked_by(a) >= 5, 30, what="orders over the delayed link")
        assert desk.trading[a].stop() == 0
        final = desk.snapshot(a, "strategy")["counters"]
        assert final["acks"] <= desk.booked_by(a) <= final["orders"]
    finally:
        desk.close()


@pytest.mark.timeout(60)
def test_a_trading_host_with_another_clock_is_told_and_trades_without_the_age_check(
        tmp_path: Path) -> None:
    """Real hosts' CLOCK_MONOTONIC count from their own boots; a time namespace puts the
    trading host's a day ahead. Its OrderBook says so, and with strategy.max_price_age = 0 (the
    README's advice for real hosts) its strategy trades; with the age check every price would
    look a day old."""
    why = time_namespaces_unavailable()
    if why is not None:
        pytest.skip(why)
    desk = Desk(tmp_path, hosts=1, common=COMMON)
    try:
        (a,) = desk.lan.hosts
        desk.start_core()
        run = desk.start_trading(a, "--set", "strategy.max_price_age=0",
                                 wrap=clock_ahead(86_400))
        run.wait_for("the Gateway's clock is +86400", 15)
        wait_until(lambda: desk.booked_by(a) >= 3, 30, what="orders from the day-ahead host")
        assert run.stop() == 0
    finally:
        desk.close()
