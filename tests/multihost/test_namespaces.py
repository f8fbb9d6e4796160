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

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mainutil import child_pids
from netnsutil import ROOT, Desk, clock_ahead, time_namespaces_unavailable, unavailable
from stackutil import shm_exists, wait_until

from processes.shared import config as config_mod
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


AHEAD = 86_400    # seconds: one host's CLOCK_MONOTONIC a day ahead of the other's


def _ages(segment: str, wrap: tuple[str, ...]) -> list[float]:
    """now - sent_ns of every slot of `segment`, read with the trading host's clock (behind
    `wrap`, as its processes run): the age its Strategy judges a price by."""
    code = ("import json, time\n"
            "from ext import SharedPriceBook\n"
            f"with SharedPriceBook(name={segment!r}, create=False) as book:\n"
            "    now = time.monotonic_ns()\n"
            "    print(json.dumps([(now - book.read_slot(i)[1]) / 1e9\n"
            "                      for i in range(book.nsymbols)]))\n")
    done = subprocess.run([*wrap, sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("ahead", ["trading", "core"])
def test_a_trading_host_on_another_clock_trades_with_the_age_check_on(
        tmp_path: Path, ahead: str) -> None:
    """Real hosts' CLOCK_MONOTONIC count from their own boots; a time namespace puts one
    host's a day ahead of the other's. The trading host's OrderBook says so and writes the send
    times on its own clock, so with strategy.max_price_age at its default its prices are
    judged fresh and it trades, and when the Gateway stops under it they go stale after
    max_price_age: the age check works across the clocks, whichever is ahead (a trading host
    behind is the case where, uncorrected, no price would ever look stale)."""
    why = time_namespaces_unavailable()
    if why is not None:
        pytest.skip(why)
    max_age = config_mod.Strategy().max_price_age
    assert max_age > 0
    trading_wrap = clock_ahead(AHEAD) if ahead == "trading" else ()
    desk = Desk(tmp_path, hosts=1, common=COMMON)
    gateway = 0
    try:
        (a,) = desk.lan.hosts
        core = desk.start_core(wrap=clock_ahead(AHEAD) if ahead == "core" else ())
        gateway = child_pids(core.output)["gateway"]
        run = desk.start_trading(a, wrap=trading_wrap)
        sign = "+" if ahead == "trading" else "-"
        run.wait_for(f"the Gateway's clock is {sign}{AHEAD}", 15)
        wait_until(lambda: desk.booked_by(a) >= 3, 30, what="orders from the other-clock host")
        ages = _ages(desk.segments[a], trading_wrap)
        assert all(0 <= age < max_age for age in ages), ages
        # Once the offset is applied, no order is refused as stale (the first window's ticks,
        # written before it, may be).
        skips = desk.counter(a, "strategy", "stale_skips")
        booked = desk.booked_by(a)
        wait_until(lambda: desk.booked_by(a) >= booked + 3, 30, what="more orders")
        assert desk.counter(a, "strategy", "stale_skips") == skips
        assert desk.counter(a, "orderbook", "clock_offset_s") == pytest.approx(
            AHEAD if ahead == "trading" else -AHEAD, abs=1)

        os.kill(gateway, signal.SIGSTOP)      # the feed stops; the connection stays up
        wait_until(lambda: min(_ages(desk.segments[a], trading_wrap)) > max_age,
                   max_age + 15, what="every price older than max_price_age")
        wait_until(lambda: desk.counter(a, "strategy", "stale_symbols") == len(ages), 10,
                   what="the trading host's Strategy to judge every price stale")
        os.kill(gateway, signal.SIGCONT)
        booked = desk.booked_by(a)
        wait_until(lambda: desk.booked_by(a) > booked, 30,
                   what="orders again once the Gateway sends again")
        assert run.stop() == 0, run.output[-2000:]
        assert core.stop() == 0, core.output[-2000:]
    finally:
        if gateway:
            with contextlib.suppress(ProcessLookupError):
                os.kill(gateway, signal.SIGCONT)   # a stopped process cannot be stopped
        desk.close()
