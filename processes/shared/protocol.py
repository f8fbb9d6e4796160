"""The wire protocol: every frame ends with MESSAGE_DELIMITER; this module parses and builds them.

Parsers take the `memoryview` a FrameReader hands out and raise ProtocolError with a reason a person
can act on; callers count and skip. Builders return complete frames, delimiter included.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

MESSAGE_DELIMITER = b"*"
PROTOCOL_VERSION = 1
SIDES = ("BUY", "SELL")
MAX_FRAME = 4096  # bytes; a longer frame closes the connection (see reactor.FrameReader)
MAX_PRICE = 1e9   # anything above is a feed error, and would overflow fixed-point maths downstream
MAX_U64 = (1 << 64) - 1
MAX_I64 = (1 << 63) - 1

_COMMA = b","
_NEEDS_ESCAPE = frozenset('"\\*')   # JSON specials, and the frame delimiter


class ProtocolError(ValueError):
    """A frame that cannot be understood; str(exc) is the reason."""


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


# --- orders and replies: one JSON object per frame ----------------------------------------------

@dataclass(slots=True)
class Order:
    id: str
    symbol: str
    side: str
    qty: int
    price: float
    client: str = ""
    tick_ns: int = 0   # Gateway send time of the tick that triggered it (CLOCK_MONOTONIC)
    tick_seq: int = 0
    sent_ns: int = 0   # Strategy send time

    def to_json(self) -> dict:
        return {"id": self.id, "client": self.client, "symbol": self.symbol, "side": self.side,
                "qty": self.qty, "price": self.price, "tick_ns": self.tick_ns,
                "tick_seq": self.tick_seq, "sent_ns": self.sent_ns}


def _frame_json(obj: dict) -> bytes:
    # '*' can only appear inside JSON strings, where \u002a is an equivalent escape: the frame never
    # contains the delimiter, whatever a client names itself.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace(
        "*", "\\u002a").encode() + MESSAGE_DELIMITER


# --- fast paths for the order round trip ---------------------------------------------------------
# Every order crosses encode_order -> decode_order -> encode_ack -> decode_ack, on a path where a
# Python process has just woken with cold caches and each microsecond of warm work costs several.
# Our own frames have plain ids and names, so they are formatted and matched without the json
# module; the regexes accept exactly the frames the formatters make (fixed key order, no
# whitespace, no escapes), for which json.loads would return the same values. Anything else
# (another client's spelling, escapes, extra keys) takes the full JSON path, same result.
_PLAIN = r"[A-Za-z0-9_.:-]{1,128}"
_UINT = r"(?:0|[1-9][0-9]{0,19})"
_ORDER_RE = re.compile(
    rb'\{"id":"(%s)","client":"(%s|)","symbol":"(%s)","side":"(BUY|SELL)","qty":(%s),'
    rb'"price":((?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,15})?),"tick_ns":(%s),"tick_seq":(%s),'
    rb'"sent_ns":(%s)\}' % (_PLAIN.encode(), _PLAIN.encode(), _PLAIN.encode(), _UINT.encode(),
                           _UINT.encode(), _UINT.encode(), _UINT.encode()))
_ACK_RE = re.compile(rb'\{"type":"ack","id":"(%s)","order_no":(%s)\}' % (_PLAIN.encode(),
                                                                         _UINT.encode()))
_PLAIN_RE = re.compile(_PLAIN)


def _plain(text: str) -> bool:
    return _PLAIN_RE.fullmatch(text) is not None


def encode_order(order: Order) -> bytes:
    if (_plain(order.id) and (not order.client or _plain(order.client)) and _plain(order.symbol)
            and order.side in SIDES and type(order.qty) is int and type(order.price) is float
            and math.isfinite(order.price)):
        return b'{"id":"%s","client":"%s","symbol":"%s","side":"%s","qty":%d,"price":%s,' \
               b'"tick_ns":%d,"tick_seq":%d,"sent_ns":%d}*' % (
                   order.id.encode(), order.client.encode(), order.symbol.encode(),
                   order.side.encode(), order.qty, repr(order.price).encode(), order.tick_ns,
                   order.tick_seq, order.sent_ns)
    return _frame_json(order.to_json())


def decode_order(frame: memoryview | bytes, symbols: frozenset[str] | set[str]) -> Order | None:
    """An Order from one of our own order frames, or None: then use decode_json +
    validate_order, which give the same Order for every frame this accepts."""
    m = _ORDER_RE.fullmatch(frame)
    if m is None:
        return None
    oid, client, symbol, side, qty, price, tick_ns, tick_seq, sent_ns = m.groups()
    sym = symbol.decode()
    q, p = int(qty), float(price)
    t, k, n = int(tick_ns), int(tick_seq), int(sent_ns)
    if (sym not in symbols or q <= 0 or q > MAX_I64 or not 0.0 < p <= MAX_PRICE
            or t > MAX_U64 or k > MAX_U64 or n > MAX_U64):
        return None  # let the full path produce the reject reason
    return Order(oid.decode(), sym, side.decode(), q, p, client.decode(), t, k, n)


def decode_ack(frame: memoryview | bytes) -> tuple[str, int] | None:
    """(id, order_no) of an ack frame as encode_ack makes it, else None (use decode_json)."""
    m = _ACK_RE.fullmatch(frame)
    return None if m is None else (m.group(1).decode(), int(m.group(2)))


def decode_json(frame: memoryview | bytes) -> dict:
    try:
        obj = json.loads(bytes(frame))
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and int-digit limits;
        # RecursionError is what deeply nested brackets ("[[[[...") raise.
        raise ProtocolError(f"malformed JSON: {type(exc).__name__}: {str(exc)[:100]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("expected a JSON object")
    return obj


def validate_order(obj: dict, symbols: frozenset[str] | set[str]) -> Order:
    """Check one decoded order; ProtocolError names the first rule it breaks."""
    oid = obj.get("id")
    if not isinstance(oid, str) or not oid or len(oid) > 128:
        raise ProtocolError(f"bad order id {oid!r}: it must be a string of 1..128 characters")
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
    if not isinstance(client, str) or len(client) > 128 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_U64 for v in ints):
        raise ProtocolError("bad client, tick_ns, tick_seq or sent_ns field")
    return Order(oid, symbol, side, qty, price, client, *ints)


def encode_ack(order_id: str, order_no: int) -> bytes:
    # The ack is on every order's critical path: a plain id (our own ids always are) needs no
    # JSON escaping, so skip json.dumps; anything else goes through it.
    if order_id.isascii() and order_id.isprintable() and not _NEEDS_ESCAPE.intersection(order_id):
        return b'{"type":"ack","id":"%s","order_no":%d}*' % (order_id.encode(), order_no)
    return _frame_json({"type": "ack", "id": order_id, "order_no": order_no})


def encode_reject(order_id: str | int | float | bool | None, reason: str) -> bytes:
    """A reject echoing the id as the client sent it (any JSON scalar; None if it had none)."""
    return _frame_json({"type": "reject", "id": order_id, "reason": reason})


# --- order-session handshake: hello -> welcome | refused ----------------------------------------
# An order client's first frame must be a hello; the OrderManager answers welcome (orders may
# follow) or refused (and closes). The version lets either side be upgraded without the other
# misreading its frames; the token keeps a stray or hostile local process from trading.

CLIENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the same rule as strategy.name
MAX_TOKEN = 256


@dataclass(slots=True)
class Hello:
    client: str
    token: str
    version: int


def encode_hello(client: str, token: str = "", version: int = PROTOCOL_VERSION) -> bytes:
    return _frame_json({"type": "hello", "version": version, "client": client, "token": token})


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
    return Hello(client, token, version)


def encode_welcome(client: str, kill_switch: bool = False) -> bytes:
    return _frame_json({"type": "welcome", "version": PROTOCOL_VERSION, "client": client,
                        "kill_switch": kill_switch})


def encode_refused(reason: str) -> bytes:
    return _frame_json({"type": "refused", "reason": reason})


# --- what a non-order frame is told (kept apart from the codec above, which may be replaced) ---

ORDER_FORMAT = ('one JSON object per frame, then "*": {"id": "o-1", "symbol": "AAPL", '
                '"side": "BUY" or "SELL", "qty": 10, "price": 173.25}')


def not_an_order_reason(frame: memoryview | bytes, detail: str) -> str:
    """The reject reason for a frame that is not a JSON object: the protocol, not the parser's
    complaint, because a client writing CSV (`BUY,AAPL,10,173.2`) needs to learn the format."""
    raw = bytes(frame)
    if raw.lstrip()[:1] == b"{":
        return f"{detail}; an order is {ORDER_FORMAT}"    # JSON meant, with a mistake in it
    return f"malformed order: {raw[:40]!r} is not JSON; an order is {ORDER_FORMAT}"
