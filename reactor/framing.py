"""Delimiter framing over one preallocated receive buffer.

The buffer is a single bytearray filled with ``recv_into``; frames are handed out as
memoryview slices of it, so the only per-frame allocation is the slice object itself.
Layout: ``[0, start)`` consumed, ``[start, end)`` the partial frame, ``[end, capacity)`` free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FrameReader", "FrameTooLarge"]


class FrameTooLarge(Exception):
    """A frame exceeded max_frame bytes; the stream cannot be resynchronised."""


def _discard(_frame: memoryview) -> None:
    pass


class FrameReader:
    """Zero-copy framing: recv_into a preallocated buffer, hand out memoryview slices of
    each delimited frame.

    A frame's memoryview excludes the delimiter and is valid only during on_frame: the
    bytes under it are overwritten by later reads (``mv.tobytes()`` copies it, faster than
    ``bytes(mv)``).
    """

    __slots__ = (
        "_on_frame",
        "frames",
        "bytes_in",
        "empty_frames",
        "_max_frame",
        "_capacity",
        "_delimiter",
        "_buf",
        "_view",
        "_start",
        "_end",
        "_scan",
        "_gen",
        "_dlen",
        "_compact_at",
        "_consts",
    )

    def __init__(
        self,
        on_frame: Callable[[memoryview], Any] | None,
        max_frame: int = 4096,
        capacity: int = 65536,
        delimiter: bytes = b"*",
    ) -> None:
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        if max_frame < max(1, len(delimiter)):
            raise ValueError("max_frame must be >= 1 and >= len(delimiter)")
        if capacity < 2 * max_frame:
            raise ValueError("capacity must be >= 2 * max_frame")
        self._on_frame = on_frame if on_frame is not None else _discard
        self.frames = 0
        self.bytes_in = 0
        self.empty_frames = 0
        self._max_frame = max_frame
        self._capacity = capacity
        self._delimiter = bytes(delimiter)
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._scan = 0  # no delimiter starts in [start, scan): don't search it again
        self._gen = 0  # bumped by reset(): tells a running dispatch to stop
        self._dlen = len(delimiter)
        # Once the free tail is smaller than one frame, move the partial frame (< max_frame +
        # len(delimiter) bytes) to the front. Waiting longer would only make recv_into calls
        # smaller; moving sooner would copy more often.
        self._compact_at = capacity - max_frame
        # Unpacked in one go by buffer_updated (one tuple unpack beats five attribute loads,
        # and caches the bound find).
        self._consts = (self._buf.find, self._delimiter, self._view, max_frame, self._dlen)

    # Fixed at construction (the buffer and _consts depend on them).
    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def delimiter(self) -> bytes:
        return self._delimiter

    @property
    def on_frame(self) -> Callable[[memoryview], Any]:
        return self._on_frame

    @on_frame.setter
    def on_frame(self, callback: Callable[[memoryview], Any] | None) -> None:
        """Replaceable at any time; takes effect from the next buffer_updated() call."""
        self._on_frame = callback if callback is not None else _discard

    @property
    def pending(self) -> int:
        """Bytes of the partial frame held."""
        return self._end - self._start

    def get_buffer(self) -> memoryview:
        """Writable free tail of the buffer (never empty while the reader is valid)."""
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> int:
        """Account ``nbytes`` written at the start of get_buffer() and dispatch every frame
        they complete. Returns the number of frames dispatched.

        Raises FrameTooLarge when a frame exceeds max_frame bytes; the caller should then
        drop the stream (reset() makes the reader reusable).
        """
        end = self._end + nbytes
        if end > self._capacity:
            raise ValueError(f"buffer_updated({nbytes}) overruns the free buffer")
        self.bytes_in += nbytes
        find, delim, view, max_frame, dlen = self._consts
        start = self._start
        pos = find(delim, self._scan, end)
        if pos < 0:
            # A frame still in flight: bookkeeping only.
            self._settle(start, end)
            return 0
        on_frame = self._on_frame
        gen = self._gen
        n = 0
        try:
            while True:
                if pos == start:
                    self.empty_frames += 1
                    start += dlen
                else:
                    if pos - start > max_frame:
                        self.reset()
                        raise FrameTooLarge(f"{pos - start} bytes > max_frame {max_frame}")
                    mv = view[start:pos]
                    # Consumed before the call: a raising handler must not get it again.
                    start = pos + dlen
                    n += 1
                    on_frame(mv)
                    if self._gen != gen:
                        # on_frame reset the reader (e.g. closed its connection): the rest of
                        # this read is stale.
                        self.frames += n
                        return n
                if start == end:
                    break  # reads usually end on a frame boundary: skip a futile find
                pos = find(delim, start, end)
                if pos < 0:
                    break
        except BaseException:
            # except rather than finally: free on the normal path, which then stores its
            # state once below.
            self.frames += n
            if self._gen == gen:
                # on_frame raised: keep the unconsumed rest for the next read to dispatch.
                self._start = self._scan = start
                self._end = end
            raise
        self.frames += n
        if start == end:
            # Everything consumed (the usual case): restart at the front for free.
            self._start = self._end = self._scan = 0
        else:
            self._settle(start, end)
        return n

    def bulk_updated(self, nbytes: int, consume: Callable[[bytearray, int, int], int]) -> int:
        """Account ``nbytes`` and hand every unconsumed byte to ``consume(buf, start, end)``,
        which parses the complete frames itself and returns the offset where it stopped.

        For a native decoder: one call per read instead of one Python call per frame. The
        remainder is the partial frame, bounded exactly as in buffer_updated(). A ValueError
        from ``consume`` (e.g. its own frame-too-long) means the stream cannot be trusted and
        is re-raised as FrameTooLarge. Returns the bytes consumed.
        """
        end = self._end + nbytes
        if end > self._capacity:
            raise ValueError(f"bulk_updated({nbytes}) overruns the free buffer")
        self.bytes_in += nbytes
        start = self._start
        gen = self._gen
        try:
            stop = consume(self._buf, start, end)
        except ValueError as exc:
            self.reset()
            raise FrameTooLarge(str(exc)) from None
        if self._gen != gen:
            return 0  # the consumer reset us (closed its connection): the rest is stale
        if not start <= stop <= end:
            self.reset()
            raise ValueError(f"consumer returned {stop}, outside [{start}, {end}]")
        self._settle(stop, end)
        return stop - start

    def _settle(self, start: int, end: int) -> None:
        """After a scan: bound the partial frame, remember where to resume searching, and
        make room at the tail if needed."""
        pending = end - start
        if pending == 0:
            # Everything consumed: restart at the front for free (and stay in warm cache).
            self._start = self._end = self._scan = 0
            return
        dlen = self._dlen
        # A partial delimiter may sit at the very end; allow for it.
        if pending - (dlen - 1) > self._max_frame:
            self.reset()
            raise FrameTooLarge(f"partial frame of {pending} bytes > max_frame {self._max_frame}")
        scan = end - dlen + 1
        if scan < start:
            scan = start
        if end > self._compact_at:
            # memoryview slice assignment is a memmove (overlap-safe).
            self._view[0:pending] = self._view[start:end]
            scan -= start
            start = 0
            end = pending
        self._start = start
        self._end = end
        self._scan = scan

    def reset(self) -> None:
        """Drop the partial frame (e.g. on reconnect)."""
        self._start = self._end = self._scan = 0
        self._gen += 1
