"""The OrderManager over raw sockets: handshake, dedup, log replay, risk, kill switch, fsync.

Each test runs a real OrderManager process on an ephemeral loopback port (except the fsync and
disk-full tests, which run one in this process to watch or break its journal).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
from stackutil import Child, hold_port, make_config, wait_until

from ext import SharedPriceBook
from processes.order_manager import service as om_mod
from processes.shared import config, telemetry
from processes.shared import journal as journal_mod
from processes.shared.protocol import (
    PROTOCOL_VERSION,
    Hello,
    Order,
    ProtocolError,
    encode_hello,
    encode_order,
    validate_hello,
)
from reactor import Reactor

pytestmark = pytest.mark.timeout(60)
TOKEN = "s3cret-token"


class OMClient:
    """A raw order client: frames out, JSON replies in (partial frames kept between reads)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._buf = b""

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def replies(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        out: list[dict] = []
        while len(out) < count:
            while b"*" in self._buf and len(out) < count:
                frame, _, self._buf = self._buf.partition(b"*")
                out.append(json.loads(frame))
            if len(out) == count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"got {len(out)} of {count} replies: {out}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} of {count} replies: {out}")
            self._buf += chunk
        return out

    def hello(self, name: str = "c1", token: str = "", version: int = PROTOCOL_VERSION) -> dict:
        self.send(encode_hello(name, token, version))
        return self.replies(1)[0]

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the OrderManager closes (EOF or reset), reading past any replies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


def order(oid: str, symbol: str = "AAPL", side: str = "BUY", qty: int = 10,
          price: float = 100.0, client: str = "c1") -> bytes:
    return encode_order(Order(id=oid, symbol=symbol, side=side, qty=qty, price=price,
                              client=client))


def booked(tmp_path: Path) -> list[dict]:
    path = tmp_path / "orders.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def final_stats(tmp_path: Path) -> dict:
    snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / "order_manager.json")
    assert snap is not None and snap["final"], snap
    return snap["counters"]


def om_log(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "order_manager.log").read_text()


class OMs:
    """OrderManager processes of one test, all stopped at teardown; clients closed too."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[Child] = []
        self.clients: list[OMClient] = []
        self._held = hold_port()   # a restart binds the same port, and nobody may take it
        self.port = self._held.getsockname()[1]

    def start(self, **overrides) -> Child:
        """An OrderManager; a restart reuses the port and order log of the first one."""
        cfg = make_config(self.tmp_path, **{"logging.stats_interval": 0.1,
                                            "network.order_port": self.port, **overrides})
        child = Child("order_manager", cfg)
        self.children.append(child)
        self.port = child.start()["order_port"]
        return child

    def client(self, hello: str | None = "c1", token: str = "") -> OMClient:
        cli = OMClient(self.port)
        self.clients.append(cli)
        if hello is not None:
            reply = cli.hello(hello, token)
            assert reply["type"] == "welcome", reply
        return cli

    def close(self) -> None:
        for cli in self.clients:
            cli.close()
        for child in reversed(self.children):
            child.stop()
        self._held.close()


@pytest.fixture
def oms(tmp_path):
    group = OMs(tmp_path)
    yield group
    group.close()


# --- handshake -----------------------------------------------------------------------------------

@pytest.mark.parametrize("obj, reason", [
    ({"type": "hello", "version": "1", "client": "c1"}, "version must be an integer"),
    ({"type": "hello", "version": True, "client": "c1"}, "version must be an integer"),
    ({"type": "hello", "version": 1, "client": ""}, "bad client name"),
    ({"type": "hello", "version": 1, "client": "a*b"}, "bad client name"),
    ({"type": "hello", "version": 1, "client": "x" * 65}, "bad client name"),
    ({"type": "hello", "version": 1, "client": "c1", "token": 5}, "token must be a string"),
    ({"type": "hello", "version": 1, "client": "c1", "token": "t" * 257}, "at most 256"),
    ({"id": "o-1", "symbol": "AAPL"}, "expected a hello first"),
])
def test_bad_hellos_say_why(obj, reason):
    with pytest.raises(ProtocolError, match=reason):
        validate_hello(obj)


def test_hello_round_trips():
    frame = encode_hello("strat-1", "to*ken")
    assert b"*" not in frame[:-1]          # '*' in the token is escaped, never a delimiter
    assert validate_hello(json.loads(frame[:-1])) == Hello(
        version=PROTOCOL_VERSION, client="strat-1", token="to*ken")


@pytest.mark.parametrize("key, value", [
    ("order_manager.max_position", -1), ("order_manager.max_order_rate", -5),
    ("order_manager.max_notional", float("nan")), ("order_manager.max_notional", -1.0),
    ("order_manager.max_bad_frames", -1), ("order_manager.token", "t" * 257),
    ("strategy.token", "t" * 257), ("order_manager.fsync", "maybe"),
])
def test_bad_order_manager_settings_name_the_key(key, value):
    with pytest.raises(config.ConfigError, match=key):
        config.load(None, {key: value})


def test_hello_is_welcomed_and_orders_follow(oms, tmp_path):
    oms.start(**{"order_manager.token": TOKEN})
    cli = oms.client(hello=None)
    assert cli.hello("strat-a", TOKEN) == {"type": "welcome", "version": PROTOCOL_VERSION,
                                           "client": "strat-a", "kill_switch": False}
    cli.send(order("a-1", client="someone-else"))
    assert cli.replies(1) == [{"type": "ack", "id": "a-1", "order_no": 1}]
    oms.children[0].stop()
    # Booked under the name the hello gave, whatever the frame claimed.
    assert [(r["id"], r["client"]) for r in booked(tmp_path)] == [("a-1", "strat-a")]


@pytest.mark.parametrize("first, reason", [
    (encode_hello("c1", TOKEN, PROTOCOL_VERSION + 1), "protocol version"),
    (encode_hello("c1", "wrong"), "bad token"),
    (encode_hello("c1", ""), "bad token"),
    (encode_hello("bad name!", TOKEN), "bad client name"),
    (order("early-1"), "expected a hello first"),
    (b"garbage*", "malformed JSON"),
], ids=["bad-version", "bad-token", "no-token", "bad-name", "order-before-hello", "garbage"])
def test_bad_first_frames_are_refused_and_closed(oms, tmp_path, first, reason):
    oms.start(**{"order_manager.token": TOKEN})
    cli = oms.client(hello=None)
    cli.send(first, order("after-1"))     # whatever follows a refused hello is not booked
    refused = cli.replies(1)[0]
    assert refused["type"] == "refused" and reason in refused["reason"], refused
    assert cli.closed_by_peer()
    ok = oms.client("c2", TOKEN)          # the OrderManager serves the next client as usual
    ok.send(order("ok-1", client="c2"))
    assert ok.replies(1)[0]["order_no"] == 1
    oms.children[0].stop()
    assert [r["id"] for r in booked(tmp_path)] == ["ok-1"]
    assert final_stats(tmp_path)["refused"] == 1
    assert "refused order client" in om_log(tmp_path)


def test_token_comes_from_the_environment_first(oms, monkeypatch):
    monkeypatch.setenv("TRADESTACK_TOKEN", "from-env")   # inherited by the spawned child
    oms.start(**{"order_manager.token": "from-file"})
    assert oms.client(hello=None).hello("c1", "from-file")["type"] == "refused"
    assert oms.client(hello=None).hello("c1", "from-env")["type"] == "welcome"


def test_no_token_configured_means_none_required(oms):
    oms.start()
    assert oms.client(hello=None).hello("c1", "anything")["type"] == "welcome"


def test_without_a_token_an_order_first_is_an_implicit_hello(oms, tmp_path):
    oms.start()
    cli = oms.client(hello=None)
    cli.send(order("i-1", client="ignored"), order("i-1"))
    assert [(r["type"], r["order_no"]) for r in cli.replies(2)] == [("ack", 1), ("ack", 1)]
    csv = oms.client(hello=None)            # a client written from the frame format alone
    csv.send(b"BUY,AAPL,10,173.2*", b'{"id": "j-1", "symbol": "AAPL", "side": "BUY", '
             b'"qty": 10, "price": 173.2}*')
    reject, ack = csv.replies(2)
    assert reject["type"] == "reject" and reject["id"] is None
    assert "is not JSON" in reject["reason"] and "one JSON object per frame" in reject["reason"]
    assert all(k in reject["reason"] for k in ('"id"', '"symbol"', '"side"', '"qty"', '"price"'))
    assert "Extra data" not in reject["reason"]
    assert ack == {"type": "ack", "id": "j-1", "order_no": 2}
    ports = [c.sock.getsockname()[1] for c in (cli, csv)]
    oms.children[0].stop()
    assert [(r["id"], r["client"]) for r in booked(tmp_path)] == [
        ("i-1", f"peer-127.0.0.1-{ports[0]}"), ("j-1", f"peer-127.0.0.1-{ports[1]}")]
    assert "sent no hello: booked as peer-127.0.0.1-" in om_log(tmp_path)


def test_a_client_sending_only_garbage_is_disconnected(oms, tmp_path):
    oms.start(**{"order_manager.max_bad_frames": 20})
    cli = oms.client()
    # A valid order resets the count: 19 bad, 1 good, 19 bad keeps the client.
    cli.send(b"junk*" * 19, order("g-1"), b"{}*" * 19)
    replies = cli.replies(39)
    assert [r["type"] for r in replies].count("ack") == 1
    assert not cli.closed_by_peer(timeout=0.3)
    cli.send(b"[1]*")                       # the 20th in a row
    last = cli.replies(2)
    assert last[0]["type"] == "reject" and last[1]["type"] == "refused"
    assert "20 malformed frames in a row" in last[1]["reason"]
    assert cli.closed_by_peer()
    oms.children[0].stop()
    stats = final_stats(tmp_path)
    assert stats["bad_clients"] == 1 and stats["orders"] == 1
    assert "malformed frames in a row" in om_log(tmp_path)


# --- dedup and the order log ---------------------------------------------------------------------

def test_a_resent_id_is_acked_with_the_same_number_and_booked_once(oms, tmp_path):
    oms.start()
    cli = oms.client()
    cli.send(order("d-1"), order("d-2"), order("d-1"))
    assert [(r["id"], r["order_no"]) for r in cli.replies(3)] == [("d-1", 1), ("d-2", 2),
                                                                   ("d-1", 1)]
    again = oms.client()                    # a reconnect that resends everything it had
    again.send(order("d-1"), order("d-2"), order("d-3"))
    assert [r["order_no"] for r in again.replies(3)] == [1, 2, 3]
    other = oms.client("c2")                # ids are per client: c2's d-1 is its own order
    other.send(order("d-1", client="c2"))
    assert other.replies(1)[0]["order_no"] == 4
    oms.children[0].stop()
    assert [(r["id"], r["client"]) for r in booked(tmp_path)] == [
        ("d-1", "c1"), ("d-2", "c1"), ("d-3", "c1"), ("d-1", "c2")]
    assert om_log(tmp_path).count("Received Order 1: ") == 1
    stats = final_stats(tmp_path)
    assert stats["duplicates"] == 3 and stats["orders"] == 4


def test_the_strategys_frames_take_the_native_path_and_the_rest_the_python_path(oms, tmp_path):
    """The native order path (ext.OrderDesk) books the canonical frames; a resend, a reject, a
    frame of another shape or naming another client are the Python path's, with its answers."""
    oms.start()
    cli = oms.client()
    cli.send(order("v-1"), order("v-2", side="SELL", price=99.5), order("v-1"),
             order("v-3", symbol="NOPE"), order("v-4", client="someone-else"),
             order("v-5").replace(b'"qty":10', b'"qty": 10'))
    replies = cli.replies(6)
    assert [(r["type"], r.get("order_no")) for r in replies] == [
        ("ack", 1), ("ack", 2), ("ack", 1), ("reject", None), ("ack", 3), ("ack", 4)]
    assert replies[3]["reason"] == "unknown symbol 'NOPE'"
    oms.children[0].stop()
    stats = final_stats(tmp_path)
    assert stats["native_orders"] == 2 and stats["orders"] == 4 and stats["duplicates"] == 1
    assert [(r["id"], r["client"], r["side"], r["price"]) for r in booked(tmp_path)] == [
        ("v-1", "c1", "BUY", 100.0), ("v-2", "c1", "SELL", 99.5), ("v-4", "c1", "BUY", 100.0),
        ("v-5", "c1", "BUY", 100.0)]


def test_with_a_risk_limit_every_order_takes_the_python_path(oms, tmp_path):
    oms.start(**{"order_manager.max_position": 1000})
    cli = oms.client()
    cli.send(order("r-1"), order("r-2"))
    assert [r["order_no"] for r in cli.replies(2)] == [1, 2]
    oms.children[0].stop()
    stats = final_stats(tmp_path)
    assert stats["native_orders"] == 0 and stats["orders"] == 2


def test_the_order_log_is_read_back_after_a_restart(oms, tmp_path):
    oms.start()
    cli = oms.client()
    cli.send(*(order(f"r-{i}") for i in range(1, 4)))
    assert [r["order_no"] for r in cli.replies(3)] == [1, 2, 3]
    wait_until(lambda: (tmp_path / "orders.jsonl").read_bytes().count(b"\n") == 3, 10,
               what="the three lines mirrored into the JSONL")
    oms.children[0].kill()                  # no clean shutdown
    with open(tmp_path / "orders.jsonl", "a") as fh:   # a write torn by the crash
        fh.write('{"order_no":4,"received_ns":1,"peer":"x","id":"r-4","cli')
    oms.start()
    cli = oms.client()
    cli.send(order("r-2"), order("r-4"), order("r-5"))
    assert [(r["id"], r["order_no"]) for r in cli.replies(3)] == [("r-2", 2), ("r-4", 4),
                                                                   ("r-5", 5)]
    oms.children[-1].stop()
    assert [r["id"] for r in booked(tmp_path)] == ["r-1", "r-2", "r-3", "r-4", "r-5"]
    assert "last line 4 is incomplete" in om_log(tmp_path)
    stats = final_stats(tmp_path)
    assert (stats["replayed"], stats["orders"], stats["duplicates"]) == (3, 2, 1)


def test_each_start_is_a_new_session_unless_resumed(oms, tmp_path, monkeypatch):
    monkeypatch.delenv("TRADESTACK_SESSION")        # standalone starts, no supervisor
    oms.start(**{"order_manager.max_position": 10})
    cli = oms.client()
    cli.send(order("s-1"))
    assert cli.replies(1)[0]["order_no"] == 1
    oms.children[-1].stop()
    # A new run: yesterday's position and ids are not today's; numbers stay unique in the file.
    info = oms.start(**{"order_manager.max_position": 10}).info
    assert info["replayed"] == 0 and info["next_order_no"] == 2
    cli = oms.client()
    cli.send(order("s-1"))                          # not a duplicate, and max_position allows it
    assert cli.replies(1)[0] == {"type": "ack", "id": "s-1", "order_no": 2}
    oms.children[-1].stop()
    second = final_stats(tmp_path)
    assert second["pnl"]["c1"]["AAPL"]["position"] == 10      # this session's fills only
    # --resume (order_manager.resume): the last session goes on, dedup and positions intact.
    info = oms.start(**{"order_manager.max_position": 10, "order_manager.resume": True}).info
    assert info["session"] == second["session"] and info["replayed"] == 1
    cli = oms.client()
    cli.send(order("s-1"), order("s-2"))
    dup, over = cli.replies(2)
    assert dup["order_no"] == 2 and over["type"] == "reject" and "max_position" in over["reason"]
    oms.children[-1].stop()
    sessions = [r["session"] for r in booked(tmp_path)]
    assert len(sessions) == 2 and sessions[0] != sessions[1] and all(sessions)
    assert "1 orders of earlier sessions left out" in om_log(tmp_path)


def test_a_corrupt_line_inside_the_order_log_stops_the_start(oms, tmp_path):
    lines = [json.dumps({"order_no": 1, "id": "x-1", "client": "c1", "symbol": "AAPL",
                         "side": "BUY", "qty": 1, "price": 1.0}), "not json",
             json.dumps({"order_no": 2, "id": "x-2", "client": "c1", "symbol": "AAPL",
                         "side": "BUY", "qty": 1, "price": 1.0})]
    (tmp_path / "orders.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RuntimeError, match="line 2 is corrupt"):
        oms.start()


# --- risk ----------------------------------------------------------------------------------------

def test_max_notional(oms, tmp_path):
    oms.start(**{"order_manager.max_notional": 5000})
    cli = oms.client()
    cli.send(order("n-1", qty=100, price=60.0), order("n-2", qty=50, price=100.0))
    big, ok = cli.replies(2)
    assert big == {"type": "reject", "id": "n-1",
                   "reason": "risk: max_notional 5000 exceeded for AAPL (order 6000.00)"}
    assert ok["type"] == "ack"
    oms.children[0].stop()
    assert final_stats(tmp_path)["rejects_max_notional"] == 1


def test_max_position_per_client_and_symbol_survives_a_restart(oms, tmp_path):
    oms.start(**{"order_manager.max_position": 100})
    cli = oms.client()
    cli.send(order("p-1", qty=60), order("p-2", qty=50), order("p-3", "MSFT", qty=100))
    assert [r["type"] for r in cli.replies(3)] == ["ack", "reject", "ack"]
    oms.children[0].stop()
    oms.start(**{"order_manager.max_position": 100})   # positions come back from the log
    cli = oms.client()
    other = oms.client("c2")
    cli.send(order("p-4", qty=50), order("p-5", side="SELL", qty=200),
             order("p-6", side="SELL", qty=160))
    r4, r5, r6 = cli.replies(3)
    assert r4["reason"] == "risk: max_position 100 exceeded for AAPL (would be 110)"
    assert r5["reason"] == "risk: max_position 100 exceeded for AAPL (would be -140)"
    assert r6["type"] == "ack"              # 60 - 160 = -100: at the limit is allowed
    other.send(order("p-1", qty=100, client="c2"))     # c2 has a position of its own
    assert other.replies(1)[0]["type"] == "ack"
    oms.children[-1].stop()
    assert final_stats(tmp_path)["rejects_max_position"] == 2


def test_max_order_rate_per_client(oms, tmp_path):
    oms.start(**{"order_manager.max_order_rate": 5})
    cli = oms.client()
    cli.send(*(order(f"q-{i}") for i in range(8)))
    replies = cli.replies(8)
    assert [r["type"] for r in replies] == ["ack"] * 5 + ["reject"] * 3
    assert replies[5]["reason"] == "risk: max_order_rate 5/s exceeded for client c1"
    other = oms.client("c2")                # the limit is per client
    other.send(order("q-0", client="c2"))
    assert other.replies(1)[0]["type"] == "ack"
    time.sleep(1.1)                         # the window slides
    cli.send(order("q-8"))
    assert cli.replies(1)[0]["type"] == "ack"
    oms.children[0].stop()
    assert final_stats(tmp_path)["rejects_max_order_rate"] == 3


def test_kill_switch_toggles_on_sigusr1(oms, tmp_path):
    child = oms.start()
    cli = oms.client()
    cli.send(order("k-1"))
    assert cli.replies(1)[0]["type"] == "ack"
    os.kill(child.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "KILL SWITCH ON" in om_log(tmp_path), 10, what="kill switch on")
    cli.send(order("k-2"), order("k-1"))
    rejected, again = cli.replies(2)
    assert rejected == {"type": "reject", "id": "k-2", "reason": "kill switch on"}
    assert again == {"type": "ack", "id": "k-1", "order_no": 1}   # already booked: not new
    snap_path = tmp_path / "logs" / "stats" / "order_manager.json"
    wait_until(lambda: (telemetry.read_snapshot(snap_path) or {}).get(
        "counters", {}).get("kill_switch") is True, 10, what="kill_switch in stats")
    assert oms.client(hello=None).hello("c2")["kill_switch"] is True   # told at welcome
    os.kill(child.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "KILL SWITCH OFF" in om_log(tmp_path), 10, what="kill switch off")
    cli.send(order("k-2"))
    assert cli.replies(1)[0] == {"type": "ack", "id": "k-2", "order_no": 2}
    child.stop()
    stats = final_stats(tmp_path)
    assert stats["kill_switch"] is False and stats["rejects_kill_switch"] == 1


# --- fsync ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fsync", [False, True])
def test_fsync_option_syncs_each_order_before_its_ack(tmp_path, monkeypatch, fsync):
    """In this process, so the journal's msync can be watched (each call is checked to come
    before its order's ack is sent); the reactor is turned by hand."""
    synced: list[int] = []
    acks_sent: list[int] = []
    real_msync = journal_mod.msync

    def watched(mm, offset: int, length: int) -> None:
        synced.append(len(acks_sent))
        real_msync(mm, offset, length)
    monkeypatch.setattr(journal_mod, "msync", watched)
    real_encode_ack = om_mod.encode_ack
    monkeypatch.setattr(om_mod, "encode_ack",
                        lambda *a: (acks_sent.append(1), real_encode_ack(*a))[1])
    cfg = make_config(tmp_path, **{"order_manager.fsync": fsync})
    reactor = Reactor()
    om = om_mod.OrderManager(reactor, cfg)
    try:
        port = om.start()["order_port"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            frames = encode_hello("c1") + b"".join(order(f"f-{i}") for i in range(3))
            replies = _exchange(reactor, sock, frames, 4)
        assert [r["type"] for r in replies] == ["welcome", "ack", "ack", "ack"]
    finally:
        om.close()
        reactor.close()
    assert synced == ([0, 1, 2] if fsync else [])   # the n-th sync before the n-th ack
    assert len(booked(tmp_path)) == 3


def test_an_unwritable_order_log_rejects_and_trips_the_kill_switch(tmp_path, monkeypatch):
    """Nothing is acked that is not in the log: when the disk is full (the journal's next chunk
    cannot be preallocated) the order that needs it is rejected and trading halts."""
    monkeypatch.setattr(journal_mod, "CHUNK_BYTES", 4096)   # a few orders fill a chunk
    cfg = make_config(tmp_path)
    reactor = Reactor()
    om = om_mod.OrderManager(reactor, cfg)
    try:
        port = om.start()["order_port"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            replies = _exchange(reactor, sock, encode_hello("c1") + order("w-1"), 2)
            assert replies[1]["type"] == "ack"

            def full(*args: object) -> None:
                raise OSError(28, "No space left on device")
            monkeypatch.setattr(os, "posix_fallocate", full)
            replies = _exchange(reactor, sock, b"".join(order(f"w-{i}") for i in range(2, 40)),
                                38)
        types = [r["type"] for r in replies]
        first = types.index("reject")
        assert 0 < first < 37 and types[:first] == ["ack"] * first
        assert "order log write failed" in replies[first]["reason"]
        assert all(r == {"type": "reject", "id": f"w-{i + 2}", "reason": "kill switch on"}
                   for i, r in enumerate(replies) if i > first)
        assert om.kill_switch and om.order_no == 1 + first
    finally:
        om.close()
        reactor.close()
    assert [r["id"] for r in booked(tmp_path)] == [f"w-{i}" for i in range(1, first + 2)]


def _exchange(reactor: Reactor, sock: socket.socket, data: bytes, count: int) -> list[dict]:
    """Send `data` to an in-process OrderManager and turn its reactor until `count` replies."""
    sock.sendall(data)
    sock.setblocking(False)
    got = b""
    deadline = time.monotonic() + 10
    while got.count(b"*") < count and time.monotonic() < deadline:
        reactor.run_for(0.02)
        try:
            got += sock.recv(65536)
        except BlockingIOError:
            pass
    return [json.loads(f) for f in got.split(b"*")[:-1]]


def test_a_refused_strategy_says_so_and_keeps_retrying(oms, tmp_path):
    """A real Strategy with the wrong token: logged as refused, retried, welcomed once fixed."""
    oms.start(**{"order_manager.token": "right"})
    cfg = make_config(tmp_path, **{"strategy.token": "wrong", "network.order_port": oms.port})
    news = socket.create_server(("127.0.0.1", 0))
    cfg.network.news_port = news.getsockname()[1]
    book = SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True)
    strategy = Child("strategy", cfg)
    try:
        strategy.start()
        strat_log = tmp_path / "logs" / "strategy.log"
        wait_until(lambda: strat_log.read_text().count("REFUSED") >= 2, 10, what="retried refusals")
        oms.children[-1].stop()
        wait_until(lambda: "bad token for client strat-1" in om_log(tmp_path), 5)
        oms.start(**{"order_manager.token": "wrong"})   # the operator fixes the token
        wait_until(lambda: "welcomed by order manager" in strat_log.read_text(), 15,
                   what="the retry to be welcomed")
    finally:
        strategy.stop()
        news.close()
        book.close()
        book.unlink()


def test_positions_and_pnl_are_published_marked_to_shared_memory(oms, tmp_path):
    """Fills at the order price, marked to the latest price in the OrderBook's segment (here a
    segment this test writes), per client and symbol, also after a restart (from the log)."""
    cfg = make_config(tmp_path)
    oms.start(**{"market.shm_name": cfg.market.shm_name})
    with SharedPriceBook(cfg.market.symbols, name=cfg.market.shm_name, create=True) as book:
        try:
            book.update("AAPL", 120.0)
            cli = oms.client()
            cli.send(order("p-1", qty=10, price=100.0), order("p-2", side="SELL", qty=4,
                                                              price=110.0))
            assert [r["type"] for r in cli.replies(2)] == ["ack", "ack"]
            oms.children[0].stop()
            pnl = final_stats(tmp_path)["pnl"]["c1"]["AAPL"]
            assert pnl["position"] == 6 and pnl["avg_price"] == pytest.approx(100.0)
            assert pnl["realized"] == pytest.approx(40.0)      # 4 x (110 - 100)
            assert pnl["unrealized"] == pytest.approx(120.0)   # 6 x (120 - 100)
            oms.start(**{"market.shm_name": cfg.market.shm_name})   # rebuilt from the log
            oms.children[-1].stop()
            assert final_stats(tmp_path)["pnl"]["c1"]["AAPL"]["realized"] == pytest.approx(40.0)
        finally:
            book.unlink()


@pytest.mark.parametrize("oid", [7, 2**70, 1.5, True, None, "", "x" * 129])
def test_a_reject_echoes_the_id_exactly_as_sent(oms, oid):
    oms.start()
    cli = oms.client()
    frame = json.dumps({"id": oid, "symbol": "AAPL", "side": "BUY", "qty": 1, "price": 10.0})
    cli.send(frame.encode() + b"*", json.dumps({"id": [1], "symbol": "AAPL"}).encode() + b"*")
    reply, nested = cli.replies(2)
    assert reply["type"] == "reject" and reply["id"] == oid and type(reply["id"]) is type(oid)
    assert "must be a string" in reply["reason"]
    assert nested["type"] == "reject" and nested["id"] is None   # not a scalar: not echoed


# --- crash safety of the journal -------------------------------------------------------------

@pytest.mark.timeout(150)
@pytest.mark.parametrize("pure_python", ["0", "1"], ids=["cython", "python"])
def test_kill_9_at_random_points_loses_no_acked_order(oms, tmp_path, monkeypatch, pure_python):
    """Rounds of: a burst of pipelined orders, a kill -9 after a random number of acks (the
    OrderManager is then mid-burst: committing, acking, mirroring), a restart. Every order acked
    before a kill is read back (a resend gets the same order_no) and is in the JSONL once, and
    nothing torn is read as an order (the numbering stays unique and gapless). With the
    compiled journal writer (ext._journal) and its twin (ext.journal_py)."""
    monkeypatch.setenv("TRADESTACK_PURE_PYTHON", pure_python)
    rng = random.Random(os.getpid())
    acked: dict[str, int] = {}
    burst = 300
    for rnd in range(6):
        oms.start()
        cli = oms.client()
        if acked:   # what the killed run acked must come back from its journal or mirror
            ids = list(acked)
            cli.send(*(order(oid) for oid in ids))
            assert {r["id"]: r["order_no"] for r in cli.replies(len(ids), 30)} == acked
        cli.send(*(order(f"k{rnd}-{i}") for i in range(burst)))
        got = cli.replies(rng.randrange(1, burst // 2), 30)
        oms.children[-1].kill()
        while True:   # the acks already on their way, up to the close
            try:
                got += cli.replies(1, 5)
            except (ConnectionError, TimeoutError):
                break
        assert all(r["type"] == "ack" for r in got), got[:3]
        acked.update((r["id"], r["order_no"]) for r in got)
    oms.start()
    oms.children[-1].stop()
    records = booked(tmp_path)
    numbers = [r["order_no"] for r in records]
    assert numbers == list(range(1, len(records) + 1))
    assert len({r["id"] for r in records}) == len(records)
    by_id = {r["id"]: r["order_no"] for r in records}
    assert {oid: by_id.get(oid) for oid in acked} == acked
    assert not (tmp_path / "orders.jsonl.journal").exists()   # a clean stop mirrored it all
