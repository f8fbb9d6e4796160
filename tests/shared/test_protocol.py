"""Serialization: both price forms, both news forms, orders and replies, and their rejections."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processes.shared.protocol import (
    MESSAGE_DELIMITER,
    Ack,
    Order,
    ProtocolError,
    Reject,
    Welcome,
    decode_hello,
    decode_json,
    decode_order,
    decode_reply,
    encode_ack,
    encode_order,
    encode_reject,
    format_news,
    parse_news,
    validate_order,
)

SYMBOLS = frozenset({"AAPL", "MSFT"})
pytestmark = pytest.mark.timeout(10)


def test_news_both_forms():
    assert parse_news(b"73") == (None, 73)
    assert parse_news(memoryview(b"AAPL,12")) == (b"AAPL", 12)
    assert format_news(None, 50) == b"50*"
    assert format_news(b"AAPL", 0) == b"AAPL,0*"


@pytest.mark.parametrize("frame", [b"", b"abc", b"101", b"-1", b",50", b"AAPL,5.5"])
def test_bad_news_frames(frame):
    with pytest.raises(ProtocolError):
        parse_news(frame)


def test_order_round_trip_and_delimiter_safety():
    order = Order(id="c*1-7", symbol="AAPL", side="BUY", qty=10, price=173.2,
                  client="evil*client", tick_ns=5, tick_seq=6, sent_ns=7)
    frame = encode_order(order)
    assert frame.endswith(MESSAGE_DELIMITER)
    assert frame.count(MESSAGE_DELIMITER) == 1, "a '*' in a string must not end the frame early"
    decoded = validate_order(decode_json(frame[:-1]), SYMBOLS)
    assert decoded == order


@pytest.mark.parametrize("change, reason", [
    ({"symbol": "XYZ"}, "unknown symbol"),
    ({"side": "HOLD"}, "bad side"),
    ({"qty": 0}, "qty"),
    ({"qty": -5}, "qty"),
    ({"qty": 1.5}, "qty"),
    ({"qty": True}, "qty"),
    ({"price": math.inf}, "price"),
    ({"price": "12"}, "price"),
    ({"price": -1}, "price"),
    ({"id": ""}, "order id"),
    ({"tick_ns": "x"}, "tick_ns"),
    ({"tick_ns": -1}, "tick_ns"),
    ({"sent_ns": 1 << 64}, "sent_ns"),
    ({"price": 10 ** 400}, "out of range"),
    ({"price": 1e300}, "price"),
    ({"qty": 1 << 70}, "qty"),
    ({"client": 7}, "client"),
])
def test_invalid_orders_are_rejected_with_a_reason(change, reason):
    obj = {"id": "a-1", "symbol": "AAPL", "side": "SELL", "qty": 3, "price": 10.0, **change}
    with pytest.raises(ProtocolError, match=reason):
        validate_order(obj, SYMBOLS)


@pytest.mark.parametrize("frame", [b"{", b"[1,2]", b"\xff\xfe", b"null", b"[" * 4000,
                                   b'{"price": ' + b"9" * 5000 + b"}"])
def test_malformed_json(frame):
    with pytest.raises(ProtocolError):
        decode_json(frame)


def test_replies():
    ack = json.loads(encode_ack("a-1", 12)[:-1])
    assert ack == {"type": "ack", "id": "a-1", "order_no": 12}
    rej = json.loads(encode_reject(None, "bad *thing*")[:-1])
    assert rej == {"type": "reject", "id": None, "reason": "bad *thing*"}
    assert encode_reject("x", "a*b").count(b"*") == 1


def test_frames_are_the_wire_format_byte_for_byte():
    """Today's frames, as every earlier Strategy and OrderManager wrote them."""
    order = Order(id="strat-1-42", client="strat-1", symbol="AAPL", side="BUY", qty=10,
                  price=171.23, tick_ns=17, tick_seq=4, sent_ns=19)
    assert encode_order(order) == (
        b'{"id":"strat-1-42","client":"strat-1","symbol":"AAPL","side":"BUY","qty":10,'
        b'"price":171.23,"tick_ns":17,"tick_seq":4,"sent_ns":19}*')
    assert encode_ack("a-1", 12) == b'{"type":"ack","id":"a-1","order_no":12}*'
    assert encode_reject(7, "x") == b'{"type":"reject","id":7,"reason":"x"}*'


def test_decode_order_names_the_rule_and_echoes_the_id():
    with pytest.raises(ProtocolError, match="bad order id") as err:
        decode_order(b'{"id":5,"symbol":"AAPL","side":"BUY","qty":1.5,"price":1}', SYMBOLS)
    assert err.value.id == 5
    with pytest.raises(ProtocolError, match="qty must be an integer") as err:
        decode_order(b'{"id":"a","symbol":"AAPL","side":"BUY","qty":1.5,"price":1}', SYMBOLS)
    assert err.value.id == "a"
    with pytest.raises(ProtocolError, match="malformed JSON") as err:
        decode_order(b'{"id":"a",', SYMBOLS)
    assert err.value.id is None
    # A frame in another spelling (whitespace, key order, escapes, an int price) is the same order.
    frame = b' { "price" : 10 , "qty" : 3 , "side" : "SELL", "symbol" : "A\\u0041PL", "id" : "x"}'
    assert decode_order(frame, frozenset({"AAPL"})) == Order(
        id="x", symbol="AAPL", side="SELL", qty=3, price=10.0)


def test_reply_decoding():
    assert decode_reply(b'{"type":"ack","id":"a-1","order_no":3}') == Ack("a-1", 3)
    assert decode_reply(b'{"order_no":3,"id":"a-1","type":"ack"}') == Ack("a-1", 3)
    assert decode_reply(encode_reject(None, "r")[:-1]) == Reject(None, "r")
    assert isinstance(decode_reply(b'{"type":"welcome","version":1,"client":"c"}'), Welcome)
    for bad in (b'{"type":"nope"}', b'{"type":"ack","id":"a"}', b"[]", b"{"):
        with pytest.raises(ProtocolError):
            decode_reply(bad)


# --- the order round trip: what we encode decodes to the same order -----------------------------
_names = st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True),
                   st.text(min_size=1, max_size=12))
_orders = st.builds(
    Order, id=_names, symbol=st.sampled_from(["AAPL", "MSFT", "X*Y"]),
    side=st.sampled_from(["BUY", "SELL"]), qty=st.integers(1, 10**6),
    price=st.floats(0.01, 1e9, allow_nan=False) | st.floats(1e-7, 1e-3), client=_names,
    tick_ns=st.integers(0, 2**63), tick_seq=st.integers(0, 2**40), sent_ns=st.integers(0, 2**63))


@settings(max_examples=400, deadline=None)
@given(_orders)
def test_order_round_trip_equals_json(order):
    frame = encode_order(order)
    assert frame.endswith(b"*") and frame.count(b"*") == 1
    body = frame[:-1]
    assert json.loads(body) == order.to_json()
    assert decode_order(body, frozenset({"AAPL", "MSFT", "X*Y"})) == order


@settings(max_examples=200, deadline=None)
@given(_names, st.integers(0, 2**63))
def test_ack_round_trip_equals_json(oid, order_no):
    body = encode_ack(oid, order_no)[:-1]
    assert body.count(b"*") == 0
    assert json.loads(body) == {"type": "ack", "id": oid, "order_no": order_no}
    assert decode_reply(body) == Ack(oid, order_no)


@pytest.mark.parametrize("frame", [b'{"version":1,"client":"c"}',
                                   b'{"version":1,"client":"c","token":""}',
                                   memoryview(b'{"client":"c","version":1}')])
def test_a_first_frame_without_the_hello_tag_is_not_a_hello(frame):
    """The typed decoder alone would read these as a Hello (it does not require the tag)."""
    with pytest.raises(ProtocolError, match="expected a hello first"):
        decode_hello(frame)
    assert decode_hello(memoryview(b'{"type":"hello","version":1,"client":"c"}')).client == "c"
