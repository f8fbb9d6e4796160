"""Every bound of the order, news and reply grammar, on both sides of it, with the exact reason a
client is told: the order decoder's fast path and validate_order must agree at each edge."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from processes.shared import protocol
from processes.shared.protocol import (
    MAX_I64,
    MAX_PRICE,
    MAX_U64,
    ORDER_FORMAT,
    Order,
    ProtocolError,
    decode_hello,
    decode_json,
    decode_order,
    decode_reply,
    echo_id,
    encode_refused,
    encode_welcome,
    not_an_order_reason,
    parse_news,
    validate_hello,
    validate_order,
)

pytestmark = pytest.mark.timeout(30)
SYMBOLS = frozenset({"AAPL", "MSFT"})
BASE = {"id": "o-1", "symbol": "AAPL", "side": "BUY", "qty": 10, "price": 100.0}


def frame(**fields) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def both(**fields) -> tuple[Order, Order]:
    """The order as decode_order (fast path) and validate_order (the rules) read it."""
    return (decode_order(frame(**fields), SYMBOLS),
            protocol.validate_order({**BASE, **fields}, SYMBOLS))


def reason(**fields) -> str:
    """The one reason both paths give for a bad order (and the id decode_order echoes)."""
    with pytest.raises(ProtocolError) as fast:
        decode_order(frame(**fields), SYMBOLS)
    with pytest.raises(ProtocolError) as slow:
        validate_order({**BASE, **fields}, SYMBOLS)
    assert str(fast.value) == str(slow.value)
    assert fast.value.id == echo_id({**BASE, **fields}["id"])
    return str(fast.value)


@pytest.mark.parametrize("fields", [
    {"id": "x"}, {"id": "x" * 128}, {"qty": 1}, {"qty": MAX_I64}, {"price": 0.5},
    {"price": 1e-9}, {"price": MAX_PRICE}, {"price": 7}, {"client": ""}, {"client": "c" * 128},
    {"side": "SELL"}, {"symbol": "MSFT"},
    {"tick_ns": 0, "tick_seq": 0, "sent_ns": 0},
    {"tick_ns": MAX_U64, "tick_seq": MAX_U64, "sent_ns": MAX_U64},
    {"tick_ns": 1, "tick_seq": 2, "sent_ns": 3},
])
def test_orders_at_each_bound_are_accepted_the_same_by_both_paths(fields, monkeypatch):
    slow_calls = []
    real = protocol.validate_order
    monkeypatch.setattr(protocol, "validate_order",
                        lambda *a: (slow_calls.append(a), real(*a))[1])
    fast, slow = both(**fields)
    assert len(slow_calls) == 1, "a valid order must take the fast path (one call: both())"
    assert fast == slow
    for key, value in fields.items():
        assert getattr(fast, key) == value
    assert (fast.id, fast.qty, fast.price) == ({**BASE, **fields}["id"],
                                              {**BASE, **fields}["qty"],
                                              float({**BASE, **fields}["price"]))


def test_omitted_optional_fields_default_to_nothing():
    fast, slow = both()
    assert fast == slow
    assert (fast.client, fast.tick_ns, fast.tick_seq, fast.sent_ns) == ("", 0, 0, 0)


@pytest.mark.parametrize("fields, why", [
    ({"id": ""}, "bad order id '': it must be a string of 1..128 characters"),
    ({"id": "x" * 129}, f"bad order id '{'x' * 129}': it must be a string of 1..128 characters"),
    ({"id": 5}, "bad order id 5: it must be a string of 1..128 characters"),
    ({"symbol": "NOPE"}, "unknown symbol 'NOPE'"),
    ({"side": "buy"}, "bad side 'buy' (BUY or SELL)"),
    ({"side": "XBUYX"}, "bad side 'XBUYX' (BUY or SELL)"),
    ({"qty": 0}, "qty must be an integer > 0, got 0"),
    ({"qty": -1}, "qty must be an integer > 0, got -1"),
    ({"qty": MAX_I64 + 1}, "qty out of range"),
    ({"price": 0.0}, "price must be finite, > 0 and <= 1e+09, got 0.0"),
    ({"price": -1.0}, "price must be finite, > 0 and <= 1e+09, got -1.0"),
    ({"price": MAX_PRICE * (1 + 1e-15)},
     f"price must be finite, > 0 and <= 1e+09, got {MAX_PRICE * (1 + 1e-15)!r}"),
    ({"price": "1"}, "price must be a number, got '1'"),
    ({"client": "c" * 129}, "bad client, tick_ns, tick_seq or sent_ns field"),
    ({"tick_ns": -1}, "bad client, tick_ns, tick_seq or sent_ns field"),
    ({"tick_seq": -1}, "bad client, tick_ns, tick_seq or sent_ns field"),
    ({"sent_ns": -1}, "bad client, tick_ns, tick_seq or sent_ns field"),
    ({"tick_ns": MAX_U64 + 1}, "bad client, tick_ns, tick_seq or sent_ns field"),
    ({"tick_seq": MAX_U64 + 1}, "bad client, tick_ns, tick_seq or sent_ns field"),
    ({"sent_ns": MAX_U64 + 1}, "bad client, tick_ns, tick_seq or sent_ns field"),
])
def test_orders_past_each_bound_are_refused_with_the_same_reason_by_both_paths(fields, why):
    assert reason(**fields) == why


def test_a_huge_integer_price_is_out_of_range():
    big = "1" + "0" * 400
    with pytest.raises(ProtocolError, match="^price out of range$"):
        validate_order({**BASE, "price": int(big)}, SYMBOLS)
    with pytest.raises(ProtocolError, match="^price out of range$"):
        decode_order(frame()[:-1] + b', "price": ' + big.encode() + b"}", SYMBOLS)


def test_decode_json_says_what_is_wrong():
    with pytest.raises(ProtocolError) as exc:
        decode_json(b'{"id": ')
    assert str(exc.value) == "malformed JSON: DecodeError: Input data was truncated"
    with pytest.raises(ProtocolError) as exc:
        decode_json(b"[1, 2]")
    assert str(exc.value) == "expected a JSON object"
    with pytest.raises(ProtocolError) as exc:
        decode_json(b'"' + b"x" * 300)
    assert len(str(exc.value)) <= len("malformed JSON: DecodeError: ") + 100


def test_decode_reply_says_what_is_wrong():
    with pytest.raises(ProtocolError) as exc:
        decode_reply(b'{"type":"ack","id":5}')
    try:
        msgspec.json.decode(b'{"type":"ack","id":5}', type=protocol.Reply)
    except msgspec.ValidationError as why:
        expected = f"bad reply: ValidationError: {why}"
    assert str(exc.value) == expected


def test_echo_id_echoes_json_scalars_only():
    for oid in ("o-1", 7, True, None, 1.5, 2**70):
        assert echo_id(oid) == oid and type(echo_id(oid)) is type(oid)
    for oid in (math.nan, math.inf, [1], {"a": 1}):
        assert echo_id(oid) is None
    assert ProtocolError("why", id="o-9").id == "o-9"


@pytest.mark.parametrize("raw, got", [
    (b"AAPL,0", (b"AAPL", 0)), (b"AAPL,100", (b"AAPL", 100)), (b"55", (None, 55)),
])
def test_news_at_the_sentiment_bounds(raw, got):
    assert parse_news(raw) == got


@pytest.mark.parametrize("raw, why", [
    (b",50", "empty symbol in news frame"),
    (b"AAPL,101", "sentiment 101 outside 0..100"),
    (b"AAPL,-1", "sentiment -1 outside 0..100"),
    (b"AAPL,5x", "sentiment is not an integer: b'AAPL,5x'"),
    (b"A" * 70 + b",x", f"sentiment is not an integer: {(b'A' * 64)!r}"),
])
def test_bad_news_says_why(raw, why):
    with pytest.raises(ProtocolError) as exc:
        parse_news(raw)
    assert str(exc.value) == why


def test_a_decoded_order_is_its_own_json():
    order = decode_order(frame(client="c1", tick_ns=1, tick_seq=2, sent_ns=3), SYMBOLS)
    assert msgspec.json.decode(msgspec.json.encode(order.to_json())) == {
        **BASE, "client": "c1", "tick_ns": 1, "tick_seq": 2, "sent_ns": 3}


HELLO = {"type": "hello", "version": 1, "client": "c1", "token": "t"}


@pytest.mark.parametrize("fields", [
    {"client": "a"}, {"client": "x" * 64}, {"client": "A-z_0.9"}, {"token": ""},
    {"token": "t" * 256}, {"version": 0}, {"version": 99},
])
def test_hellos_at_each_bound_are_accepted_the_same_by_both_paths(fields, monkeypatch):
    obj = {**HELLO, **fields}
    slow = validate_hello(obj)
    monkeypatch.setattr(protocol, "validate_hello", lambda o: pytest.fail("slow path taken"))
    fast = decode_hello(json.dumps(obj, separators=(",", ":")).encode())   # as encode_hello
    assert fast == slow
    assert (fast.version, fast.client, fast.token) == (obj["version"], obj["client"],
                                                       obj["token"])


def test_a_hello_without_a_token_has_an_empty_one():
    obj = {k: v for k, v in HELLO.items() if k != "token"}
    assert validate_hello(obj).token == "" == decode_hello(json.dumps(obj).encode()).token


@pytest.mark.parametrize("fields, why", [
    ({"type": "order"}, "expected a hello first"),
    ({"version": "1"}, "hello: version must be an integer, got '1'"),
    ({"version": True}, "hello: version must be an integer, got True"),
    ({"version": None}, "hello: version must be an integer, got None"),
    ({"client": ""}, "hello: bad client name '' (1-64 of A-Z a-z 0-9 _ . -)"),
    ({"client": "x" * 65}, f"hello: bad client name '{'x' * 65}' (1-64 of A-Z a-z 0-9 _ . -)"),
    ({"client": "y" * 90}, f"hello: bad client name '{'y' * 80}' (1-64 of A-Z a-z 0-9 _ . -)"),
    ({"client": "a b"}, "hello: bad client name 'a b' (1-64 of A-Z a-z 0-9 _ . -)"),
    ({"client": 5}, "hello: bad client name '5' (1-64 of A-Z a-z 0-9 _ . -)"),
    ({"token": "t" * 257}, "hello: token must be a string of at most 256 characters"),
    ({"token": 5}, "hello: token must be a string of at most 256 characters"),
])
def test_bad_hellos_get_the_same_exact_reason_by_both_paths(fields, why):
    """Spelled with spaces, a hello goes the rule-by-rule way; spelled as encode_hello writes
    it, the typed decoder tries it first, then falls back to the rules for the reason."""
    obj = {**HELLO, **fields}
    compact = json.dumps(obj, separators=(",", ":")).encode()
    for parse in (lambda: validate_hello(obj), lambda: decode_hello(json.dumps(obj).encode()),
                  lambda: decode_hello(compact)):
        with pytest.raises(ProtocolError) as exc:
            parse()
        assert str(exc.value) == why


def test_a_hello_by_default_has_no_token_and_our_version():
    assert json.loads(protocol.encode_hello("c1")[:-1]) == {
        "type": "hello", "version": protocol.PROTOCOL_VERSION, "client": "c1", "token": ""}


def test_welcome_and_refused_frames_say_who_and_why():
    assert json.loads(encode_welcome("c1")[:-1]) == {"type": "welcome", "version": 1,
                                                    "client": "c1", "kill_switch": False}
    assert json.loads(encode_welcome("c1", True)[:-1])["kill_switch"] is True
    assert json.loads(encode_refused("no")[:-1]) == {"type": "refused", "reason": "no"}


def test_a_frame_that_is_not_json_is_told_the_order_format():
    csv = not_an_order_reason(b"BUY,AAPL,10,173.2", "malformed JSON: x")
    assert csv == f"malformed order: {b'BUY,AAPL,10,173.2'!r} is not JSON; an order is " \
                  f"{ORDER_FORMAT}"
    long = not_an_order_reason(b"Z" * 100, "d")
    assert f"{(b'Z' * 40)!r} is not JSON" in long
    meant = not_an_order_reason(b'  {"id": ', "malformed JSON: DecodeError: truncated")
    assert meant == f"malformed JSON: DecodeError: truncated; an order is {ORDER_FORMAT}"
