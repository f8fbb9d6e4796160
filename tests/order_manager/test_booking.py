"""The OrderManager's booking, dedup, replay and risk, in this process on a real loopback socket.

The reactor is turned by hand (see OMRig), so these tests are fast and the mutation run
(scripts/mutation_report.py) sees which of them call which OrderManager function; the
subprocess tests in test_orders.py cover the same rules through a real OrderManager process.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from stackutil import make_config

from processes.order_manager import service as om_mod
from processes.shared import journal as journal_mod
from processes.shared.protocol import (
    PROTOCOL_VERSION,
    Order,
    encode_hello,
    encode_order,
    not_an_order_reason,
)
from reactor import Reactor

pytestmark = pytest.mark.timeout(30)


def order(oid: str, symbol: str = "AAPL", side: str = "BUY", qty: int = 10,
          price: float = 100.0, client: str = "ignored", **stamps: int) -> bytes:
    """An order frame; the OrderManager books it under the hello's name whatever its client
    says (a frame naming that client is canonical: the native desk books it)."""
    return encode_order(Order(id=oid, symbol=symbol, side=side, qty=qty, price=price,
                              client=client, **stamps))


class OMRig:
    """One in-process OrderManager and its clients; the reactor turns while a test waits."""

    def __init__(self, tmp_path: Path, **overrides) -> None:
        self.cfg = make_config(tmp_path, **overrides)
        self.reactor = Reactor()
        self.om = om_mod.OrderManager(self.reactor, self.cfg)
        self.info = self.om.start()
        self.socks: list[socket.socket] = []
        self._bufs: dict[int, bytes] = {}

    def client(self, name: str | None = "c1", token: str = "") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.info["order_port"]), timeout=5)
        sock.setblocking(False)
        self.socks.append(sock)
        self._bufs[sock.fileno()] = b""
        if name is not None:
            assert self.exchange(sock, encode_hello(name, token))[0]["type"] == "welcome"
        return sock

    def exchange(self, sock: socket.socket, data: bytes, count: int = 1) -> list[dict]:
        """Send `data`, turn the reactor until `count` replies came back (10 s deadline)."""
        if data:
            sock.sendall(data)
        deadline = time.monotonic() + 10
        fd = sock.fileno()
        while self._bufs[fd].count(b"*") < count:
            assert time.monotonic() < deadline, f"replies: {self._bufs[fd]!r}"
            self.reactor.run_for(0.01)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            self._bufs[fd] += chunk
        frames = self._bufs[fd].split(b"*")
        self._bufs[fd] = b"*".join(frames[count:])
        return [json.loads(f) for f in frames[:count]]

    def closed_by_peer(self, sock: socket.socket) -> bool:
        """Turn the reactor until the OrderManager closes `sock` (10 s deadline)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.reactor.run_for(0.01)
            try:
                if not sock.recv(65536):
                    return True
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.om.close()
        self.reactor.close()


@pytest.fixture
def rigs(tmp_path):
    """Start rigs with rigs(**overrides); every one is closed at teardown."""
    made: list[OMRig] = []

    def make(**overrides) -> OMRig:
        rig = OMRig(tmp_path, **overrides)
        made.append(rig)
        return rig
    yield make
    for rig in made:
        rig.close()


def booked(tmp_path: Path) -> list[dict]:
    path = tmp_path / "orders.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def kinds(replies: list[dict]) -> list[str]:
    return [r["type"] for r in replies]


# --- booking and dedup ---------------------------------------------------------------------------

def test_an_order_is_booked_once_with_its_number_its_fields_and_our_stamps(rigs, tmp_path,
                                                                         order_session):
    rig = rigs()
    cli = rig.client("c1")
    before = time.monotonic_ns()
    ack = rig.exchange(cli, order("b-1", side="SELL", qty=7, price=12.5, tick_ns=5, sent_ns=6))
    assert ack == [{"type": "ack", "id": "b-1", "order_no": 1}]
    (rec,) = booked(tmp_path)
    assert list(rec)[:4] == ["order_no", "received_ns", "peer", "session"]
    assert (rec["order_no"], rec["session"]) == (1, order_session)
    assert rec["peer"] == f"127.0.0.1:{cli.getsockname()[1]}"
    assert before <= rec["received_ns"] <= time.monotonic_ns()
    assert {k: rec[k] for k in ("id", "client", "symbol", "side", "qty", "price")} == {
        "id": "b-1", "client": "c1", "symbol": "AAPL", "side": "SELL", "qty": 7, "price": 12.5}
    assert (rec["tick_ns"], rec["sent_ns"]) == (5, 6)
    assert rig.om.positions == {("c1", "AAPL"): -7} and rig.om.order_no == 1
    assert rig.om.stats()["orders"] == 1


def test_a_resend_is_acked_with_its_number_and_ids_are_per_client(rigs, tmp_path):
    rig = rigs()
    c1, c2 = rig.client("c1"), rig.client("c2")
    replies = rig.exchange(c1, order("d-1") + order("d-2") + order("d-1", qty=99), 3)
    assert [(r["id"], r["order_no"]) for r in replies] == [("d-1", 1), ("d-2", 2), ("d-1", 1)]
    assert rig.exchange(c2, order("d-1"))[0]["order_no"] == 3
    rig.exchange(c2, order("d-1"))
    stats = rig.om.stats()
    assert (stats["orders"], stats["duplicates"], stats["rejects"]) == (3, 2, 0)
    assert rig.om.positions == {("c1", "AAPL"): 20, ("c2", "AAPL"): 10}   # the resend moved none
    assert [(r["id"], r["client"], r["qty"]) for r in booked(tmp_path)] == [
        ("d-1", "c1", 10), ("d-2", "c1", 10), ("d-1", "c2", 10)]


def test_a_restart_reads_the_log_back_dedup_positions_and_numbering(rigs, tmp_path):
    rig = rigs(**{"order_manager.max_position": 30})
    cli = rig.client("c1")
    rig.exchange(cli, order("r-1", qty=20) + order("r-2", "MSFT", side="SELL", qty=5), 2)
    rig.close()
    again = rigs(**{"order_manager.max_position": 30})
    assert (again.info["replayed"], again.info["next_order_no"]) == (2, 3)
    assert again.om.positions == {("c1", "AAPL"): 20, ("c1", "MSFT"): -5}
    cli = again.client("c1")
    replies = again.exchange(cli, order("r-2") + order("r-3", qty=20)
                             + order("r-4", side="SELL", qty=10), 3)
    assert [(r["type"], r.get("order_no")) for r in replies] == [
        ("ack", 2), ("reject", None), ("ack", 3)]
    assert replies[1]["reason"] == "risk: max_position 30 exceeded for AAPL (would be 40)"
    assert again.om.stats()["replayed"] == 2 and again.om.duplicates == 1


def test_records_of_other_sessions_number_but_do_not_book(rigs, tmp_path, order_session):
    rows = [{"order_no": 7, "id": "o-1", "client": "c1", "symbol": "AAPL", "side": "BUY",
             "qty": 5, "price": 1.0, "session": "yesterday"},
            {"order_no": 3, "id": "o-2", "client": "c1", "symbol": "AAPL", "side": "BUY",
             "qty": 5, "price": 1.0, "session": order_session},
            {"order_no": 4, "id": "o-2", "client": "c1", "symbol": "AAPL", "side": "BUY",
             "qty": 5, "price": 1.0, "session": order_session},   # booked twice by hand
            {"order_no": 5, "id": "o-3", "client": "c1", "symbol": "AAPL", "side": "SELL",
             "qty": 2, "price": 1.0, "session": order_session}]
    (tmp_path / "orders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rig = rigs()
    assert (rig.info["replayed"], rig.info["next_order_no"]) == (3, 8)
    assert rig.om.booked == {("c1", "o-2"): 3, ("c1", "o-3"): 5}   # the first booking counts
    assert rig.om.positions == {("c1", "AAPL"): 3}      # 5 bought, the double skipped, 2 sold
    cli = rig.client("c1")
    replies = rig.exchange(cli, order("o-1") + order("o-2"), 2)
    assert [r["order_no"] for r in replies] == [8, 3]   # yesterday's o-1 is a new order today


# --- the handshake -------------------------------------------------------------------------------

def test_hello_version_and_token_are_checked(rigs):
    rig = rigs(**{"order_manager.token": "tok"})
    bad_version = rig.client(None)
    refused = rig.exchange(bad_version, encode_hello("c1", "tok", PROTOCOL_VERSION + 1))[0]
    assert refused["type"] == "refused" and "not supported" in refused["reason"]
    bad_token = rig.client(None)
    refused = rig.exchange(bad_token, encode_hello("c1", "nope"))[0]
    assert refused == {"type": "refused", "reason": "bad token for client c1"}
    no_hello = rig.client(None)
    refused = rig.exchange(no_hello, order("x-1"))[0]
    assert refused["type"] == "refused" and "hello" in refused["reason"]
    assert rig.closed_by_peer(no_hello)
    good = rig.client(None)
    welcome = rig.exchange(good, encode_hello("c1", "tok"))[0]
    assert welcome == {"type": "welcome", "version": PROTOCOL_VERSION, "client": "c1",
                       "kill_switch": False}
    assert rig.om.refused == 3 and rig.om.orders == 0


def test_without_a_token_a_first_order_is_booked_under_the_peer(rigs, tmp_path):
    rig = rigs()
    cli = rig.client(None)
    ack = rig.exchange(cli, order("i-1"))[0]
    assert ack == {"type": "ack", "id": "i-1", "order_no": 1}
    port = cli.getsockname()[1]
    assert booked(tmp_path)[0]["client"] == f"peer-127.0.0.1-{port}"


# --- the kill switch -----------------------------------------------------------------------------

def test_the_kill_switch_rejects_new_orders_but_acks_booked_ones(rigs):
    rig = rigs()
    cli = rig.client("c1")
    rig.exchange(cli, order("k-1"))
    rig.om.toggle_kill_switch()
    replies = rig.exchange(cli, order("k-2") + order("k-1"), 2)
    assert replies == [{"type": "reject", "id": "k-2", "reason": "kill switch on"},
                       {"type": "ack", "id": "k-1", "order_no": 1}]
    assert rig.exchange(rig.client(None), encode_hello("c2"))[0]["kill_switch"] is True
    rig.om.toggle_kill_switch()
    assert rig.exchange(cli, order("k-2"))[0] == {"type": "ack", "id": "k-2", "order_no": 2}
    stats = rig.om.stats()
    assert (stats["rejects_kill_switch"], stats["rejects"], stats["kill_switch"]) == (1, 1, False)


def test_kill_switch_at_start(rigs):
    rig = rigs(**{"order_manager.kill_switch": True})
    assert rig.info["kill_switch"] is True
    cli = rig.client("c1")
    assert rig.exchange(cli, order("s-1"))[0]["reason"] == "kill switch on"


# --- risk ----------------------------------------------------------------------------------------

def test_max_notional_allows_the_limit_and_rejects_past_it(rigs):
    rig = rigs(**{"order_manager.max_notional": 1000})
    cli = rig.client("c1")
    replies = rig.exchange(cli, order("n-1", qty=10, price=100.0)
                           + order("n-2", qty=10, price=100.01), 2)
    assert replies[0]["type"] == "ack"
    assert replies[1] == {"type": "reject", "id": "n-2",
                          "reason": "risk: max_notional 1000 exceeded for AAPL (order 1000.10)"}
    assert rig.om.rule_rejects["max_notional"] == 1 and rig.om.positions == {("c1", "AAPL"): 10}


def test_max_position_allows_the_limit_and_any_order_towards_flat(rigs):
    rig = rigs(**{"order_manager.max_position": 50})
    cli = rig.client("c1")
    replies = rig.exchange(cli, order("p-1", qty=50) + order("p-2", qty=1)
                           + order("p-3", side="SELL", qty=100) + order("p-4", side="SELL", qty=1)
                           + order("p-5", "MSFT", side="SELL", qty=50), 5)
    assert kinds(replies) == ["ack", "reject", "ack", "reject", "ack"]
    assert replies[1]["reason"] == "risk: max_position 50 exceeded for AAPL (would be 51)"
    assert replies[3]["reason"] == "risk: max_position 50 exceeded for AAPL (would be -51)"
    assert rig.om.positions == {("c1", "AAPL"): -50, ("c1", "MSFT"): -50}
    rig.om.max_position = 10       # a lowered limit: reducing the position is still allowed
    replies = rig.exchange(cli, order("p-6", qty=20) + order("p-7", side="SELL", qty=1), 2)
    assert kinds(replies) == ["ack", "reject"]
    assert rig.om.rule_rejects["max_position"] == 3
    # -30 -> +30: no larger than before, so allowed although past the limit.
    assert rig.exchange(cli, order("p-8", qty=60))[0]["type"] == "ack"
    assert rig.om.positions[("c1", "AAPL")] == 30


def test_max_order_rate_is_per_client_over_a_sliding_second(rigs, monkeypatch):
    """The window is the OrderManager's monotonic clock: moved on by hand, not slept through."""
    shift = [0]
    real = time.monotonic_ns
    monkeypatch.setattr(om_mod.time, "monotonic_ns", lambda: real() + shift[0])
    rig = rigs(**{"order_manager.max_order_rate": 3})
    c1, c2 = rig.client("c1"), rig.client("c2")
    replies = rig.exchange(c1, b"".join(order(f"q-{i}") for i in range(5)), 5)
    assert kinds(replies) == ["ack"] * 3 + ["reject"] * 2
    assert replies[3]["reason"] == "risk: max_order_rate 3/s exceeded for client c1"
    assert rig.exchange(c2, order("q-0"))[0]["type"] == "ack"         # c2's own window
    assert rig.exchange(c1, order("q-0"))[0]["order_no"] == 1         # a resend is no new order
    shift[0] = om_mod.SECOND_NS // 2
    assert rig.exchange(c1, order("q-5"))[0]["type"] == "reject"      # still within the second
    shift[0] = om_mod.SECOND_NS + 1
    assert kinds(rig.exchange(c1, b"".join(order(f"w-{i}") for i in range(4)), 4)) == \
        ["ack"] * 3 + ["reject"]
    assert rig.om.rule_rejects["max_order_rate"] == 4


def test_no_limit_configured_means_none_applied(rigs):
    rig = rigs()
    cli = rig.client("c1")
    replies = rig.exchange(cli, b"".join(order(f"u-{i}", qty=1_000_000, price=1e6)
                                         for i in range(30)), 30)
    assert kinds(replies) == ["ack"] * 30


# --- malformed frames ----------------------------------------------------------------------------

def test_malformed_frames_are_rejected_and_a_streak_closes_the_client(rigs):
    rig = rigs(**{"order_manager.max_bad_frames": 3})
    cli = rig.client("c1")
    replies = rig.exchange(cli, b"nope*" + b'{"id": "m-0"}*' + order("m-1") + b"nope*"
                           + b"nope*", 5)
    assert kinds(replies) == ["reject", "reject", "ack", "reject", "reject"]
    assert replies[0] == {"type": "reject", "id": None,
                          "reason": not_an_order_reason(b"nope", "malformed JSON")}
    assert replies[1] == {"type": "reject", "id": "m-0", "reason": "unknown symbol None"}
    assert rig.om.bad_clients == 0            # the good order broke the first streak
    refused = rig.exchange(cli, b"nope*", 2)
    assert kinds(refused) == ["reject", "refused"]
    assert refused[1]["reason"] == "3 malformed frames in a row"
    assert rig.closed_by_peer(cli)
    assert rig.om.bad_clients == 1 and rig.om.rejects == 5 and rig.om.orders == 1
    other = rig.client("c2")
    rig.exchange(other, b"[1]*" * 3, 4)
    assert rig.om.bad_clients == 2
    assert rig.exchange(rig.client("c3"), b"[1]*")[0]["reason"] == not_an_order_reason(
        b"[1]", "expected a JSON object")


def test_stamps_in_the_future_are_no_latency(rigs):
    rig = rigs()
    cli = rig.client("c1")
    now = time.monotonic_ns()
    rig.exchange(cli, order("t-1", tick_ns=now, sent_ns=now)
                 + order("t-2", tick_ns=2**63, sent_ns=2**63) + order("t-3"), 3)
    assert rig.om.tick_to_order.count == 1 and rig.om.send_to_order.count == 1


def test_without_a_token_a_broken_hello_is_refused_and_garbage_is_an_order(rigs):
    rig = rigs()
    meant = rig.client(None)
    refused = rig.exchange(meant, b'{"type": "hello", "version": "1", "client": "c1"}*')[0]
    assert refused == {"type": "refused",
                       "reason": "hello: version must be an integer, got '1'"}
    garbage = rig.client(None)
    first = rig.exchange(garbage, b"BUY,AAPL,10*")[0]
    assert first["type"] == "reject" and first["reason"].startswith("malformed order: ")
    again = rig.exchange(garbage, order("g-1"))[0]     # welcomed by that first frame
    assert again == {"type": "ack", "id": "g-1", "order_no": 1}
    assert rig.om.refused == 1


def test_json_with_a_mistake_is_told_the_mistake_and_the_format(rigs):
    rig = rigs()
    cli = rig.client("c1")
    reply = rig.exchange(cli, b'{"id": "j-1", *')[0]
    assert reply == {"type": "reject", "id": None, "reason": not_an_order_reason(
        b'{"id": "j-1", ', "malformed JSON: DecodeError: Input data was truncated")}


def test_a_failed_journal_commit_rejects_that_order_by_its_id(rigs, tmp_path, monkeypatch):
    """The journal's contract: OSError (no chunk can be made: disk full) means nothing was
    committed. The order is then rejected by its id, never acked, and trading halts."""
    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(journal_mod.Journal, "commit_order", full)   # bound at start
    rig = rigs()
    cli = rig.client("c1")
    reply = rig.exchange(cli, order("w-9"))[0]
    monkeypatch.undo()
    assert reply == {"type": "reject", "id": "w-9",
                     "reason": "order log write failed: [Errno 28] No space left on device"}
    assert rig.om.kill_switch and booked(tmp_path) == []


# --- the native desk (the fast path of a canonical order frame) -----------------------------------

def test_a_canonical_order_is_booked_by_the_desk_the_same_as_any_other(rigs, tmp_path):
    """What a Strategy's OrderClient sends (the encoder's own frame, under the hello's name)
    is booked by the native desk in one call: the same numbers, acks, records, positions and
    latency samples as the Python path, and a good order ends a malformed streak there too."""
    rig = rigs(**{"order_manager.max_bad_frames": 3})
    cli = rig.client("c1")
    mine = [order(f"n-{i}", client="c1", tick_ns=1, sent_ns=1) for i in (1, 2)]
    replies = rig.exchange(cli, mine[0] + order("p-3") + mine[1], 3)
    assert replies == [{"type": "ack", "id": "n-1", "order_no": 1},
                       {"type": "ack", "id": "p-3", "order_no": 2},
                       {"type": "ack", "id": "n-2", "order_no": 3}]
    stats = rig.om.stats()
    assert (stats["native_orders"], stats["orders"]) == (2, 3)
    assert [(r["order_no"], r["id"], r["client"]) for r in booked(tmp_path)] == [
        (1, "n-1", "c1"), (2, "p-3", "c1"), (3, "n-2", "c1")]
    assert rig.om.positions == {("c1", "AAPL"): 30} and rig.om.order_no == 3
    assert rig.om.booked == {("c1", "n-1"): 1, ("c1", "p-3"): 2, ("c1", "n-2"): 3}
    assert rig.om.tick_to_order.count == 2 and rig.om.send_to_order.count == 2   # stamped ones
    replies = rig.exchange(cli, b"nope*nope*" + order("n-4", client="c1") + b"nope*nope*", 5)
    assert kinds(replies) == ["reject", "reject", "ack", "reject", "reject"]
    assert rig.om.stats()["native_orders"] == 3 and rig.om.bad_clients == 0
