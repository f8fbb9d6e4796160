"""A non-blocking stream socket in a Reactor: framed reads, bounded buffered writes."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from .framing import FrameReader, FrameTooLarge
from .loop import Reactor

__all__ = ["Connection"]

_OVERFLOW_POLICIES = ("drop", "close")
# Once this much already-sent data sits at the front of the write buffer (and it is most of
# the buffer), cut it off so the buffer does not grow without bound under steady load.
_WBUF_COMPACT = 1 << 16


def _describe_peer(sock: socket.socket) -> str:
    try:
        addr = sock.getpeername()
    except OSError:
        return ""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) if addr else ""


class Connection:
    """A non-blocking TCP stream in a Reactor: framed reads, bounded buffered writes.

    ``overflow`` decides what a send that would push the write buffer past
    ``max_write_buffer`` does: "drop" discards that whole message (framing stays intact) and
    counts it; "close" drops the connection as a slow consumer.

    ``on_drain(conn)``, if set, runs each time queued output has all gone to the kernel: how a
    server learns that a slow consumer caught up (e.g. to send it a conflated snapshot).

    ``set_direct(writer)`` lends the socket to a native writer (an object with an ``fd``
    attribute, e.g. ext.OrderGate): its ``fd`` is the socket's while nothing is queued here and
    -1 otherwise (and from the close on), so its own non-blocking send() never overtakes queued
    bytes nor reaches a closed socket. What it cannot send whole it hands to send(), which
    sends what the kernel takes and queues the rest (taking the socket back until that has
    drained). Its bytes are not counted in ``bytes_out``.
    """

    __slots__ = (
        "reactor",
        "sock",
        "reader",
        "on_data",
        "on_close",
        "on_drain",
        "name",
        "peer",
        "closed",
        "bytes_out",
        "dropped_sends",
        "dropped_bytes",
        "max_write_buffer",
        "overflow",
        "_fd",
        "_started",
        "_send",
        "_recv_into",
        "_wbuf",
        "_woff",
        "_release",
        "_direct",
    )

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        *,
        on_frame: Callable[[memoryview], Any] | None = None,
        on_data: Callable[[bytearray, int, int], int] | None = None,
        on_close: Callable[[Connection, str | None], Any] | None = None,
        max_frame: int = 4096,
        read_capacity: int = 65536,
        max_write_buffer: int = 1 << 20,
        overflow: str = "drop",
        name: str = "",
    ) -> None:
        if overflow not in _OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {_OVERFLOW_POLICIES}, not {overflow!r}")
        sock.setblocking(False)
        try:
            # Frames are small and latency-bound: never let Nagle hold one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (e.g. a socketpair in tests)
        self.reactor = reactor
        self.sock = sock
        self.reader = FrameReader(on_frame, max_frame=max_frame, capacity=read_capacity)
        # Bulk consumer (see FrameReader.bulk_updated); when set, on_frame is not used.
        self.on_data = on_data
        self.on_close = on_close
        self.on_drain: Callable[[Connection], Any] | None = None
        self.name = name
        self.peer = _describe_peer(sock)
        self.closed = False
        self.bytes_out = 0
        self.dropped_sends = 0
        self.dropped_bytes = 0
        self.max_write_buffer = max_write_buffer
        self.overflow = overflow
        self._fd = sock.fileno()
        self._started = False
        self._send = sock.send
        self._recv_into = sock.recv_into
        self._wbuf = bytearray()  # empty exactly when nothing is pending
        self._woff = 0  # bytes of _wbuf already sent
        # Internal close hook for the owning Server/Dialer, called after on_close.
        self._release: Callable[[Connection, str | None], Any] | None = None
        self._direct: Any = None

    @property
    def on_frame(self) -> Callable[[memoryview], Any] | None:
        return self.reader.on_frame

    @on_frame.setter
    def on_frame(self, callback: Callable[[memoryview], Any] | None) -> None:
        """Replaceable at any time (from the next read on); None discards frames."""
        self.reader.on_frame = callback

    def set_direct(self, writer: Any) -> None:
        """Lend the socket to `writer` (None: to nobody), as the class says."""
        if self._direct is not None:
            self._direct.fd = -1
        self._direct = writer
        if writer is not None:
            writer.fd = -1 if self.closed or self._wbuf else self._fd

    # -- counters ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes queued but not yet accepted by the kernel."""
        return len(self._wbuf) - self._woff

    @property
    def bytes_in(self) -> int:
        return self.reader.bytes_in

    @property
    def frames_in(self) -> int:
        return self.reader.frames

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start reading (idempotent)."""
        if self._started or self.closed:
            return
        self._started = True
        self.reactor.add_reader(self._fd, self._read_ready)

    def close(self, reason: str | None = None) -> None:
        """Idempotent. Unsent data is discarded; on_close(conn, reason) runs once, reason None
        meaning an orderly EOF from the peer."""
        if self.closed:
            return
        self.closed = True
        if self._direct is not None:   # before the socket goes: its number may be reused
            self._direct.fd = -1
            self._direct = None
        reactor = self.reactor
        reactor.remove_reader(self._fd)
        reactor.remove_writer(self._fd)
        # Also stops a dispatch in progress, in case we are inside on_frame.
        self.reader.reset()
        self._wbuf = bytearray()
        self._woff = 0
        self.sock.close()
        self.on_drain = None
        on_close, self.on_close = self.on_close, None
        release, self._release = self._release, None
        try:
            if on_close is not None:
                on_close(self, reason)
        finally:
            if release is not None:
                release(self, reason)

    # -- reading -------------------------------------------------------------------------

    def _read_ready(self) -> None:
        # One recv per readable event: a 64 KiB buffer drains a burst in one call and a second
        # recv would almost always be a wasted EAGAIN syscall.
        reader = self.reader
        try:
            # reader.get_buffer() inlined: this runs once per readable event.
            n = self._recv_into(reader._view[reader._end :])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(str(exc) or type(exc).__name__)
            return
        if n:
            # Outside the OSError handler: an OSError from user code in on_frame must
            # propagate, not pose as a connection error.
            try:
                on_data = self.on_data
                if on_data is None:
                    reader.buffer_updated(n)
                else:
                    reader.bulk_updated(n, on_data)
            except FrameTooLarge as exc:
                self.close(f"frame too large: {exc}")
        else:
            self.close(None)

    # -- writing -------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        """Send now if nothing is queued, else queue. False when the message was dropped or
        the connection is (or just got) closed."""
        if self.closed:
            return False
        wbuf = self._wbuf
        size = len(data)
        if wbuf:
            if len(wbuf) - self._woff + size > self.max_write_buffer:
                return self._overflowed(size)
            wbuf += data
            return True
        if size > self.max_write_buffer:
            return self._overflowed(size)
        try:
            n = self._send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self.close(str(exc) or type(exc).__name__)
            return False
        self.bytes_out += n
        if n < size:
            wbuf += memoryview(data)[n:]
            self.reactor.add_writer(self._fd, self._write_ready)
            if self._direct is not None:
                self._direct.fd = -1
        return True

    def _overflowed(self, size: int) -> bool:
        if self.overflow == "drop":
            self.dropped_sends += 1
            self.dropped_bytes += size
        else:
            self.close(
                f"slow consumer: {self.pending} bytes pending + {size} > "
                f"max_write_buffer {self.max_write_buffer}"
            )
        return False

    def _write_ready(self) -> None:
        wbuf = self._wbuf
        woff = self._woff
        try:
            # The view must not outlive the call: an exported bytearray cannot be resized.
            with memoryview(wbuf) as mv:
                n = self._send(mv[woff:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(str(exc) or type(exc).__name__)
            return
        self.bytes_out += n
        woff += n
        if woff >= len(wbuf):
            wbuf.clear()
            self._woff = 0
            self.reactor.remove_writer(self._fd)
            if self._direct is not None:
                self._direct.fd = self._fd
            if self.on_drain is not None:
                self.on_drain(self)
        elif woff >= _WBUF_COMPACT and 2 * woff >= len(wbuf):
            del wbuf[:woff]
            self._woff = 0
        else:
            self._woff = woff

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pending={self.pending}"
        return f"<Connection {self.name or self.peer or self._fd} {state}>"
