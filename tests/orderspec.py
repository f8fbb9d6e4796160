"""An independent judge of order frames, written from the README's wire protocol alone.

Tests of the order codec and of the OrderManager compare what they see with this judge instead
of with processes.shared.protocol (which the OrderManager itself calls), so a bug in the codec
cannot agree with itself. It reads a frame with the standard library's json module, held to
strict JSON (UTF-8, no NaN or Infinity, no number beyond a double, no lone surrogate), and
applies the documented rules in the documented order: the first rule an order breaks is the
reason it is rejected with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_ID = 128           # characters of an order id and of a client name
MAX_PRICE = 1e9
MAX_QTY = 2 ** 63 - 1
MAX_STAMP = 2 ** 64 - 1
STAMPS = ("tick_ns", "tick_seq", "sent_ns")

# The reject reasons, by the rule broken: what each reason starts with.
MALFORMED = "malformed "        # not strict JSON ("malformed JSON: ...")
NOT_AN_OBJECT = "expected a JSON object"
BAD_ID = "bad order id "
UNKNOWN_SYMBOL = "unknown symbol "
BAD_SIDE = "bad side "
BAD_QTY = "qty must be an integer > 0"
BAD_PRICE = "price "            # "price must be a number", "... finite ...", "price out of range"
QTY_RANGE = "qty out of range"
BAD_FIELDS = "bad client, tick_ns, tick_seq or sent_ns field"


@dataclass(frozen=True)
class Verdict:
    """`fields` of the order that must be booked, or `reason` (its start) and the id the reject
    must echo."""

    fields: dict[str, Any] | None
    reason: str = ""
    echo: Any = None

    @property
    def valid(self) -> bool:
        return self.fields is not None


def strict_json(frame: bytes) -> Any:
    """The JSON value of `frame`; ValueError if it is not strict JSON."""
    def refuse(text: str) -> Any:
        raise ValueError(f"not strict JSON: {text}")

    def finite(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            raise ValueError(f"beyond a double: {text}")
        return value

    try:
        value = json.loads(frame.decode("utf-8"), parse_constant=refuse, parse_float=finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    _check_text(value)
    return value


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")     # a lone surrogate raises UnicodeEncodeError, a ValueError
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, list):
        for v in value:
            _check_text(v)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _echo(value: Any) -> Any:
    """The id a reject echoes: a JSON scalar as sent, anything else as null."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def judge(frame: bytes, symbols: frozenset[str] | set[str]) -> Verdict:
    """What the OrderManager must answer to one order frame (after the handshake)."""
    try:
        obj = strict_json(frame)
    except ValueError:
        return Verdict(None, MALFORMED)
    if not isinstance(obj, dict):
        return Verdict(None, NOT_AN_OBJECT)
    echo = _echo(obj.get("id"))

    def reject(reason: str) -> Verdict:
        return Verdict(None, reason, echo)

    oid = obj.get("id")
    if not (isinstance(oid, str) and 1 <= len(oid) <= MAX_ID):
        return reject(BAD_ID)
    if not (isinstance(obj.get("symbol"), str) and obj["symbol"] in symbols):
        return reject(UNKNOWN_SYMBOL)
    if obj.get("side") not in ("BUY", "SELL"):
        return reject(BAD_SIDE)
    qty = obj.get("qty")
    if not (_is_int(qty) and qty > 0):
        return reject(BAD_QTY)
    price = obj.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        return reject(BAD_PRICE)
    try:
        price = float(price)
    except OverflowError:        # an integer no double holds
        return reject(BAD_PRICE)
    if not (math.isfinite(price) and 0.0 < price <= MAX_PRICE):
        return reject(BAD_PRICE)
    if qty > MAX_QTY:
        return reject(QTY_RANGE)
    client = obj.get("client", "")
    stamps = [obj.get(k, 0) for k in STAMPS]
    if not (isinstance(client, str) and len(client) <= MAX_ID
            and all(_is_int(v) and 0 <= v <= MAX_STAMP for v in stamps)):
        return reject(BAD_FIELDS)
    return Verdict({"id": oid, "client": client, "symbol": obj["symbol"], "side": obj["side"],
                    "qty": qty, "price": price, **dict(zip(STAMPS, stamps, strict=True))})


class Book:
    """The replies an OrderManager owes one session, in order: a new valid id is booked with the
    next order number, a booked id is acked again with its number, anything else rejected."""

    def __init__(self, symbols: frozenset[str] | set[str], next_order_no: int = 1) -> None:
        self.symbols = symbols
        self.next_order_no = next_order_no
        self.booked: dict[tuple[str, str], int] = {}

    def reply(self, client: str, frame: bytes) -> tuple[Verdict, dict[str, Any]]:
        """The verdict on `frame` and the reply it must get (a reject's reason as its start)."""
        verdict = judge(frame, self.symbols)
        if not verdict.valid:
            # A frame that is not a JSON object is told the order format: "malformed JSON: ...;
            # an order is ..." or "malformed order: ... is not JSON; an order is ...".
            reason = MALFORMED if verdict.reason == NOT_AN_OBJECT else verdict.reason
            return verdict, {"type": "reject", "id": verdict.echo, "reason": reason}
        key = (client, verdict.fields["id"])
        if key not in self.booked:
            self.booked[key] = self.next_order_no
            self.next_order_no += 1
        return verdict, {"type": "ack", "id": key[1], "order_no": self.booked[key]}


def matches(reply: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a reply is the one owed: equal (the echoed id of the same JSON type too), but a
    reject's reason need only start with the rule's reason."""
    if reply.get("type") != want["type"] or set(reply) != set(want):
        return False
    if want["type"] == "ack":
        return reply == want
    return (reply["id"] == want["id"] and type(reply["id"]) is type(want["id"])
            and reply["reason"].startswith(want["reason"]))
