"""Hostile input on every port of live processes: garbage, oversized frames and bad values are
counted and skipped (or the offending connection closed), the process stays up, keeps serving a
well-behaved peer, and its counters add up.

Ports: the Gateway's price and news ports (clients must send nothing), the OrderBook's feed (from
a fake Gateway), the Strategy's news feed and order replies (from a fake venue), and the
OrderManager's order port. The two fuzz runs send 100,000 seeded random frames (valid, mutated
valid, random bytes) and predict every outcome: the OrderManager's by an independent judge
of the documented order rules (tests/orderspec.py), the OrderBook's by the reference parsers.
"""

from __future__ import annotations

import bisect
import json
import random
import socket
import time
from pathlib import Path

import orderspec
import pytest
from stackutil import make_config, recv_frames, start, wait_until

from ext import SharedPriceBook, wire_py
from processes.shared import protocol, telemetry
from processes.shared.protocol import encode_hello, encode_welcome

FUZZ_FRAMES = 100_000


def final_counters(tmp_path: Path, process: str) -> dict:
    snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / f"{process}.json")
    assert snap and snap["final"], f"no final snapshot of {process}"
    return snap["counters"]


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Read (and discard) until the peer closes; False if it is still open after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


class FakeServer:
    """A listening socket in the test process, standing in for a peer of the process under test."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 10.0) -> socket.socket:
        self.srv.settimeout(timeout)
        self.conn, _ = self.srv.accept()
        return self.conn

    def close(self) -> None:
        for s in (self.conn, self.srv):
            if s is not None:
                s.close()


# --- the Gateway: clients must send nothing -------------------------------------------------------

@pytest.mark.timeout(30)
def test_gateway_closes_a_client_that_sends_anything(tmp_path, children):
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 500, "gateway.news_rate": 50})
    info = start(children, "gateway", cfg)
    ports = {"price": info["price_port"], "news": info["news_port"]}
    good = {feed: socket.create_connection(("127.0.0.1", p), timeout=5)
            for feed, p in ports.items()}
    payloads = [b"AAPL,1.0*", b"x" * 10_000, random.Random(1).randbytes(300), b"\n"]
    try:
        for feed, port in ports.items():
            for payload in payloads:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
                    bad.sendall(payload)
                    assert closed_by_peer(bad), f"{feed} client sending {payload[:10]!r} kept"
        for sock in good.values():   # the well-behaved ones never noticed
            recv_frames(sock, 50)
    finally:
        for sock in good.values():
            sock.close()
    children[0].stop()
    log_text = (tmp_path / "logs" / "gateway.log").read_text()
    assert "closing price client" in log_text and "closing news client" in log_text
    assert "must send nothing" in log_text
    assert final_counters(tmp_path, "gateway")["bad_clients"] == 2 * len(payloads)


# --- the OrderBook's feed, from a fake Gateway ----------------------------------------------------

BAD_PRICE_FRAMES = [b"AAPL,abc,2,1", b"AAPL,nan,2,1", b"AAPL,inf,2,1", b"AAPL,-5,2,1",
                    b"AAPL,0,2,1", b"AAPL,0.00,2,1", b"AAPL,1e3,2,1", b"AAPL,2000000000,2,1",
                    b"AAPL", b",1.5", b"AAPL,1.5,-1,5", b"AAPL,1.5,x,5",
                    b"AAPL,1.5,1,99999999999999999999999", b"AAPL, 1.5"]


def classify(frame: bytes, symbols: set[bytes]) -> str:
    """What the OrderBook must do with one frame: the reference decoder's verdict."""
    if not frame:
        return "empty"
    parsed = wire_py.parse_price_frame(frame)
    if isinstance(parsed, str):
        return "malformed"
    return "ticks" if parsed[0] in symbols else "unknown"


@pytest.mark.timeout(30)
def test_orderbook_skips_bad_price_frames_and_survives_an_oversized_one(tmp_path, children):
    fake = FakeServer()
    cfg = make_config(tmp_path, **{"network.price_port": fake.port})
    symbols = {s.encode() for s in cfg.market.symbols}
    try:
        start(children, "orderbook", cfg)
        conn = fake.accept()
        now = time.monotonic_ns()
        frames = [b"AAPL,101.50,1,%d" % now, *BAD_PRICE_FRAMES, b"ZZZZ,1.0,1,1", b"",
                  b"MSFT,202.25,1,%d" % now, b"aapl,1.0", b"\xff\xfe,1.5"]
        assert [classify(f, symbols) for f in BAD_PRICE_FRAMES] == ["malformed"] * len(
            BAD_PRICE_FRAMES), "the reference parser must reject every bad frame"
        conn.sendall(b"".join(f + b"*" for f in frames))
        with SharedPriceBook(name=cfg.market.shm_name, create=False) as book:
            wait_until(lambda: book.read("MSFT") == 202.25, 5, what="the valid ticks")
            assert book.read("AAPL") == 101.5          # no bad value ever reached a slot
            conn.sendall(b"A" * 300 + b"*")             # over the 256-byte price frame limit
            assert closed_by_peer(conn), "an oversized frame must close the feed"
            conn = fake.accept()                        # ...and the OrderBook redials
            conn.sendall(b"AAPL,103.00,2,%d*" % time.monotonic_ns())
            wait_until(lambda: book.read("AAPL") == 103.0, 5, what="ticks after the redial")
        children[0].stop()
    finally:
        fake.close()
    got = final_counters(tmp_path, "orderbook")
    want = {"ticks": 0, "malformed": 0, "unknown": 0, "empty": 0}
    for f in frames:
        want[classify(f, symbols)] += 1
    want["ticks"] += 1
    assert {k: got[k] for k in want} == want
    assert got["reconnects"] == 1
    log_text = (tmp_path / "logs" / "orderbook.log").read_text()
    assert "skipped price frame" in log_text and "price feed lost" in log_text


@pytest.mark.timeout(30)
def test_orderbook_logs_a_burst_of_gaps_once(tmp_path, children):
    """Gaps are counted per missing sequence number and logged once per burst (a timer), with
    the symbols that lost ticks; a second burst right after is not another line."""
    fake = FakeServer()
    cfg = make_config(tmp_path, **{"network.price_port": fake.port})
    try:
        start(children, "orderbook", cfg)
        conn = fake.accept()
        ticks = [("AAPL", 1), ("AAPL", 2), ("AAPL", 5), ("MSFT", 10), ("MSFT", 20)]
        conn.sendall(b"".join(b"%s,100.0,%d,1*" % (s.encode(), q) for s, q in ticks))
        log_path = tmp_path / "logs" / "orderbook.log"
        wait_until(lambda: "sequence gaps" in log_path.read_text(), 5, what="the gap line")
        conn.sendall(b"".join(b"GOOG,50.0,%d,1*" % q for q in (1, 3, 5, 7)))   # more gaps
        time.sleep(2.5)                                  # > two gap checks
        children[0].stop()
    finally:
        fake.close()
    lines = [x for x in log_path.read_text().splitlines() if "sequence gaps" in x]
    assert len(lines) == 1, lines
    assert "2 ticks" not in lines[0] and "AAPL 2" in lines[0] and "MSFT 9" in lines[0]
    assert final_counters(tmp_path, "orderbook")["gaps"] == 2 + 9 + 3


# --- the Strategy's news feed and order replies, from a fake venue --------------------------------

@pytest.mark.timeout(30)
def test_strategy_skips_bad_news_and_bad_replies_and_survives_oversized_frames(tmp_path,
                                                                            children):
    news, orders = FakeServer(), FakeServer()
    cfg = make_config(tmp_path, **{"network.news_port": news.port,
                                   "network.order_port": orders.port,
                                   "logging.stats_interval": 0.05})
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    bad_news = [b"abc", b"AAPL,101", b"AAPL,-1", b",50", b"AAPL,5x", b"\xff\xfe", b"AAPL,"]
    bad_replies = [b"not json", b"[1,2]", b'{"type":"ack","id":5}',
                   b'{"type":"ack","id":"nope","order_no":1}', b'{"type":"reject"}',
                   b'{"type":"ack","id":"x"' + b"}" * 3]

    def handshake() -> socket.socket:
        conn = orders.accept()
        hello = json.loads(recv_frames(conn, 1)[0])
        assert hello["type"] == "hello"
        conn.sendall(encode_welcome(hello["client"]))
        return conn

    try:
        start(children, "strategy", cfg)
        news_conn, order_conn = news.accept(), handshake()
        # News for a symbol we do not trade is not good news: counted apart, logged once.
        news_conn.sendall(b"".join(f + b"*" for f in bad_news) + b"AAPL,70*55*NEWS,57*NEWS,58*")
        order_conn.sendall(b"".join(f + b"*" for f in bad_replies))
        news_conn.sendall(b"9" * 5000 + b"*")           # over the 4096-byte frame limit
        assert closed_by_peer(news_conn)
        news_conn = news.accept()                       # the Strategy redials
        order_conn.sendall(b"x" * 5000)
        assert closed_by_peer(order_conn)
        order_conn = handshake()                        # ...and says hello again
        news_conn.sendall(b"MSFT,20*")
        snap_path = tmp_path / "logs" / "stats" / "strategy.json"
        wait_until(lambda: (telemetry.read_snapshot(snap_path) or {}).get(
            "counters", {}).get("news") == 3, 10, what="the news after the redial read")
        assert children[0].proc.is_alive()
        assert children[0].stop() == 0
    finally:
        news.close()
        orders.close()
        book.close()
        book.unlink()
    got = final_counters(tmp_path, "strategy")
    assert got["bad_news"] == len(bad_news) and got["news"] == 3
    assert got["unknown_news"] == 2
    strategy_log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert strategy_log.count("news for b'NEWS', a symbol we do not trade") == 1
    assert got["bad_replies"] == len(bad_replies)
    assert got["acks"] == 0 and got["rejects"] == 0
    assert got["reconnects"] == 2


@pytest.mark.timeout(30)
def test_ticks_sent_before_the_strategy_attached_are_no_latency_samples(tmp_path, children):
    """A CSV replayed at speed before the Strategy attached (or ticks queued in a socket) reach
    it with old stamps: decided on, but not tick -> decision samples."""
    news, orders = FakeServer(), FakeServer()
    cfg = make_config(tmp_path, **{"network.news_port": news.port,
                                   "network.order_port": orders.port,
                                   "logging.stats_interval": 0.05})
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    snapshot = tmp_path / "logs" / "stats" / "strategy.json"

    def counters() -> dict:
        snap = telemetry.read_snapshot(snapshot)
        return snap["counters"] if snap else {}

    try:
        before_ns = time.monotonic_ns()
        start(children, "strategy", cfg)
        wait_until(lambda: counters().get("attached"), 10, what="the Strategy to attach")
        sym = cfg.market.symbols[0]
        book.update(sym, 100.0, before_ns, 1)           # sent before the reader was live
        book.publish()
        wait_until(lambda: counters().get("decisions", 0) >= 1, 10, what="the old tick")
        book.update(sym, 100.5, time.monotonic_ns(), 2)
        book.publish()
        wait_until(lambda: counters().get("decisions", 0) >= 2, 10, what="the fresh tick")
        assert children[0].stop() == 0
    finally:
        news.close()
        orders.close()
        book.close()
        book.unlink()
    snap = telemetry.read_snapshot(snapshot)
    assert snap["final"] and snap["counters"]["decisions"] == 2
    assert snap["counters"]["early_ticks"] == 1
    assert snap["latency"]["tick_to_decision"]["count"] == 1


# --- the OrderManager ----------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_order_manager_survives_extreme_but_valid_timestamps(tmp_path, children):
    """tick_ns/sent_ns may be anything up to 2**64-1 (found by the fuzz below: such an order
    used to crash the OrderManager in its latency recorder)."""
    port = start(children, "order_manager", make_config(tmp_path))["order_port"]
    top = protocol.MAX_U64
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_hello("c1"))
        sock.sendall(b"".join(protocol.encode_order(protocol.Order(
            id=f"x-{i}", symbol="AAPL", side="BUY", qty=1, price=100.0, client="c1",
            tick_ns=tick, tick_seq=i, sent_ns=sent))
            for i, (tick, sent) in enumerate([(top, top), (top, 1), (1, top), (0, 0)])))
        replies = [json.loads(f) for f in recv_frames(sock, 5)]
    assert [r["type"] for r in replies] == ["welcome"] + ["ack"] * 4
    assert children[0].proc.is_alive() and children[0].stop() == 0


# --- fuzz: 100,000 frames against a live OrderManager and a live OrderBook ------------------------

def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 2:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del data[pos:]
        else:
            data[pos:pos] = data[max(0, pos - 8):pos]
    return bytes(data)


def _split(stream: bytes) -> list[bytes]:
    """The frames a receiver sees in `stream` (its unterminated tail excluded)."""
    return stream.split(b"*")[:-1]


def _frame_ends(stream: bytes) -> list[int]:
    """The offset of the delimiter ending each non-empty frame of `stream`, in order: the
    frames complete in stream[:n] are the bisect_left(ends, n) first of them."""
    ends: list[int] = []
    start = 0
    for frame in _split(stream):
        end = start + len(frame)
        if frame:
            ends.append(end)
        start = end + 1
    return ends


def order_frames(rng: random.Random, n: int, symbols: list[str]) -> list[bytes]:
    """n frames, a third each: valid orders, mutated valid ones, random bytes."""
    out: list[bytes] = []
    semantic = [("price", -1), ("price", float("nan")), ("price", 10**400), ("price", "1"),
                ("qty", 0), ("qty", 1.5), ("qty", 10**30), ("qty", True), ("symbol", "NOPE"),
                ("side", "HOLD"), ("id", ""), ("id", "x" * 200), ("id", 7), ("client", 5),
                ("tick_ns", -1)]
    for i in range(n):
        order = {"id": f"f-{i}", "client": "fuzz", "symbol": rng.choice(symbols),
                 "side": rng.choice(("BUY", "SELL")), "qty": rng.randint(1, 1000),
                 "price": round(rng.uniform(0.01, 1e6), 2), "tick_ns": rng.randrange(2**40),
                 "tick_seq": i, "sent_ns": 0}
        kind = rng.randrange(3)
        if kind == 0:
            out.append(protocol.encode_order(protocol.Order(**order))[:-1])
        elif kind == 1:
            if rng.random() < 0.5:
                key, value = rng.choice(semantic)
                order[key] = value
                text = json.dumps(order).replace("*", "\\u002a").encode()
            else:
                text = _mutate(rng, protocol.encode_order(protocol.Order(**order))[:-1])
            out.append(text)
        else:
            out.append(rng.randbytes(rng.randint(0, 200)))
    return out


@pytest.mark.timeout(60)
def test_fuzz_the_order_manager(tmp_path, children):
    """100,000 seeded frames from one client, a well-behaved client meanwhile. Every reply is
    judged by tests/orderspec.py, the README's order rules written without the codec the
    OrderManager runs: which frames are booked and with which number (a booked id sent again
    gets its first number), which are rejected, with which reason and which echoed id."""
    cfg = make_config(tmp_path, **{"order_manager.max_bad_frames": 0})   # never give up on us
    port = start(children, "order_manager", cfg)["order_port"]
    rng = random.Random(20240514)
    stream = b"".join(f + b"*" for f in order_frames(rng, FUZZ_FRAMES, cfg.market.symbols))
    frames = [f for f in _split(stream) if f]                 # empty frames get no reply
    ends = _frame_ends(stream)
    assert all(len(f) <= protocol.MAX_FRAME for f in frames)
    spec = orderspec.Book(frozenset(cfg.market.symbols))
    want: list[dict] = []
    kinds = {True: 0, False: 0}                                 # valid, invalid frames
    fuzz = socket.create_connection(("127.0.0.1", port), timeout=10)
    good = socket.create_connection(("127.0.0.1", port), timeout=10)
    got: list[dict] = []
    good_orders = 0
    try:
        for sock, name in ((fuzz, "fuzz"), (good, "good")):
            sock.sendall(encode_hello(name))
            assert json.loads(recv_frames(sock, 1)[0])["type"] == "welcome"
        buf = b""
        chunk = 1 << 16
        for k, pos in enumerate(range(0, len(stream), chunk)):
            fuzz.sendall(stream[pos:pos + chunk])
            expected = bisect.bisect_left(ends, pos + chunk)   # frames complete in what we sent
            while len(want) < expected:
                verdict, owed = spec.reply("fuzz", frames[len(want)])
                kinds[verdict.valid] += 1
                want.append(owed)
            while len(got) < expected:                          # read as we go: never blocked
                fuzz.settimeout(10)
                data = fuzz.recv(1 << 20)
                assert data, "the OrderManager closed the fuzzing client"
                *done, buf = (buf + data).split(b"*")
                got.extend(json.loads(r) for r in done)
            if k % 10 == 0:                                     # a well-behaved client, meanwhile
                frame = protocol.encode_order(protocol.Order(
                    id=f"good-{k}", symbol="AAPL", side="BUY", qty=1, price=100.0,
                    client="good"))
                _, owed = spec.reply("good", frame[:-1])
                good.sendall(frame)
                assert json.loads(recv_frames(good, 1)[0]) == owed
                good_orders += 1
    finally:
        fuzz.close()
        good.close()
    children[0].stop()
    assert len(got) == len(want) == len(frames)
    wrong = [(i, frames[i][:80], g, w) for i, (g, w) in enumerate(zip(got, want, strict=True))
             if not orderspec.matches(g, w)]
    assert not wrong, f"{len(wrong)} replies differ from the spec; the first: {wrong[:3]}"
    assert kinds[True] > FUZZ_FRAMES // 4 and kinds[False] > FUZZ_FRAMES // 4, kinds
    acks = sum(1 for w in want if w["type"] == "ack") + good_orders
    c = final_counters(tmp_path, "order_manager")
    assert c["orders"] == len(spec.booked) and c["duplicates"] == acks - len(spec.booked)
    assert c["rejects"] == kinds[False]
    records = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    assert {(r["client"], r["id"]): r["order_no"] for r in records} == spec.booked
    assert len(records) == len(spec.booked)


def price_frames(rng: random.Random, n: int, symbols: list[str]) -> list[bytes]:
    seqs = dict.fromkeys(symbols, 0)
    semantic = [b"nan", b"inf", b"-1.0", b"0", b"1e10", b"1.5.5", b"", b"12345678901234567"]
    out: list[bytes] = []
    for _ in range(n):
        sym = rng.choice(symbols)
        seqs[sym] += 1
        valid = b"%s,%.2f,%d,%d" % (sym.encode(), rng.uniform(0.01, 1e6), seqs[sym],
                                    time.monotonic_ns())
        kind = rng.randrange(3)
        if kind == 0:
            out.append(valid)
        elif kind == 1:
            if rng.random() < 0.5:
                parts = valid.split(b",")
                parts[rng.randrange(4)] = rng.choice(semantic + [b"ZZZ", b"aapl"])
                out.append(b",".join(parts))
            else:
                out.append(_mutate(rng, valid))
        else:
            out.append(rng.randbytes(rng.randint(0, 100)))
    return out


@pytest.mark.timeout(60)
def test_fuzz_the_orderbook_feed(tmp_path, children):
    fake = FakeServer()
    cfg = make_config(tmp_path, **{"network.price_port": fake.port})
    symbols = {s.encode() for s in cfg.market.symbols}
    rng = random.Random(20240515)
    stream = b"".join(f + b"*" for f in price_frames(rng, FUZZ_FRAMES, cfg.market.symbols))
    want = {"ticks": 0, "malformed": 0, "unknown": 0, "empty": 0}
    frames = _split(stream)
    assert all(len(f) <= 256 for f in frames)
    for f in frames:
        want[classify(f, symbols)] += 1
    try:
        start(children, "orderbook", cfg)
        conn = fake.accept()
        with SharedPriceBook(name=cfg.market.shm_name, create=False) as book:
            chunk = 1 << 16
            for k, pos in enumerate(range(0, len(stream), chunk)):
                # Each chunk ends at a frame boundary plus a sentinel tick a reader must see.
                part = stream[pos:pos + chunk]
                conn.sendall(part)
                if k % 8 == 0 and part.endswith(b"*"):
                    price = 1000.0 + k
                    conn.sendall(b"TSLA,%.2f,0,%d*" % (price, time.monotonic_ns()))
                    want["ticks"] += 1
                    wait_until(lambda p=price: book.read("TSLA") == p, 5,
                               what="the OrderBook to keep serving readers")
            conn.sendall(b"GOOG,4242.42,0,1*")
            want["ticks"] += 1
            wait_until(lambda: book.read("GOOG") == 4242.42, 5, what="the last tick")
        children[0].stop()
    finally:
        fake.close()
    got = final_counters(tmp_path, "orderbook")
    assert {k: got[k] for k in want} == want
    assert got["reconnects"] == 0, "the fuzz must not have cost the feed its connection"
