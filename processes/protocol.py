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


class ProtocolError(ValueError):
    """A frame that cannot be understood; str(exc) is the reason."""


# --- prices: SYMBOL,PRICE*  or  SYMBOL,PRICE,SEQ,SENT_NS* -----------------------------------------

def parse_price(frame: memoryview | bytes) -> tuple[bytes, float, int, int]:
    """(symbol, price, tick_seq, sent_ns); seq and sent_ns are 0 in the plain 2-field form."""
    parts = bytes(frame).split(_COMMA)
    n = len(parts)
    try:
        if n == 4:
            price = float(parts[1])
            seq = int(parts[2])
            sent_ns = int(parts[3])
        elif n == 2:
            price = float(parts[1])
            seq = sent_ns = 0
        else:
            raise ProtocolError(f"price frame needs 2 or 4 fields, got {n}")
    except ValueError as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"bad number in price frame {bytes(frame)[:64]!r}") from None
    if not 0.0 < price <= MAX_PRICE:  # also rejects nan and inf
        raise ProtocolError(f"price must be finite, > 0 and <= {MAX_PRICE:g}, got {price!r}")
    # Bounded here so they fit the shared-memory slot (u64 seq, i64 ns) instead of failing there.
    if not (0 <= seq <= MAX_U64 and 0 <= sent_ns <= MAX_I64):
        raise ProtocolError("sequence or timestamp out of range")
    sym = parts[0]
    if not sym:
        raise ProtocolError("empty symbol")
    return sym, price, seq, sent_ns


def format_price(symbol: bytes, price: float, seq: int = 0, sent_ns: int = 0,
                 plain: bool = False) -> bytes:
    if plain:
        return b"%s,%.2f*" % (symbol, price)
    return b"%s,%.2f,%d,%d*" % (symbol, price, seq, sent_ns)


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


def encode_order(order: Order) -> bytes:
    return _frame_json(order.to_json())


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
        raise ProtocolError("missing or bad order id")
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
    return _frame_json({"type": "ack", "id": order_id, "order_no": order_no})


def encode_reject(order_id: str | None, reason: str) -> bytes:
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
