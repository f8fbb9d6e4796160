"""The Strategy host's connection to the OrderManager: handshake, orders out, replies matched."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ext import OrderGate
from processes.shared.dead_peer import DEAD_PEER_SOCKOPTS
from processes.shared.protocol import (
    MAX_FRAME,
    Ack,
    Order,
    ProtocolError,
    Refused,
    Reject,
    Welcome,
    decode_reply,
    encode_hello,
    encode_order,
)
from processes.shared.telemetry import Recorder
from reactor import Backoff, Connection, Dialer, Reactor

LOGGED_PROBLEMS = 5  # bad replies and refusals logged one by one; the rest only counted


class OrderClient:
    """Connection to the OrderManager: handshake, orders out, acks and rejects matched to them.

    Delivery: an order is submitted once and stays in `pending` (insertion order = creation
    order) until the OrderManager acks or rejects it. It is written at once when a session is
    up (connected and welcomed); otherwise it waits there. After every (re)connect and welcome,
    ALL pending orders are (re)sent in order with their original ids, so an order is never
    lost to an OrderManager outage, and the OrderManager's dedup by id means a resend of an order
    it had already booked is only acked again (same order_no), never booked twice.

    Counters: `unsent` = distinct orders that had to wait because no session was up when they
    were made; `resent` = orders written again after a reconnect; `refusals` = handshakes the
    OrderManager refused (bad token or version: logged, and retried with the Dialer's backoff).
    """

    def __init__(self, reactor: Reactor, host: str, port: int,
                 on_reply: Callable[[Ack | Reject, Order, int], None], client: str = "",
                 token: str = "",
                 logger: logging.Logger | None = None, gate: OrderGate | None = None) -> None:
        self.on_reply = on_reply
        # An ext.OrderGate writing order frames straight to the socket, lent to it while a
        # session is up (Connection.set_direct says when it may write).
        self.gate = gate
        self.client = client
        self.token = token
        self.log = logger or logging.getLogger("strategy")
        # Read once: Logger.debug costs a call and a level check per order even when disabled.
        self.trace = self.log.isEnabledFor(logging.DEBUG)
        self._orders: dict[str, Order] = {}   # id -> order, oldest first (see `pending`)
        self.welcomed = False
        self.acks = 0
        self.rejects = 0
        self.bad_replies = 0
        self.unsent = 0
        self.resent = 0
        self.refusals = 0
        self._last_refusal = ""
        self.submit_to_sent = Recorder("submit_to_sent")   # submit() -> send() returned
        self.reply_handled = Recorder("reply_handled")     # reply read -> on_reply returned
        # overflow="close": an order that does not fit the write buffer must not vanish; the
        # close makes us reconnect and resend everything pending instead.
        self.dialer = Dialer(reactor, host, port, on_connect=self._on_connect,
                             on_disconnect=self._on_disconnect, on_frame=self._on_frame,
                             backoff=Backoff(), max_frame=MAX_FRAME, overflow="close",
                             sockopts=DEAD_PEER_SOCKOPTS)

    @property
    def pending(self) -> dict[str, Order]:
        """id -> every order not yet acked or rejected, oldest first."""
        self.settle()
        return self._orders

    @property
    def connected(self) -> bool:
        return self.dialer.connected and self.welcomed

    def start(self) -> None:
        self.dialer.start()

    def close(self) -> None:
        self.settle()
        self.dialer.close()

    def send_frame(self, frame: bytes) -> bool:
        """Write an order's frame now if a session is up (True: it went on the wire or is
        queued behind bytes already waiting)."""
        if not self.welcomed:
            return False
        conn = self.dialer.connection
        return conn is not None and conn.send(frame)

    def complete(self) -> None:
        """The gate made an order but wrote less than its whole frame (no session, EAGAIN, an
        error, or a part): the rest goes the usual way, after the part the kernel took."""
        gate = self.gate
        sent = self.send_frame(gate.frame()[gate.written:])
        if gate.unsettled:   # a send that closed the connection settled every order, unsent
            gate.sent_last(sent)

    def settle(self) -> None:
        """track() every order the gate made since the last settle, oldest first. The gate
        builds no Order on the way to the wire: its OrderManager shares the core and answers
        only once this process blocks, so the Order waits until something needs `pending`."""
        if self.gate is not None and self.gate.unsettled:
            for order, sent, took_ns in self.gate.take():
                self.track(order, sent, took_ns)

    def track(self, order: Order, sent: bool, took_ns: int) -> None:
        """Own `order` (whose frame went on the wire or is queued: `sent`) until it is acked or
        rejected; `took_ns`: from its submit to send() returned, for submit_to_sent."""
        self._orders[order.id] = order
        if sent:
            self.submit_to_sent.record(took_ns)
        else:
            self.unsent += 1
        if self.trace:  # after the send: a debug line never delays an order
            self.log.debug("order %s created: %s %d %s @ %.2f", order.id, order.side, order.qty,
                           order.symbol, order.price)

    def _on_connect(self, conn: Connection) -> None:
        self.settle()
        self.log.info("connected to order manager %s; saying hello as %s", conn.peer, self.client)
        self.welcomed = False
        conn.send(encode_hello(self.client, self.token))

    def _on_disconnect(self, reason: str | None) -> None:
        self.settle()
        self.welcomed = False
        if self.dialer.closed or (reason or "").startswith("refused"):
            return  # our own shutdown, or a refusal already logged
        self.log.warning("order manager lost (%s); %d orders unacknowledged, kept for resending; "
                    "reconnecting", reason or "closed by peer", len(self.pending))

    def _on_welcome(self, reply: Welcome) -> None:
        """Session up: resend every pending order, oldest first."""
        self.settle()
        self.welcomed = True
        self._last_refusal = ""
        conn = self.dialer.connection
        if reply.kill_switch:
            self.log.warning("order manager's kill switch is on: orders will be rejected")
        self.log.info("welcomed by order manager; resending %d unacknowledged orders",
                 len(self.pending))
        now = time.monotonic_ns()
        for order in list(self.pending.values()):
            if conn is None or conn.closed:
                return  # lost again (or overflowed): the next welcome resends the rest
            order.sent_ns = now  # this attempt's send time: order -> ack measures one try
            if conn.send(encode_order(order)):
                self.resent += 1
        if conn is not None and not conn.closed and self.gate is not None:
            conn.set_direct(self.gate)   # after the resends: its orders follow theirs

    def _on_refused(self, reply: Refused) -> None:
        self.settle()
        reason = reply.reason[:300]
        self.refusals += 1
        if self.refusals <= LOGGED_PROBLEMS or reason != self._last_refusal:
            self.log.error("order manager REFUSED this strategy: %s; retrying with backoff "
                      "(%d orders kept)", reason, len(self.pending))
        self._last_refusal = reason
        conn = self.dialer.connection
        if conn is not None:
            conn.close(f"refused: {reason}")  # the Dialer redials with its backoff

    def _on_frame(self, frame: memoryview) -> None:
        # The reply's arrival: its bytes are read from the socket, its decoding is our handling
        # of it. on_reply gets it as the time the ack (or reject) was received.
        start = time.monotonic_ns()
        self.settle()   # the orders this reply may answer
        try:
            reply = decode_reply(frame)
        except ProtocolError as exc:
            self._bad_reply(str(exc))
            return
        cls = type(reply)
        if cls is Ack or cls is Reject:
            oid = reply.id
            order = self._orders.pop(oid, None) if type(oid) is str else None
            if order is None:  # not ours, or answered already: a bad reply, not an ack
                self._bad_reply(f"reply for an unknown order: {str(reply)[:200]}")
                return
            if cls is Ack:
                self.acks += 1
            else:
                self.rejects += 1
            self.on_reply(reply, order, start)
            self.reply_handled.record(time.monotonic_ns() - start)
        elif cls is Welcome:
            self._on_welcome(reply)
        else:
            self._on_refused(reply)

    def _bad_reply(self, reason: str) -> None:
        self.bad_replies += 1
        if self.bad_replies <= LOGGED_PROBLEMS:
            self.log.warning("unreadable reply from order manager: %s", reason)
