"""Each process for real: spawned as main.py spawns it, on loopback and shared memory."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time

import pytest
from stackutil import (
    CTX,
    Child,
    hold_port,
    make_config,
    parse_price,
    recv_frames,
    rss_bytes,
    shm_exists,
    start,
    wait_until,
)

from ext import SharedPriceBook
from processes.shared import telemetry
from processes.shared.protocol import Order as OrderMsg
from processes.shared.protocol import (
    encode_hello,
    encode_order,
    encode_welcome,
    parse_news,
)


@pytest.mark.timeout(30)
def test_gateway_serves_prices_and_news_to_many_clients(tmp_path, children):
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 2000, "gateway.news_rate": 50})
    info = start(children, "gateway", cfg)
    nsym = len(cfg.market.symbols)
    clients = [socket.create_connection(("127.0.0.1", info["price_port"]), timeout=5)
               for _ in range(3)]
    try:
        seen = []
        for sock in clients:
            frames = recv_frames(sock, 200)
            parsed = [parse_price(f) for f in frames]
            assert {sym.decode() for sym, *_ in parsed} == set(cfg.market.symbols)
            assert all(p > 0 and sent > 0 for _, p, _, sent in parsed)
            seen.append(parsed)
        # Every client gets the same stream: per-symbol sequences increase after the snapshot.
        for parsed in seen:
            last: dict[bytes, int] = {}
            for sym, _, seq, _ in parsed[nsym:]:
                assert seq > last.get(sym, 0)
                last[sym] = seq
        with socket.create_connection(("127.0.0.1", info["news_port"]), timeout=5) as news:
            frames = recv_frames(news, nsym + 5)
            for sym, value in map(parse_news, frames):
                assert sym.decode() in cfg.market.symbols and 0 <= value <= 100
    finally:
        for sock in clients:
            sock.close()


@pytest.mark.timeout(30)
def test_plain_gateway_sends_two_field_frames(tmp_path, children):
    cfg = make_config(tmp_path, **{"gateway.plain": True, "gateway.tick_rate": 500})
    info = start(children, "gateway", cfg)
    with socket.create_connection(("127.0.0.1", info["price_port"]), timeout=5) as sock:
        frames = recv_frames(sock, 20)
    assert all(f.count(b",") == 1 for f in frames)


@pytest.mark.timeout(60)
def test_a_client_that_never_reads_cannot_grow_gateway_memory(tmp_path, children):
    """Both feeds as fast as possible; one subscriber stalls, another keeps reading."""
    bound = 256 * 1024
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 0, "gateway.news_rate": 0,
                                   "gateway.max_client_buffer": bound})
    info = start(children, "gateway", cfg)
    pid = children[0].proc.pid
    stalled = socket.create_connection(("127.0.0.1", info["price_port"]), timeout=5)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    live = socket.create_connection(("127.0.0.1", info["price_port"]), timeout=5)
    try:
        recv_frames(live, 1000)
        rss_start = rss_bytes(pid)   # from here on, the stalled client's queue fills to its cap
        received = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:   # the live client keeps getting data throughout
            received += len(live.recv(1 << 20))
        growth = rss_bytes(pid) - rss_start
        assert received > 100_000, "the stalled client must not stall the others"
        # Pending output is capped at `bound` per client; allow for allocator noise.
        assert growth < 8 * bound, f"gateway RSS grew {growth} bytes in 3 s"
    finally:
        stalled.close()
        live.close()
    log_text = (tmp_path / "logs" / "gateway.log").read_text()
    assert "price client" in log_text


def process_state(pid: int) -> str:
    """The kernel's scheduling state of a process: R running, S sleeping (blocked), ..."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(") ", 1)[1].split()[0]


@pytest.mark.timeout(60)
def test_idle_strategy_sleeps_instead_of_spinning(tmp_path, children):
    """No ticks, no news: the default (block) Strategy waits in the kernel on its doorbell.

    Judged by the process state, not by CPU seconds over a window (that cost is measured in
    bench/bench_e2e.py test_idle_cpu): a spinning loop is always running (R), a blocked one is
    asleep (S) but for the moments its timers run."""
    cfg = make_config(tmp_path, **{"logging.stats_interval": 0.05})
    venue_news = socket.create_server(("127.0.0.1", 0))
    venue_orders = socket.create_server(("127.0.0.1", 0))
    cfg.network.news_port = venue_news.getsockname()[1]
    cfg.network.order_port = venue_orders.getsockname()[1]
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    try:
        start(children, "strategy", cfg)
        pid = children[0].proc.pid
        # Start-up is over once the Strategy has published its first stats.
        wait_until(lambda: strategy_counters(tmp_path), 10, what="the first stats snapshot")
        states = []
        for _ in range(100):
            states.append(process_state(pid))
            time.sleep(0.002)   # spaces the samples; nothing waits on it
        assert states.count("S") > len(states) // 2, f"idle strategy not blocked: {states}"
        # ...and it is really waiting, not deaf: ticks written now reach it through the doorbell.
        for k in range(3):
            book.update("AAPL", 101.0 + k, time.monotonic_ns(), k + 1)
            wait_until(lambda k=k: strategy_counters(tmp_path).get("ticks", 0) > k, 10,
                       what=f"tick {k + 1} received")
        assert children[0].stop() == 0
    finally:
        children[0].stop()
        venue_news.close()
        venue_orders.close()
        book.close()
        book.unlink()


@pytest.mark.timeout(60)
def test_orderbook_stopped_right_after_ready_still_unlinks(tmp_path):
    """SIGTERM the instant 'ready' is reported: the signal must already mean a clean stop."""
    for _ in range(8):
        cfg = make_config(tmp_path)
        child = Child("orderbook", cfg)
        child.start()
        assert child.stop() == 0
        assert not shm_exists(cfg.market.shm_name)


def _book_prices(book: SharedPriceBook) -> dict[str, tuple]:
    return {s: book.read_slot(i) for i, s in enumerate(book.symbols)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("plain", [False, True], ids=["extended", "plain"])
def test_shared_memory_updates_propagate_across_processes(tmp_path, children, plain):
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 1000, "gateway.plain": plain})
    start(children, "gateway", cfg)
    cfg.network.price_port = children[0].info["price_port"]
    ob = start(children, "orderbook", cfg)
    assert ob["shm_name"] == cfg.market.shm_name
    with SharedPriceBook(name=cfg.market.shm_name, create=False) as book:
        assert list(book.symbols) == cfg.market.symbols
        wait_until(lambda: all(book.read(s) > 0 for s in book.symbols), 10, what="first prices")
        first = _book_prices(book)
        wait_until(lambda: all(_book_prices(book)[s][0] != first[s][0] or
                               _book_prices(book)[s][3] != first[s][3] for s in book.symbols),
                   10, what="prices to move")
        price, sent_ns, tick_seq, write_ns = book.read_slot(0)
        if plain:
            assert sent_ns == 0 and tick_seq == 0
        else:
            assert tick_seq > 0 and 0 < sent_ns <= write_ns <= time.monotonic_ns()
    children[1].stop()
    assert not shm_exists(cfg.market.shm_name), "OrderBook must unlink its segment on exit"


@pytest.mark.timeout(60)
def test_orderbook_reconnects_when_the_gateway_restarts(tmp_path, children):
    held = [hold_port(), hold_port()]   # the restart binds them again: nobody may take them
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 500,
                                   "network.price_port": held[0].getsockname()[1],
                                   "network.news_port": held[1].getsockname()[1]})
    start(children, "gateway", cfg)
    start(children, "orderbook", cfg)
    with SharedPriceBook(name=cfg.market.shm_name, create=False) as book, held[0], held[1]:
        wait_until(lambda: book.read_slot(0)[2] > 0, 10, what="ticks")
        children[0].kill()                      # the Gateway dies mid-stream
        ob_log = tmp_path / "logs" / "orderbook.log"
        wait_until(lambda: "price feed lost" in ob_log.read_text(), 10, what="the loss noticed")
        stalled = book.read_slot(0)[2]          # no feed now, so no writer of new ticks
        restarted = Child("gateway", cfg)       # same ports: the OrderBook dials the same address
        children.append(restarted)
        restarted.start()
        # A restarted Gateway starts its sequences from 1 again: any new write proves the
        # reconnect (how fast it comes is bench/'s business, not a threshold here).
        wait_until(lambda: book.read_slot(0)[2] != stalled, 10, what="reconnect")


def socket_memory(port: int, side: str) -> list[dict[str, int]]:
    """`ss -tm` of the established loopback connections whose `side` ("sport" or "dport") is
    `port`: each one's skmem fields (rb = receive buffer, tb = send buffer, in bytes)."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( {side} = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [{m[0]: int(m[1]) for m in re.findall(r"([a-z]+)(\d+)", mem)}
            for mem in re.findall(r"skmem:\(([^)]*)\)", out)]


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read another "
                    "process's socket buffers")
def test_socket_buffer_caps_the_feeds_kernel_buffers(tmp_path, children):
    """gateway.socket_buffer is the Gateway's SO_SNDBUF for every price and news client and
    the OrderBook's SO_RCVBUF (Linux doubles what is set, for its bookkeeping, and stops
    autotuning it), so a fast feed cannot queue megabytes in the kernel."""
    size = 40960
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 2000, "gateway.socket_buffer": size})
    gw = start(children, "gateway", cfg)
    cfg.network.price_port, cfg.network.news_port = gw["price_port"], gw["news_port"]
    start(children, "orderbook", cfg)
    with socket.create_connection(("127.0.0.1", gw["news_port"]), timeout=5) as news:
        recv_frames(news, 1)                                  # connected and served
        wait_until(lambda: len(socket_memory(gw["price_port"], "sport")) == 1, 10,
                   what="the OrderBook's price connection")
        gateway_price, = socket_memory(gw["price_port"], "sport")
        orderbook_price, = socket_memory(gw["price_port"], "dport")
        gateway_news, = socket_memory(gw["news_port"], "sport")
    assert gateway_price["tb"] == gateway_news["tb"] == 2 * size, (gateway_price, gateway_news)
    assert orderbook_price["rb"] == 2 * size, orderbook_price


def _order(i: int, symbol: str = "AAPL", **kw) -> bytes:
    return encode_order(OrderMsg(id=f"cli-{i}", symbol=symbol, side="BUY" if i % 2 else "SELL",
                                 qty=10, price=100.0 + i, **kw))


def _client_proc(port: int, name: str, count: int, result_q) -> None:
    """A Strategy stand-in: sends `count` orders plus bad ones, reads every reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_hello(name))   # the handshake; orders may follow at once
        frames = [encode_order(OrderMsg(id=f"{name}-{i}", symbol="AAPL", side="BUY",
                                        qty=1 + i % 5, price=100.5, client=name))
                  for i in range(count)]
        first, second = b"".join(frames[: count // 2]), b"".join(frames[count // 2:])
        bad = b'{"id":"bad-1","symbol":"NOPE","side":"BUY","qty":1,"price":1}*not json*'
        cut = len(second) // 2 + 7  # split the stream inside a frame on purpose
        for chunk in (first, bad, second[:cut], second[cut:]):
            sock.sendall(chunk)
        frames = recv_frames(sock, count + 3, timeout=20)   # welcome + one reply per frame
    replies = [json.loads(f) for f in frames]
    result_q.put((name, replies))


@pytest.mark.timeout(60)
def test_order_manager_books_exactly_the_orders_of_two_concurrent_clients(tmp_path, children):
    cfg = make_config(tmp_path)
    info = start(children, "order_manager", cfg)
    per_client = 500
    q = CTX.Queue()
    procs = [CTX.Process(target=_client_proc, args=(info["order_port"], n, per_client, q))
             for n in ("alpha", "beta")]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=40) for _ in procs)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    for name, replies in results.items():
        acks = [r for r in replies if r["type"] == "ack"]
        rejects = [r for r in replies if r["type"] == "reject"]
        assert len(acks) == per_client
        assert {r["id"] for r in acks} == {f"{name}-{i}" for i in range(per_client)}
        # Bad input is answered with a reason and the connection stays up for what follows.
        assert [(r["id"], r["reason"].split(" ")[0]) for r in rejects] == [
            ("bad-1", "unknown"), (None, "malformed")]
    children[0].stop()                           # flushes and closes the order log
    lines = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * per_client
    assert sorted(r["order_no"] for r in lines) == list(range(1, 2 * per_client + 1))
    assert len({r["id"] for r in lines}) == 2 * per_client
    log_text = (tmp_path / "logs" / "order_manager.log").read_text()
    assert "Received Order 1: " in log_text


class FakeVenue:
    """News server and order server in the test process, so the Strategy can be driven exactly."""

    def __init__(self) -> None:
        self.news_srv = socket.create_server(("127.0.0.1", 0))
        self.order_srv = socket.create_server(("127.0.0.1", 0))
        self.news: socket.socket | None = None
        self.orders: socket.socket | None = None
        self.order_no = 0
        self._buf = b""  # partial order frame carried between next_order() calls

    def accept(self, timeout: float = 10.0) -> None:
        self.news_srv.settimeout(timeout)
        self.order_srv.settimeout(timeout)
        self.news, _ = self.news_srv.accept()
        self.orders, _ = self.order_srv.accept()
        hello = self._next_frame(timeout)
        assert hello and hello["type"] == "hello", hello
        self.orders.sendall(encode_welcome(hello["client"]))

    def say(self, symbol: str, sentiment: int) -> None:
        self.news.sendall(b"%s,%d*" % (symbol.encode(), sentiment))

    def next_order(self, timeout: float) -> dict | None:
        """The next order frame (acked), or None if none completed within `timeout`."""
        order = self._next_frame(timeout)
        if order is None:
            return None
        self.order_no += 1
        self.orders.sendall(b'{"type":"ack","id":"%s","order_no":%d}*'
                            % (order["id"].encode(), self.order_no))
        return order

    def _next_frame(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while b"*" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.orders.settimeout(left)
            try:
                chunk = self.orders.recv(65536)
            except TimeoutError:
                return None
            assert chunk, "strategy closed the order connection"
            self._buf += chunk
        frame, _, self._buf = self._buf.partition(b"*")
        return json.loads(frame)

    def close(self) -> None:
        for s in (self.news, self.orders, self.news_srv, self.order_srv):
            if s is not None:
                s.close()


def strategy_rig(tmp_path, **overrides):
    """A Strategy's surroundings without the other processes: a config whose news and order
    ports are a FakeVenue's, and the price book the test writes (AAPL, MSFT; windows 2/4)."""
    cfg = make_config(tmp_path, **{"market.symbols": "AAPL,MSFT", "strategy.params.short_window": 2,
                                   "strategy.params.long_window": 4,
                                   "logging.stats_interval": 0.05, **overrides})
    venue = FakeVenue()
    cfg.network.news_port = venue.news_srv.getsockname()[1]
    cfg.network.order_port = venue.order_srv.getsockname()[1]
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    return cfg, venue, book


def strategy_counters(tmp_path) -> dict:
    """The Strategy's counters from its latest stats snapshot ({} before the first)."""
    snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / "strategy.json")
    return snap["counters"] if snap else {}


def order_while_counting(tmp_path, venue, step, counter: str, more: int, news: int = 0,
                         timeout: float = 20.0) -> dict | None:
    """Run `step` (which feeds the Strategy) until the Strategy's `counter` has grown by `more`
    and it has read `news` news in all, by its stats snapshot; the order it sent meanwhile, or
    None. The claim "no order" is then about decisions the Strategy took, not about a time a
    slow Strategy could sit out."""
    base = strategy_counters(tmp_path).get(counter, 0)
    deadline = time.monotonic() + timeout
    while True:
        step()
        if order := venue.next_order(0.0005):
            return order
        got = strategy_counters(tmp_path)
        if got.get(counter, 0) >= base + more and got.get("news", 0) >= news:
            # The snapshot is written after the decisions it counts, and an order is written to
            # the socket inside its decision: anything sent is readable now.
            return venue.next_order(0.01)
        assert time.monotonic() < deadline, f"{counter} never grew by {more}: {got}"


@pytest.mark.timeout(60)
def test_strategy_signals_agreement_and_no_duplicates(tmp_path, children):
    """Drive the real Strategy process through shared memory and TCP news; read its orders."""
    cfg, venue, book = strategy_rig(tmp_path, **{"strategy.params.quantity": 10})
    price = [100.0]

    def tick(step: float, n: int, gap: float = 0.003) -> None:
        for _ in range(n):
            price[0] += step
            book.update("AAPL", price[0], time.monotonic_ns(), 0)
            time.sleep(gap)

    def order_after(step: float, timeout: float = 5.0) -> dict | None:
        """Keep the trend going until an order arrives or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tick(step, 5)
            order = venue.next_order(0.0005)
            if order:
                return order
        return None

    try:
        start(children, "strategy", cfg)
        venue.accept()
        def quiet(step: float, news: int) -> dict | None:
            """The order of 50 more decisions on a trend, once `news` news are read."""
            return order_while_counting(tmp_path, venue, lambda: tick(step, 5), "decisions",
                                        50, news=news)

        # Rising prices but no news: the rules do not agree -> nothing.
        assert quiet(+0.05, news=0) is None
        venue.say("AAPL", 61)                   # strictly above bullish (60)
        buy = order_after(+0.05)
        assert buy and (buy["side"], buy["qty"], buy["symbol"]) == ("BUY", 10, "AAPL")
        assert buy["price"] == pytest.approx(price[0], abs=0.3)
        assert quiet(+0.05, news=1) is None, "already long: no duplicate BUY"
        venue.say("AAPL", 40)                   # not strictly below bearish (40): neutral
        assert quiet(-0.05, news=2) is None
        venue.say("AAPL", 20)
        sell = order_after(-0.05)
        assert sell and (sell["side"], sell["qty"]) == ("SELL", 20), "long -> short is 2x qty"
        assert quiet(-0.05, news=3) is None, "already short: no duplicate SELL"
        venue.say("AAPL", 90)                   # bullish news while falling: disagree
        assert quiet(-0.05, news=4) is None
        assert len({buy["id"], sell["id"]}) == 2 and buy["client"] == cfg.strategy.name
    finally:
        venue.close()
        for child in children:
            child.stop()
        book.close()
        book.unlink()
    assert not shm_exists(cfg.market.shm_name)


@pytest.mark.timeout(60)
def test_strategy_process_trades_only_strictly_past_each_threshold(tmp_path, children):
    """Exact boundary values through the real Strategy process (windows 2/4, bullish 60,
    bearish 40): sentiment AT a threshold with the trend agreeing, and bullish news while the
    short MA EQUALS the long one, must each send nothing. No "nothing within N s" window: after
    the boundary inputs the test waits until the Strategy's own counters show it has seen every
    one of them, then feeds the one input that must trade; the first order to arrive must be
    that input's (an order made at a boundary would arrive before it, on the same connection)."""
    cfg, venue, book = strategy_rig(tmp_path, **{"strategy.params.quantity": 10,
                                                 "logging.stats_interval": 0.05})
    stats_file = tmp_path / "logs" / "stats" / "strategy.json"

    def counters() -> dict:
        snap = telemetry.read_snapshot(stats_file)
        return snap["counters"] if snap else {}

    seen = [0]

    def tick(symbol: str, price: float) -> None:
        """Write one price and wait until the Strategy has decided on it."""
        book.update(symbol, price, time.monotonic_ns(), 0)
        seen[0] += 1
        wait_until(lambda: counters().get("ticks", 0) >= seen[0], 10,
                   what=f"the Strategy to see {symbol} {price}")

    def say(symbol: str, sentiment: int) -> None:
        venue.say(symbol, sentiment)
        j = cfg.market.symbols.index(symbol)
        wait_until(lambda: (counters().get("sentiment") or [None] * 2)[j] == sentiment, 10,
                   what=f"the Strategy to hear {symbol} {sentiment}")

    def first_order() -> tuple:
        order = venue.next_order(10)
        assert order is not None, "no order for the input that must trade"
        return order["side"], order["qty"], order["symbol"], order["price"]

    try:
        start(children, "strategy", cfg)
        venue.accept()
        wait_until(lambda: "ticks" in counters(), 10, what="the Strategy's first snapshot")
        # Sentiment exactly at bullish, averages rising: neutral (>= would buy at 100.20).
        say("AAPL", 60)
        for k in range(1, 7):
            tick("AAPL", 100.0 + 0.05 * k)
        say("AAPL", 61)
        tick("AAPL", 100.35)
        assert first_order() == ("BUY", 10, "AAPL", 100.35)
        # Bullish news, flat prices: short MA == long MA, neutral (>= would buy at 50.00).
        say("MSFT", 90)
        for _ in range(6):
            tick("MSFT", 50.0)
        tick("MSFT", 50.01)
        assert first_order() == ("BUY", 10, "MSFT", 50.01)
        # Sentiment exactly at bearish, averages falling: neutral (<= would sell).
        say("MSFT", 40)
        for k in range(1, 7):
            tick("MSFT", 50.0 - 0.05 * k)
        say("MSFT", 39)
        tick("MSFT", 49.65)
        assert first_order() == ("SELL", 20, "MSFT", 49.65)
        assert counters()["orders"] == 3
    finally:
        venue.close()
        for child in children:
            child.stop()
        book.close()
        book.unlink()
    assert not shm_exists(cfg.market.shm_name)


@pytest.mark.timeout(60)
def test_strategy_never_orders_on_a_stale_price_and_resumes_on_fresh_ones(tmp_path, children):
    cfg, venue, book = strategy_rig(tmp_path, **{"strategy.max_price_age": 1.0})
    price = [100.0]

    def order_after(age_s: float, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _ in range(5):
                price[0] += 0.05
                book.update("AAPL", price[0], time.monotonic_ns() - int(age_s * 1e9), 0)
                book.heartbeat()
                time.sleep(0.003)
            if order := venue.next_order(0.0005):
                return order
        return None

    try:
        start(children, "strategy", cfg)
        venue.accept()
        venue.say("AAPL", 90)
        def old_ticks() -> None:
            for _ in range(5):
                price[0] += 0.05
                book.update("AAPL", price[0], time.monotonic_ns() - int(5e9), 0)
                book.heartbeat()
                time.sleep(0.003)

        # Every one of these is a decision the Strategy refused as stale, not a time it sat out.
        assert order_while_counting(tmp_path, venue, old_ticks, "stale_skips", 20,
                                    news=1) is None, "ordered on 5 s old prices"
        buy = order_after(0.0, timeout=5.0)
        assert buy and buy["side"] == "BUY"
        assert children[0].stop() == 0
    finally:
        venue.close()
        children[0].stop()
        book.close()
        book.unlink()
    final = [x for x in (tmp_path / "logs" / "strategy.log").read_text().splitlines()
             if "stopping:" in x]
    assert final and re.search(r" stale_skips=[1-9]", final[-1]), final


@pytest.mark.timeout(60)
def test_strategy_reattaches_to_a_replaced_segment_and_keeps_its_positions(tmp_path, children):
    """The OrderBook restarts: its segment is replaced under the same name. The Strategy lets the
    old one go, attaches to the new one and still knows it is long (no second BUY)."""
    cfg, venue, book = strategy_rig(tmp_path)
    name = cfg.market.shm_name
    price = [100.0]

    def order_after(timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _ in range(5):
                price[0] += 0.05
                book.update("AAPL", price[0], time.monotonic_ns(), 0)
                time.sleep(0.003)
            if order := venue.next_order(0.0005):
                return order
        return None

    try:
        start(children, "strategy", cfg)
        venue.accept()
        venue.say("AAPL", 90)
        assert (order_after(5.0) or {}).get("side") == "BUY"
        book.close()
        book.unlink()                                   # the old OrderBook is gone...
        book = SharedPriceBook(cfg.market.symbols, name=name, create=True)   # ...a new one
        log_path = tmp_path / "logs" / "strategy.log"
        wait_until(lambda: "re-attached to" in log_path.read_text(), 10, what="re-attach")

        def rising() -> None:
            for _ in range(5):
                price[0] += 0.05
                book.update("AAPL", price[0], time.monotonic_ns(), 0)
                time.sleep(0.003)

        assert order_while_counting(tmp_path, venue, rising, "decisions", 50) is None, \
            "a second BUY: the position was lost"
        # Prices flow through the new book, from near the last one (a jump past
        # strategy.max_price_jump would be refused as implausible).
        price[0] = round(price[0], 2)
        book.update("AAPL", price[0], time.monotonic_ns(), 0)
        venue.say("AAPL", 10)

        def falling() -> dict | None:
            for _ in range(300):
                price[0] -= 0.01
                book.update("AAPL", price[0], time.monotonic_ns(), 0)
                time.sleep(0.003)
                if order := venue.next_order(0.0005):
                    return order
            return None

        sell = falling()
        assert sell and (sell["side"], sell["qty"]) == ("SELL", 20), "long -> short is 2 x qty"
    finally:
        venue.close()
        for child in children:
            child.stop()
        book.close()
        book.unlink()
    assert "positions kept" in (tmp_path / "logs" / "strategy.log").read_text()
