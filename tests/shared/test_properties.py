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

import msgspec
import orderspec
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


def _json_or_none(frame: bytes) -> object:
    """The frame's value as strict JSON reads it (tests/orderspec.py: UTF-8; no NaN, Infinity,
    numbers beyond a double or lone surrogates), or None: the reference every decoder here is
    checked against."""
    try:
        return orderspec.strict_json(frame)
    except ValueError:
        return None


@FAST
@given(st.binary(max_size=300)
       | order_like.map(lambda d: json.dumps(d, separators=(",", ":")).encode()))
def test_decode_order_is_validate_order_of_json_loads(frame):
    """For ANY bytes decode_order (the typed decoder, then the rule by rule path) either gives
    exactly the Order that json.loads + validate_order give, or raises the reason that
    validate_order gives; the id it echoes is the id as sent, if a scalar."""
    reference = _json_or_none(frame)
    try:
        order = protocol.decode_order(frame, SYMBOLS)
    except ProtocolError as exc:
        if not isinstance(reference, dict):
            assert exc.id is None
            return
        try:
            protocol.validate_order(reference, SYMBOLS)
        except ProtocolError as ref:
            assert str(exc) == str(ref)
            want = reference.get("id")
            assert exc.id == protocol.echo_id(want) and type(exc.id) is type(
                protocol.echo_id(want))
            return
        raise AssertionError(f"rejected ({exc}) what validate_order accepts") from None
    assert isinstance(reference, dict)
    assert order == protocol.validate_order(reference, SYMBOLS)


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decode_json_agrees_with_json_loads(frame):
    """decode_json accepts exactly the JSON objects strict json.loads reads, as the same object."""
    reference = _json_or_none(frame)
    try:
        obj = protocol.decode_json(frame)
    except ProtocolError:
        assert not isinstance(reference, dict)
        return
    assert obj == reference


@pytest.mark.parametrize("frame", [b'{"price":NaN}', b'{"price":Infinity}', b'{"price":1e400}',
                                   b'{"id":"\\ud800"}', b'\xef\xbb\xbf{}'])
def test_what_strict_json_refuses_is_malformed(frame):
    with pytest.raises(ProtocolError, match="malformed JSON"):
        protocol.decode_order(frame, SYMBOLS)


@FAST
@given(st.binary(max_size=120)
       | st.fixed_dictionaries({"type": st.sampled_from(["ack", "reject", "welcome", "refused"])},
                               optional={"id": json_values, "order_no": json_values,
                                         "reason": json_values, "version": json_values,
                                         "client": json_values, "kill_switch": json_values})
       .map(lambda d: json.dumps(d).encode()))
def test_decode_reply_any_bytes(frame):
    try:
        reply = protocol.decode_reply(frame)
    except ProtocolError as exc:
        assert str(exc)
        return
    obj = json.loads(frame.decode("utf-8", "replace"))   # unknown fields are not read
    assert obj["type"] == type(reply).__name__.lower()
    for key, value in msgspec.structs.asdict(reply).items():
        assert key in obj or key == "kill_switch"   # the one optional field
        assert value == obj.get(key, False) and type(value) is type(obj.get(key, False))


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
    hello = protocol.decode_hello(frame[:-1])
    assert (hello.client, hello.token, hello.version) == (client, token, version)
    assert hello == protocol.validate_hello(json.loads(frame[:-1]))


@FAST
@given(hello_like.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=100))
def test_decode_hello_is_validate_hello_of_json_loads(frame):
    reference = _json_or_none(frame)
    try:
        hello = protocol.decode_hello(frame)
    except ProtocolError as exc:
        if isinstance(reference, dict):
            try:
                protocol.validate_hello(reference)
            except ProtocolError as ref:
                assert str(exc) == str(ref)
                return
            raise AssertionError(f"refused ({exc}) what validate_hello accepts") from None
        return
    assert hello == protocol.validate_hello(reference)


# --- the typed fast paths, and the codec against an independent judge ----------------------------
# decode_order and decode_hello try msgspec's typed decoder first and fall back to the untyped,
# rule-by-rule path. Both give the same answer, so a fast path that never succeeds changes no
# result; what it changes is that every frame takes the slow path. The frames our own Strategy
# writes must be decoded by the typed decoder alone: with the slow path made to fail, they still
# decode.

_ids = st.text(min_size=1, max_size=128) | st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True)
canonical_orders = st.builds(
    protocol.Order, id=_ids, client=st.text(max_size=128), symbol=st.sampled_from(sorted(SYMBOLS)),
    side=st.sampled_from(protocol.SIDES), qty=st.integers(1, protocol.MAX_I64),
    price=st.floats(5e-324, protocol.MAX_PRICE), tick_ns=st.integers(0, protocol.MAX_U64),
    tick_seq=st.integers(0, protocol.MAX_U64), sent_ns=st.integers(0, protocol.MAX_U64))


def _slow_path_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args, **_kw):
        raise AssertionError("a canonical frame took the untyped slow path")
    for name in ("decode_json", "validate_order", "validate_hello"):
        monkeypatch.setattr(protocol, name, forbidden)


@FAST
@given(canonical_orders)
def test_an_encoded_order_is_decoded_by_the_typed_path_alone(order):
    frame = protocol.encode_order(order)[:-1]
    with pytest.MonkeyPatch.context() as mp:
        _slow_path_forbidden(mp)
        decoded = protocol.decode_order(frame, SYMBOLS)
    assert decoded == order and type(decoded.qty) is int and type(decoded.price) is float


@FAST
@given(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), st.text(max_size=256),
       st.integers(-(2**63), 2**63 - 1))
def test_an_encoded_hello_is_decoded_by_the_typed_path_alone(client, token, version):
    frame = protocol.encode_hello(client, token, version)[:-1]
    with pytest.MonkeyPatch.context() as mp:
        _slow_path_forbidden(mp)
        hello = protocol.decode_hello(frame)
    assert (hello.client, hello.token, hello.version) == (client, token, version)


# Orders of the typed decoder's shape (the right JSON types, no other key), any value in range or
# out of it: what the typed path must still check by value.
_edge_ints = st.integers() | st.sampled_from([0, 1, -1, protocol.MAX_I64, protocol.MAX_I64 + 1,
                                              protocol.MAX_U64, protocol.MAX_U64 + 1])
typed_shaped = st.fixed_dictionaries({
    "id": st.text(max_size=130) | st.sampled_from(["", "x" * 128, "x" * 129]),
    "symbol": st.sampled_from([*sorted(SYMBOLS), "ZZZ", "aapl", ""]),
    "side": st.sampled_from(["BUY", "SELL", "HOLD", "buy", ""]),
    "qty": _edge_ints,
    "price": st.floats(allow_nan=False, allow_infinity=False) | _edge_ints
    | st.sampled_from([0.0, -0.0, 5e-324, protocol.MAX_PRICE, 1000000000.0000001])},
    optional={"client": st.text(max_size=130), "tick_ns": _edge_ints, "tick_seq": _edge_ints,
              "sent_ns": _edge_ints})


@FAST
@given(st.binary(max_size=300)
       | order_like.map(lambda d: json.dumps(d, separators=(",", ":")).encode())
       | typed_shaped.map(lambda d: json.dumps(d, separators=(",", ":")).encode())
       | canonical_orders.map(lambda o: protocol.encode_order(o)[:-1]))
def test_decode_order_is_what_the_spec_says(frame):
    """For ANY bytes, decode_order gives exactly the order tests/orderspec.py (the documented
    rules, judged without this codec) says the frame is, or rejects it for the rule the spec
    names first, echoing the id as sent."""
    verdict = orderspec.judge(frame, SYMBOLS)
    try:
        order = protocol.decode_order(frame, SYMBOLS)
    except ProtocolError as exc:
        assert not verdict.valid, f"rejected ({exc}) a valid order {verdict.fields}"
        assert str(exc).startswith(verdict.reason), (str(exc), verdict.reason)
        assert exc.id == verdict.echo and type(exc.id) is type(verdict.echo), (exc.id, verdict)
        return
    assert verdict.valid, f"accepted {order} that the spec rejects ({verdict.reason})"
    assert msgspec.structs.asdict(order) == verdict.fields
    assert type(order.qty) is int and type(order.price) is float
