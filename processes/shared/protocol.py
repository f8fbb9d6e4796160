"""The wire protocol: every frame ends with MESSAGE_DELIMITER; this module parses and builds them.

Parsers take the `memoryview` a FrameReader hands out and raise ProtocolError with a reason a person
can act on; callers count and skip. Builders return complete frames, delimiter included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import msgspec

MESSAGE_DELIMITER = b"*"
PROTOCOL_VERSION = 1
SIDES = ("BUY", "SELL")
MAX_FRAME = 4096  # bytes; a longer frame closes the connection (see reactor.FrameReader)
MAX_PRICE = 1e9   # anything above is a feed error, and would overflow fixed-point maths downstream
MAX_U64 = (1 << 64) - 1
MAX_ID = 128      # characters of an order id (1..MAX_ID)
MAX_CLIENT = 128  # characters of an order's client field
MAX_I64 = (1 << 63) - 1

_COMMA = b","


class ProtocolError(ValueError):
    """A frame that cannot be understood; str(exc) is the reason.

    `id` is the rejected order's id as the client sent it when it is a JSON scalar (a client
    matches the reject to its order by that value, whatever its type), else None.
    """

    def __init__(self, reason: str, id: str | int | float | bool | None = None) -> None:  # noqa: A002
        super().__init__(reason)
        self.id = id


# --- news: SENTIMENT*  or  SYMBOL,SENTIMENT* -----------------------------------------------------

def parse_news(frame: memoryview | bytes) -> tuple[bytes | None, int]:
    """Return (symbol or None for market-wide, sentiment 0..100)."""
    raw = bytes(frame)
    sym, sep, value = raw.rpartition(_COMMA)
    if sep and not sym:
        raise ProtocolError("empty symbol in news frame")
    try:
        sentiment = int(value)
    except ValueError:
        raise ProtocolError(f"sentiment is not an integer: {raw[:64]!r}") from None
    if not 0 <= sentiment <= 100:
        raise ProtocolError(f"sentiment {sentiment} outside 0..100")
    return (sym if sep else None), sentiment


def format_news(symbol: bytes | None, sentiment: int) -> bytes:
    if symbol is None:
        return b"%d*" % sentiment
    return b"%s,%d*" % (symbol, sentiment)


# --- orders and replies: one JSON object per frame, one codec (msgspec) ------------------------
# Each message is a typed msgspec Struct: the decoder checks JSON types and required fields in C,
# our range rules follow in Python. Fields are declared in wire order, so a frame is exactly what
# the earlier codecs wrote (tags first: {"type":"ack",...}); a frame the typed decoder declines is
# decoded again untyped and checked rule by rule: it is accepted there if valid in another shape
# (extra keys), else the first rule it breaks is named. Replies accept unknown fields, so an
# OrderManager may add one without breaking older clients.
IdEcho = str | int | float | bool | None   # a JSON scalar id, echoed in a reject


# Order and Hello refuse unknown fields: the typed decoder skips an unknown field's value without
# checking it is valid UTF-8 or a finite number, so a frame with extra keys is left to the
# rule-by-rule path, which reads all of it.
class Order(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    client: str = ""
    symbol: str
    side: str
    qty: int
    price: float
    tick_ns: int = 0   # send time of the tick that triggered it, as the Strategy's book holds it:
                       # on the Strategy host's CLOCK_MONOTONIC (README, "Clocks")
    tick_seq: int = 0
    sent_ns: int = 0   # Strategy send time

    def to_json(self) -> dict:
        return msgspec.structs.asdict(self)


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    id: str
    order_no: int


class Reject(msgspec.Struct, tag="reject", tag_field="type"):
    id: IdEcho
    reason: str


class Hello(msgspec.Struct, kw_only=True, tag="hello", tag_field="type",
            forbid_unknown_fields=True):
    version: int
    client: str
    token: str = ""


class Welcome(msgspec.Struct, tag="welcome", tag_field="type"):
    version: int
    client: str
    kill_switch: bool = False


class Refused(msgspec.Struct, tag="refused", tag_field="type"):
    reason: str


Reply = Ack | Reject | Welcome | Refused

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_decode_order = msgspec.json.Decoder(Order).decode
_decode_hello = msgspec.json.Decoder(Hello).decode
_decode_reply = msgspec.json.Decoder(Reply).decode
_STAR, _STAR_ESCAPED = b"*", b"\\u002a"
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)   # ValidationError is a DecodeError


def _frame(msg: msgspec.Struct) -> bytes:
    # '*' can only appear inside JSON strings (keys and numbers never contain it), where \u002a
    # is an equivalent escape: the frame never contains the delimiter, whatever a client names
    # itself. replace() finds nothing in our own frames and then returns them as they are.
    return _encode(msg).replace(_STAR, _STAR_ESCAPED) + MESSAGE_DELIMITER


# The framer itself, not a function calling it: a Python call less on the way to the send.
encode_order: Callable[[Order], bytes] = _frame


def decode_json(frame: memoryview | bytes) -> dict:
    """The JSON object of a frame, untyped (what json.loads returns, for every frame it reads
    that is strict JSON: NaN, Infinity and numbers beyond a double are malformed here)."""
    try:
        obj = _decode_any(frame)
    except _DECODE_ERRORS as exc:
        # RecursionError is what deeply nested brackets ("[[[[...") raise.
        raise ProtocolError(f"malformed JSON: {type(exc).__name__}: {str(exc)[:100]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("expected a JSON object")
    return obj


def decode_order(frame: memoryview | bytes, symbols: frozenset[str] | set[str]) -> Order:
    """The Order of one order frame; ProtocolError names the first rule it breaks and carries
    the id to echo. Always the result of validate_order(decode_json(frame)), faster."""
    try:
        order = _decode_order(frame)
    except _DECODE_ERRORS:
        order = None
    if order is not None and _order_in_range(order, symbols):
        return order
    obj = decode_json(frame)
    try:
        return validate_order(obj, symbols)
    except ProtocolError as exc:
        exc.id = echo_id(obj.get("id"))
        raise


def _order_in_range(o: Order, symbols: frozenset[str] | set[str]) -> bool:
    """The rules of validate_order that the types do not state."""
    return (0 < len(o.id) <= MAX_ID and o.symbol in symbols
            and (o.side == "BUY" or o.side == "SELL") and 0 < o.qty <= MAX_I64
            and 0.0 < o.price <= MAX_PRICE and len(o.client) <= MAX_CLIENT
            and 0 <= o.tick_ns <= MAX_U64 and 0 <= o.tick_seq <= MAX_U64
            and 0 <= o.sent_ns <= MAX_U64)


def validate_order(obj: dict, symbols: frozenset[str] | set[str]) -> Order:
    """Check one decoded order; ProtocolError names the first rule it breaks."""
    oid = obj.get("id")
    if not isinstance(oid, str) or not oid or len(oid) > MAX_ID:
        raise ProtocolError(f"bad order id {oid!r}: it must be a string of 1..{MAX_ID} "
                            "characters")
    symbol = obj.get("symbol")
    if not isinstance(symbol, str) or symbol not in symbols:
        raise ProtocolError(f"unknown symbol {symbol!r}")
    side = obj.get("side")
    if side not in SIDES:
        raise ProtocolError(f"bad side {side!r} (BUY or SELL)")
    qty = obj.get("qty")
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        raise ProtocolError(f"qty must be an integer > 0, got {qty!r}")
    raw_price = obj.get("price")
    if isinstance(raw_price, bool) or not isinstance(raw_price, (int, float)):
        raise ProtocolError(f"price must be a number, got {raw_price!r}")
    try:
        price = float(raw_price)  # a 400-digit int raises OverflowError here, not later
    except OverflowError:
        raise ProtocolError("price out of range") from None
    if not (math.isfinite(price) and 0.0 < price <= MAX_PRICE):
        raise ProtocolError(f"price must be finite, > 0 and <= {MAX_PRICE:g}, got {price!r}")
    if qty > MAX_I64:
        raise ProtocolError("qty out of range")
    client = obj.get("client", "")
    ints = [obj.get(k, 0) for k in ("tick_ns", "tick_seq", "sent_ns")]
    if not isinstance(client, str) or len(client) > MAX_CLIENT or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_U64 for v in ints):
        raise ProtocolError("bad client, tick_ns, tick_seq or sent_ns field")
    return Order(id=oid, client=client, symbol=symbol, side=side, qty=qty, price=price,
                 tick_ns=ints[0], tick_seq=ints[1], sent_ns=ints[2])


def echo_id(oid: object) -> IdEcho:
    """The id of a rejected frame as the client sent it, if it is a JSON scalar. Objects and
    arrays are not echoed (they would let a client make our replies arbitrarily large)."""
    if isinstance(oid, str | int | bool) or oid is None:
        return oid
    if isinstance(oid, float) and math.isfinite(oid):
        return oid
    return None


def encode_ack(order_id: str, order_no: int) -> bytes:
    return _frame(Ack(order_id, order_no))


def encode_reject(order_id: IdEcho, reason: str) -> bytes:
    """A reject echoing the id as the client sent it (any JSON scalar; None if it had none)."""
    return _frame(Reject(order_id, reason))


def decode_reply(frame: memoryview | bytes) -> Reply:
    """An Ack, Reject, Welcome or Refused; ProtocolError for anything else."""
    try:
        return _decode_reply(frame)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"bad reply: {type(exc).__name__}: {str(exc)[:100]}") from None


# --- order-session handshake: hello -> welcome | refused ----------------------------------------
# An order client's first frame must be a hello; the OrderManager answers welcome (orders may
# follow) or refused (and closes). The version lets either side be upgraded without the other
# misreading its frames; the token keeps a stray or hostile local process from trading.

CLIENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the same rule as strategy.name
MAX_TOKEN = 256


def encode_hello(client: str, token: str = "", version: int = PROTOCOL_VERSION) -> bytes:
    return _frame(Hello(version=version, client=client, token=token))


_HELLO_TAG = b'{"type":"hello",'


def decode_hello(frame: memoryview | bytes) -> Hello:
    """The Hello of a first frame; ProtocolError names what is wrong. Always the result of
    validate_hello(decode_json(frame)).

    The typed decoder reads a tagged Struct without its tag as well, so it only gets frames
    that start with the tag as encode_hello writes it; any other spelling is checked rule by
    rule (where a frame with no "type" is not a hello)."""
    hello = None
    if frame[:len(_HELLO_TAG)] == _HELLO_TAG:
        try:
            hello = _decode_hello(frame)
        except _DECODE_ERRORS:
            hello = None
    if (hello is not None and CLIENT_NAME.fullmatch(hello.client)
            and len(hello.token) <= MAX_TOKEN):
        return hello
    return validate_hello(decode_json(frame))


def validate_hello(obj: dict) -> Hello:
    """Check a decoded hello's shape (not its token or version: the server decides those)."""
    if obj.get("type") != "hello":
        raise ProtocolError("expected a hello first")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(f"hello: version must be an integer, got {version!r}")
    client = obj.get("client")
    if not isinstance(client, str) or not CLIENT_NAME.fullmatch(client):
        raise ProtocolError(f"hello: bad client name {str(client)[:80]!r} "
                            "(1-64 of A-Z a-z 0-9 _ . -)")
    token = obj.get("token", "")
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise ProtocolError("hello: token must be a string of at most 256 characters")
    return Hello(version=version, client=client, token=token)


def encode_welcome(client: str, kill_switch: bool = False) -> bytes:
    return _frame(Welcome(PROTOCOL_VERSION, client, kill_switch))


def encode_refused(reason: str) -> bytes:
    return _frame(Refused(reason))


# --- what a non-order frame is told ------------------------------------------------------------

ORDER_FORMAT = ('one JSON object per frame, then "*": {"id": "o-1", "symbol": "AAPL", '
                '"side": "BUY" or "SELL", "qty": 10, "price": 173.25}')


def not_an_order_reason(frame: memoryview | bytes, detail: str) -> str:
    """The reject reason for a frame that is not a JSON object: the protocol, not the parser's
    complaint, because a client writing CSV (`BUY,AAPL,10,173.2`) needs to learn the format."""
    raw = bytes(frame)
    if raw.lstrip()[:1] == b"{":
        return f"{detail}; an order is {ORDER_FORMAT}"    # JSON meant, with a mistake in it
    return f"malformed order: {raw[:40]!r} is not JSON; an order is {ORDER_FORMAT}"
