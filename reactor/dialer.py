"""Outgoing TCP connection that keeps itself connected."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from .backoff import Backoff
from .connection import Connection
from .loop import Reactor, Timer

__all__ = ["Dialer"]

_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY})
STABLE_AFTER = 1.0  # seconds a connection must live before its loss restarts the backoff


class Dialer:
    """Outgoing TCP connection that reconnects with exponential backoff and jitter.

    on_connect(conn) runs before conn.start() (set on_frame there if it depends on the
    connection); on_disconnect(reason) runs when an established connection is lost (reason
    None = the peer closed cleanly) and also when close() drops it. Failed attempts only
    count in ``failures`` / ``last_error``. ``connect_timeout`` (None = the kernel's) bounds
    an attempt, since a SYN to a dead host can otherwise hang for minutes.

    The host is resolved with a blocking getaddrinfo at every attempt: use an IP literal or a
    name in /etc/hosts.
    """

    __slots__ = (
        "reactor",
        "host",
        "port",
        "on_connect",
        "on_disconnect",
        "on_frame",
        "backoff",
        "connect_timeout",
        "connection",
        "connected",
        "connects",
        "failures",
        "reconnects",
        "last_error",
        "closed",
        "_connected_at",
        "_kwargs",
        "_sockopts",
        "_started",
        "_pending",
        "_timer",
        "_deadline",
    )

    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        *,
        on_connect: Callable[[Connection], Any] | None = None,
        on_disconnect: Callable[[str | None], Any] | None = None,
        on_frame: Callable[[memoryview], Any] | None = None,
        backoff: Backoff | None = None,
        connect_timeout: float | None = 2.0,
        sockopts: tuple[tuple[int, int, int], ...] = (),
        **connection_kwargs: Any,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_frame = on_frame
        self.backoff = backoff if backoff is not None else Backoff()
        self.connect_timeout = connect_timeout
        self.connection: Connection | None = None
        self.connected = False
        self.connects = 0
        self.failures = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.closed = False
        self._connected_at = 0.0
        self._kwargs = connection_kwargs
        # (level, option, value) set on each socket before connect(): a receive buffer must be
        # sized then, because the window scale is agreed in the handshake.
        self._sockopts = sockopts
        self._started = False
        self._pending: socket.socket | None = None  # socket of the attempt in flight
        self._timer: Timer | None = None  # next attempt
        self._deadline: Timer | None = None  # connect_timeout of the attempt in flight

    def start(self) -> None:
        if self._started and not self.closed:
            return
        self._started = True
        self.closed = False
        self._attempt()

    def close(self) -> None:
        """Stop reconnecting and close the connection (or the attempt in flight)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._abort_attempt()
        if self.connection is not None:
            self.connection.close("dialer closed")

    # -- connecting ----------------------------------------------------------------------

    def _attempt(self) -> None:
        self._timer = None
        if self.closed:
            return
        try:
            family, type_, proto, _, addr = socket.getaddrinfo(
                self.host, self.port, 0, socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, type_, proto)
        except OSError as exc:
            self._failed(str(exc))
            return
        for level, option, value in self._sockopts:
            try:
                sock.setsockopt(level, option, value)
            except OSError:
                pass  # a tuning option; the connection works without it
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err == 0:
            self._established(sock)
        elif err in _IN_PROGRESS:
            self._pending = sock
            self.reactor.add_writer(sock.fileno(), self._connect_ready)
            if self.connect_timeout is not None:
                self._deadline = self.reactor.call_later(self.connect_timeout, self._timed_out)
        else:
            sock.close()
            self._failed(os.strerror(err))

    def _connect_ready(self) -> None:
        sock = self._pending
        if sock is None:
            return
        self._abort_attempt(close=False)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            self._failed(os.strerror(err))
        else:
            self._established(sock)

    def _timed_out(self) -> None:
        self._deadline = None
        if self._pending is not None:
            self._abort_attempt()
            self._failed("connect timeout")

    def _abort_attempt(self, close: bool = True) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        sock, self._pending = self._pending, None
        if sock is not None:
            self.reactor.remove_writer(sock.fileno())
            if close:
                sock.close()

    def _established(self, sock: socket.socket) -> None:
        try:
            # With the server down, a connect to a loopback port inside the ephemeral range
            # can pick that same port as its source and "succeed" via TCP simultaneous open.
            self_connected = sock.getsockname() == sock.getpeername()
        except OSError as exc:
            sock.close()
            self._failed(str(exc))
            return
        if self_connected:
            sock.close()
            self._failed("connected to itself")
            return
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self._connected_at = self.reactor.time()
        self.last_error = None
        conn = Connection(self.reactor, sock, on_frame=self.on_frame, **self._kwargs)
        conn._release = self._lost
        self.connection = conn
        self.connected = True
        if self.on_connect is not None:
            self.on_connect(conn)
        conn.start()

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self._schedule()

    def _lost(self, conn: Connection, reason: str | None) -> None:
        if conn is not self.connection:
            return
        self.connection = None
        self.connected = False
        self.last_error = reason
        # Reset the backoff only for a connection that lived: a peer that accepts and closes at
        # once would otherwise be redialled at the initial delay forever (a reconnect storm).
        if self.reactor.time() - self._connected_at >= STABLE_AFTER:
            self.backoff.reset()
        # Scheduled before the callback so that an exception in it cannot end reconnection
        # (and a close() from it cancels the attempt).
        self._schedule()
        if self.on_disconnect is not None:
            self.on_disconnect(reason)

    def _schedule(self) -> None:
        if not self.closed and self._timer is None:
            self._timer = self.reactor.call_later(self.backoff.next(), self._attempt)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self.closed else "connecting"
        return f"<Dialer {self.host}:{self.port} {state}>"
