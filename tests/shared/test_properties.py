"""Property tests (hypothesis) of every parser a peer's bytes reach: for ANY input, a parser returns
a well-formed value or raises its one documented error with a reason, never anything else. A
process counts and skips what raises; anything else escaping would kill it.

The framer is checked against a reference model (bytes.split), through both of its consumers (a
Python callback per frame, and a bulk consumer per read), for any split of the stream into reads.
ext.PriceFeedDecoder's properties are in test_wire.py; the live fuzz of each port in
test_hostile.py.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processes.shared import protocol
from processes.shared.protocol import ProtocolError
from reactor import FrameReader, FrameTooLarge

SYMBOLS = frozenset({"AAPL", "MSFT", "GOOG"})
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values of any shape, as a hostile client could send them.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=20)
# Dicts that look like orders or hellos, with any value in any field.
order_like = st.fixed_dictionaries({}, optional={
    "id": json_values | st.text(max_size=140), "symbol": json_values | st.sampled_from(
        sorted(SYMBOLS)), "side": json_values | st.sampled_from(["BUY", "SELL"]),
    "qty": json_values, "price": json_values, "client": json_values, "tick_ns": json_values,
    "tick_seq": json_values, "sent_ns": json_values, "type": json_values})
hello_like = st.fixed_dictionaries({}, optional={
    "type": st.just("hello") | json_values, "version": json_values,
    "client": json_values | st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    "token": json_values})


# --- the framer ----------------------------------------------------------------------------------

def _reference(stream: bytes, max_frame: int) -> tuple[list[bytes], bool]:
    """(the non-empty frames a correct framer delivers, whether it must give up as too long)."""
    *complete, tail = stream.split(b"*")
    frames = []
    for piece in complete:
        if len(piece) > max_frame:
            return frames, True
        if piece:
            frames.append(piece)
    return frames, len(tail) > max_frame


def _bulk(out: list[bytes], max_frame: int):
    """A bulk consumer with PriceFeedDecoder's contract: complete frames are its own to parse
    and bound (ValueError for one over max_frame); FrameReader bounds the unterminated tail."""
    def consume(buf: bytearray, start: int, end: int) -> int:
        pos = start
        while (d := buf.find(b"*", pos, end)) >= 0:
            if d - pos > max_frame:
                raise ValueError(f"frame of {d - pos} bytes")
            if d > pos:
                out.append(bytes(buf[pos:d]))
            pos = d + 1
        return pos
    return consume


@FAST
@given(stream=st.lists(st.binary(max_size=40) | st.just(b"*") | st.just(b"**"), max_size=60)
       .map(b"".join),
       cuts=st.lists(st.integers(1, 64), max_size=80), max_frame=st.integers(1, 48),
       bulk=st.booleans())
def test_framer_delivers_exactly_the_reference_frames(stream, cuts, max_frame, bulk):
    """Any bytes, any split into reads, either consumer: the frames of bytes.split, in order,
    and FrameTooLarge exactly when the reference has a frame (or tail) over max_frame."""
    got: list[bytes] = []
    reader = FrameReader(lambda mv: got.append(mv.tobytes()), max_frame=max_frame,
                         capacity=2 * max_frame + 8)
    consume = _bulk(got, max_frame)
    want, too_long = _reference(stream, max_frame)
    raised = False
    pos, k = 0, 0
    try:
        while pos < len(stream):
            free = reader.get_buffer()
            n = min(len(free), len(stream) - pos, cuts[k % len(cuts)] if cuts else len(free))
            k += 1
            free[:n] = stream[pos:pos + n]
            pos += n
            if bulk:
                reader.bulk_updated(n, consume)
            else:
                reader.buffer_updated(n)
    except FrameTooLarge:
        raised = True
    if raised:
        assert too_long and got == want[:len(got)]
    else:
        assert not too_long and got == want


# --- prices and news -----------------------------------------------------------------------------

@FAST
@given(st.binary(max_size=60))
def test_parse_news_any_bytes(frame):
    try:
        sym, value = protocol.parse_news(frame)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert 0 <= value <= 100 and (sym is None or (isinstance(sym, bytes) and sym))


@FAST
@given(st.none() | st.from_regex(rb"[A-Z]{1,8}", fullmatch=True), st.integers(0, 100))
def test_news_round_trip(sym, value):
    frame = protocol.format_news(sym, value)
    assert protocol.parse_news(frame[:-1]) == (sym, value)


# --- JSON: orders, replies, hellos ---------------------------------------------------------------

@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decode_json_any_bytes(frame):
    try:
        obj = protocol.decode_json(frame)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert isinstance(obj, dict)


def test_decode_json_deep_nesting_and_huge_numbers():
    for frame in (b"[" * 100_000, b'{"a":' * 50_000, b"1" * 5000, b'{"qty":' + b"9" * 5000 + b"}"):
        with pytest.raises(ProtocolError):
            protocol.decode_json(frame)


@FAST
@given(order_like)
def test_validate_order_any_dict(obj):
    try:
        order = protocol.validate_order(obj, SYMBOLS)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert order.symbol in SYMBOLS and order.side in protocol.SIDES
    assert type(order.qty) is int and 0 < order.qty <= protocol.MAX_I64
    assert math.isfinite(order.price) and 0 < order.price <= protocol.MAX_PRICE
    # What validates also survives our own encoding, delimiter-safe, unchanged.
    frame = protocol.encode_order(order)
    assert frame.count(b"*") == 1 and frame.endswith(b"*")
    assert protocol.validate_order(protocol.decode_json(frame[:-1]), SYMBOLS) == order


@FAST
@given(st.binary(max_size=300)
       | order_like.map(lambda d: json.dumps(d, separators=(",", ":")).encode()))
def test_order_fast_path_never_disagrees_with_json(frame):
    """For ANY bytes the regex fast path either declines (None) or gives exactly the Order
    that decode_json + validate_order give (test_protocol checks it on our own orders)."""
    fast = protocol.decode_order(frame, SYMBOLS)
    if fast is None:
        return
    assert fast == protocol.validate_order(protocol.decode_json(frame), SYMBOLS)


@FAST
@given(st.binary(max_size=120))
def test_ack_fast_path_never_disagrees_with_json(frame):
    fast = protocol.decode_ack(frame)
    if fast is None:
        return
    obj = protocol.decode_json(frame)
    assert obj == {"type": "ack", "id": fast[0], "order_no": fast[1]}


@FAST
@given(hello_like)
def test_validate_hello_any_dict(obj):
    try:
        hello = protocol.validate_hello(obj)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert protocol.CLIENT_NAME.fullmatch(hello.client)
    assert isinstance(hello.version, int) and len(hello.token) <= protocol.MAX_TOKEN


@FAST
@given(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), st.text(max_size=256),
       st.integers(-(2**40), 2**40))
def test_hello_round_trip(client, token, version):
    frame = protocol.encode_hello(client, token, version)
    assert frame.count(b"*") == 1 and frame.endswith(b"*")
    hello = protocol.validate_hello(protocol.decode_json(frame[:-1]))
    assert (hello.client, hello.token, hello.version) == (client, token, version)
