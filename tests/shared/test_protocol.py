"""Serialization: both price forms, both news forms, orders and replies, and their rejections."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processes.shared.protocol import (
    MESSAGE_DELIMITER,
    Order,
    ProtocolError,
    decode_ack,
    decode_json,
    decode_order,
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
    order = Order("c*1-7", "AAPL", "BUY", 10, 173.2, client="evil*client", tick_ns=5,
                  tick_seq=6, sent_ns=7)
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


# --- the order round trip's fast paths agree with the JSON path ----------------------------------
_names = st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True),
                   st.text(min_size=1, max_size=12))
_orders = st.builds(
    Order, id=_names, symbol=st.sampled_from(["AAPL", "MSFT", "X*Y"]),
    side=st.sampled_from(["BUY", "SELL"]), qty=st.integers(1, 10**6),
    price=st.floats(0.01, 1e9, allow_nan=False) | st.floats(1e-7, 1e-3), client=_names,
    tick_ns=st.integers(0, 2**63), tick_seq=st.integers(0, 2**40), sent_ns=st.integers(0, 2**63))


@settings(max_examples=400, deadline=None)
@given(_orders)
def test_order_fast_paths_equal_the_json_path(order):
    frame = encode_order(order)
    assert frame.endswith(b"*") and frame.count(b"*") == 1
    body = frame[:-1]
    assert decode_json(body) == order.to_json()
    symbols = frozenset({"AAPL", "MSFT", "X*Y"})
    fast = decode_order(body, symbols)
    try:
        slow = validate_order(decode_json(body), symbols)
    except ProtocolError:
        slow = None
    assert fast is None or fast == slow   # None = "take the JSON path", never a different order


@settings(max_examples=200, deadline=None)
@given(_names, st.integers(0, 2**63))
def test_ack_fast_path_equals_the_json_path(oid, order_no):
    body = encode_ack(oid, order_no)[:-1]
    fast = decode_ack(body)
    assert decode_json(body) == {"type": "ack", "id": oid, "order_no": order_no}
    assert fast is None or fast == (oid, order_no)
