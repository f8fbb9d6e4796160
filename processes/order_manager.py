"""OrderManager: TCP server for Strategy clients; validates, numbers, acknowledges and books orders.

The ack goes out before anything else is done for the order (log line, order-log write), so the
Strategy's order -> ack latency does not include our disk and console I/O.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import IO, Any

from processes import config as config_mod
from processes import runtime
from processes.protocol import (
    MAX_FRAME,
    Order,
    ProtocolError,
    decode_json,
    encode_ack,
    encode_reject,
    validate_order,
)
from processes.telemetry import Recorder
from reactor import Connection, Reactor, Server

log = logging.getLogger("order_manager")

LOGGED_REJECTS = 20  # rejects logged one by one; the rest only counted (a garbage flood
                     # must not turn into a console and disk flood that stalls every client)


class OrderManager:
    """Books every valid order exactly once per receipt and answers every frame."""

    def __init__(self, reactor: Reactor, cfg: config_mod.Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.symbols = frozenset(cfg.market.symbols)
        self.server: Server | None = None
        self.order_no = 0
        self.rejects = 0
        self.clients = 0
        self._log_file: IO[str] | None = None
        self.tick_to_order = Recorder("tick_to_order")   # Gateway send -> order received here
        self.send_to_order = Recorder("send_to_order")   # Strategy send -> received (one hop)

    def start(self) -> dict[str, Any]:
        path = Path(self.cfg.order_manager.order_log)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        net = self.cfg.network
        # overflow="close": a client that stops reading acks is closed, never silently
        # short of an ack for an order we booked.
        self.server = Server(self.reactor, net.host, net.order_port, self._on_client,
                             max_frame=MAX_FRAME, overflow="close")
        return {"order_port": self.server.port, "order_log": str(path)}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def recorders(self) -> tuple[Recorder, ...]:
        return (self.tick_to_order, self.send_to_order)

    def stats(self) -> dict[str, Any]:
        return {"orders": self.order_no, "rejects": self.rejects,
                "clients": len(self.server.connections) if self.server else 0}

    def _on_client(self, conn: Connection) -> None:
        self.clients += 1
        conn.on_frame = lambda frame: self._on_order(conn, frame)
        conn.on_close = self._on_close
        log.info("strategy client %s connected", conn.peer)

    def _on_close(self, conn: Connection, reason: str | None) -> None:
        log.info("strategy client %s gone (%s)", conn.peer, reason or "closed by peer")

    def _on_order(self, conn: Connection, frame: memoryview) -> None:
        received_ns = time.monotonic_ns()
        try:
            obj = decode_json(frame)
        except ProtocolError as exc:
            self._reject(conn, None, str(exc))
            return
        try:
            order = validate_order(obj, self.symbols)
        except ProtocolError as exc:
            oid = obj.get("id")
            self._reject(conn, oid if isinstance(oid, str) else None, str(exc))
            return
        self.order_no += 1
        conn.send(encode_ack(order.id, self.order_no))
        if order.tick_ns:
            self.tick_to_order.record(received_ns - order.tick_ns)
        if order.sent_ns:
            self.send_to_order.record(received_ns - order.sent_ns)
        self._book(order, self.order_no, received_ns, conn.peer)

    def _book(self, order: Order, order_no: int, received_ns: int, peer: str) -> None:
        log.info("Received Order %d: %s %d %s @ %.2f", order_no, order.side, order.qty,
                 order.symbol, order.price)
        record = {"order_no": order_no, "received_ns": received_ns, "peer": peer,
                  **order.to_json()}
        if self._log_file is not None:
            self._log_file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._log_file.flush()

    def _reject(self, conn: Connection, order_id: str | None, reason: str) -> None:
        self.rejects += 1
        conn.send(encode_reject(order_id, reason))
        if self.rejects <= LOGGED_REJECTS:
            log.warning("rejected order %s from %s: %s", order_id, conn.peer, reason)
        elif self.rejects == LOGGED_REJECTS + 1:
            log.warning("more rejects follow; only counted from now on (see the stats line)")


def run(cfg: config_mod.Config, ready: Any = None, supervised: bool = False) -> int:
    return runtime.serve("order_manager", cfg, lambda r: OrderManager(r, cfg), ready,
                         supervised=supervised)


def main(argv: list[str] | None = None) -> int:
    cfg = runtime.cli("order_manager", "Order server: validates, acknowledges and logs orders.",
                      ("order_manager",), argv, extra=(("network", "order_port"),))
    return 0 if cfg is None else run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
