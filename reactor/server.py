"""Listening TCP socket that turns accepted clients into Connections."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from .connection import Connection
from .loop import Reactor, Timer

__all__ = ["Server"]

# Out of fds or kernel memory: the client stays in the backlog and epoll would report the
# listener readable on every turn, so stop watching it for a while instead of spinning.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Server:
    """Listening TCP socket that wraps each accepted client in a Connection.

    ``on_accept(conn)`` runs before ``conn.start()`` so it can set on_frame/on_close;
    ``connection_kwargs`` go to every Connection. ``accept_retry`` is how long to stop
    accepting after running out of fds.
    """

    __slots__ = (
        "reactor",
        "host",
        "port",
        "connections",
        "accepted",
        "closed",
        "_sock",
        "_fd",
        "_on_accept",
        "_kwargs",
        "_accept_retry",
        "_retry",
    )

    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        on_accept: Callable[[Connection], Any],
        *,
        backlog: int = 128,
        accept_retry: float = 0.1,
        **connection_kwargs: Any,
    ) -> None:
        family, type_, proto, _, addr = socket.getaddrinfo(
            host or None, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        self.reactor = reactor
        self.host: str = bound[0]
        self.port: int = bound[1]
        self.connections: set[Connection] = set()
        self.accepted = 0
        self.closed = False
        self._sock = sock
        self._fd = sock.fileno()
        self._on_accept = on_accept
        self._kwargs = connection_kwargs
        self._accept_retry = accept_retry
        self._retry: Timer | None = None
        reactor.add_reader(self._fd, self._accept_ready)

    def _accept_ready(self) -> None:
        accept = self._sock.accept
        reactor = self.reactor
        while True:
            try:
                sock, _ = accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    reactor.remove_reader(self._fd)
                    self._retry = reactor.call_later(self._accept_retry, self._resume)
                    return
                raise
            self.accepted += 1
            try:
                conn = Connection(reactor, sock, **self._kwargs)
            except BaseException:
                sock.close()
                raise
            conn._release = self._forget
            self.connections.add(conn)
            try:
                self._on_accept(conn)
            except BaseException:
                conn.close("on_accept raised")
                raise
            conn.start()  # no-op if on_accept already closed it

    def _resume(self) -> None:
        self._retry = None
        if not self.closed:
            self.reactor.add_reader(self._fd, self._accept_ready)

    def _forget(self, conn: Connection, _reason: str | None) -> None:
        self.connections.discard(conn)

    def close(self) -> None:
        """Stop listening and close every live connection (reason "server closed")."""
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.reactor.remove_reader(self._fd)
        self._sock.close()
        for conn in list(self.connections):
            conn.close("server closed")

    def __repr__(self) -> str:
        return f"<Server {self.host}:{self.port} connections={len(self.connections)}>"
