"""FrameReader: splitting, boundaries, compaction, limits."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import pytest

from reactor import FrameReader, FrameTooLarge

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # optional: the seeded random-split test below covers the same ground
    given = None

pytestmark = pytest.mark.timeout(30)


class Collector:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, mv: memoryview) -> None:
        assert isinstance(mv, memoryview)
        self.frames.append(bytes(mv))


def feed(reader: FrameReader, data: bytes) -> int:
    """Copy ``data`` in as a recv_into would, in as many pieces as the free tail needs."""
    dispatched = 0
    while data:
        buf = reader.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        dispatched += reader.buffer_updated(n)
        data = data[n:]
    return dispatched


def make(**kw) -> tuple[FrameReader, Collector]:
    out = Collector()
    return FrameReader(out, **kw), out


def test_many_frames_in_one_read() -> None:
    reader, out = make()
    frames = [b"AAPL,172.53,1,2", b"MSFT,410.1,3,4", b"X,1,2,3"] * 100
    assert feed(reader, b"*".join(frames) + b"*") == 300
    assert out.frames == frames
    assert reader.frames == 300
    assert reader.pending == 0
    assert reader.bytes_in == sum(len(f) + 1 for f in frames)


def test_frame_split_across_two_reads() -> None:
    reader, out = make()
    assert feed(reader, b"AAPL,17") == 0
    assert reader.pending == 7
    assert feed(reader, b"2.53*MSFT") == 1
    assert out.frames == [b"AAPL,172.53"]
    assert reader.pending == 4
    assert feed(reader, b"*") == 1
    assert out.frames == [b"AAPL,172.53", b"MSFT"]
    assert reader.pending == 0


def test_byte_by_byte() -> None:
    reader, out = make(max_frame=64, capacity=128)
    frames = [b"frame-%d" % i for i in range(200)]
    for byte in b"*".join(frames) + b"*":
        feed(reader, bytes([byte]))
    assert out.frames == frames


def test_multibyte_delimiter_split_inside_delimiter() -> None:
    reader, out = make(delimiter=b"\r\n")
    feed(reader, b"one\r")
    assert out.frames == []
    feed(reader, b"\ntwo\r\nthr")
    feed(reader, b"ee\r")
    feed(reader, b"\n")
    assert out.frames == [b"one", b"two", b"three"]


@pytest.mark.parametrize("delimiter", [b"*", b"\n", b"\x00", b"\r\n", b"||"])
def test_delimiter_variants(delimiter: bytes) -> None:
    reader, out = make(delimiter=delimiter)
    frames = [b"a", b"bb,cc", b"123456"]
    feed(reader, delimiter.join(frames) + delimiter)
    assert out.frames == frames


def test_empty_frames_are_skipped_and_counted() -> None:
    reader, out = make()
    feed(reader, b"**a***b*")
    assert out.frames == [b"a", b"b"]
    assert reader.empty_frames == 4
    assert reader.frames == 2


def test_frame_exactly_max_frame_is_accepted() -> None:
    reader, out = make(max_frame=16, capacity=32)
    feed(reader, b"x" * 16)  # partial of exactly max_frame: fine
    feed(reader, b"*")
    feed(reader, b"y" * 16 + b"*")
    assert out.frames == [b"x" * 16, b"y" * 16]


def test_partial_frame_over_max_raises() -> None:
    reader, out = make(max_frame=16, capacity=32)
    feed(reader, b"ok*")
    with pytest.raises(FrameTooLarge):
        feed(reader, b"x" * 17)
    assert out.frames == [b"ok"]
    reader.reset()
    feed(reader, b"again*")
    assert out.frames == [b"ok", b"again"]


def test_complete_frame_over_max_raises_even_in_one_read() -> None:
    # Same verdict however the bytes were split.
    reader, out = make(max_frame=16, capacity=64)
    with pytest.raises(FrameTooLarge):
        feed(reader, b"a*" + b"x" * 20 + b"*b*")
    assert out.frames == [b"a"]


def test_oversized_without_delimiter_raises_before_buffer_fills() -> None:
    reader, _ = make(max_frame=100, capacity=10_000)
    feed(reader, b"x" * 100)
    with pytest.raises(FrameTooLarge):
        feed(reader, b"x")


def split_feed(reader: FrameReader, stream: bytes, cuts: list[int],
               after_each: Callable[[], None] | None = None) -> int:
    """Feed ``stream`` in pieces of the given sizes (then whatever fits), calling
    ``after_each`` after every read so a test can check invariants mid-stream."""
    pos = 0
    for cut in cuts + [len(stream)] * (len(stream) + 2):
        if pos >= len(stream):
            break
        buf = reader.get_buffer()
        n = min(cut, len(buf), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        reader.buffer_updated(n)
        pos += n
        if after_each is not None:
            after_each()
    return pos


def test_exact_buffer_boundary_and_compaction() -> None:
    # capacity == 2 * max_frame is the tightest legal buffer; the compaction memmove then
    # overlaps itself.
    reader, out = make(max_frame=8, capacity=16)
    frames = [b"%07d" % i for i in range(500)]  # 7 bytes + delimiter = 8
    stream = b"*".join(frames) + b"*"
    # Fill to exactly the end of the buffer, then keep going with odd-sized reads.

    def free_tail_in_bounds() -> None:
        assert 0 < len(reader.get_buffer()) <= 16

    assert split_feed(reader, stream, [16, 3, 5, 1, 7, 13, 2] * 1000,
                      free_tail_in_bounds) == len(stream)
    assert out.frames == frames


def test_compaction_moves_partial_to_front() -> None:
    reader, out = make(max_frame=10, capacity=30)
    feed(reader, b"123456789*12345678*ab")  # 21 bytes: end past capacity - max_frame
    assert out.frames == [b"123456789", b"12345678"]
    assert reader.pending == 2
    assert len(reader.get_buffer()) == 28  # partial moved to the front
    feed(reader, b"cd*")
    assert out.frames[-1] == b"abcd"


def test_fully_consumed_buffer_restarts_at_front() -> None:
    reader, _ = make(max_frame=10, capacity=30)
    feed(reader, b"abc*")
    assert len(reader.get_buffer()) == 30


def test_buffer_is_never_reallocated() -> None:
    reader, _ = make(max_frame=16, capacity=32)
    base = reader._buf
    for i in range(1000):
        feed(reader, b"z" * (i % 12) + b"%d*" % i)
    assert reader._buf is base and len(base) == 32


def test_memoryview_valid_during_callback() -> None:
    seen = []

    def on_frame(mv: memoryview) -> None:
        seen.append((mv.tobytes(), mv.readonly, len(mv)))

    reader = FrameReader(on_frame)
    feed(reader, b"hello*")
    assert seen == [(b"hello", False, 5)]


def test_reset_inside_callback_stops_dispatch() -> None:
    got = []

    def on_frame(mv: memoryview) -> None:
        got.append(bytes(mv))
        if mv == b"stop":
            reader.reset()

    reader = FrameReader(on_frame)
    assert feed(reader, b"a*stop*b*c*") == 2
    assert got == [b"a", b"stop"]
    assert reader.pending == 0
    feed(reader, b"d*")
    assert got == [b"a", b"stop", b"d"]


def test_raising_handler_does_not_redeliver() -> None:
    got = []

    def on_frame(mv: memoryview) -> None:
        got.append(bytes(mv))
        if mv == b"bad":
            raise RuntimeError("boom")

    reader = FrameReader(on_frame)
    with pytest.raises(RuntimeError):
        feed(reader, b"a*bad*b*")
    # The rest of that read is delivered with the next one.
    feed(reader, b"c*")
    assert got == [b"a", b"bad", b"b", b"c"]


def test_recv_into_the_buffer_from_a_socket() -> None:
    # How Connection reads: recv_into(get_buffer()), then buffer_updated(n).
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        reader, out = make()
        b.sendall(b"x,1*y,2*partial")
        n = a.recv_into(reader.get_buffer())
        assert n == 15
        reader.buffer_updated(n)
        assert out.frames == [b"x,1", b"y,2"] and reader.pending == 7
        with pytest.raises(BlockingIOError):
            a.recv_into(reader.get_buffer())
    finally:
        a.close()
        b.close()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        FrameReader(None, max_frame=4096, capacity=8000)
    with pytest.raises(ValueError):
        FrameReader(None, delimiter=b"")
    reader = FrameReader(None, max_frame=4, capacity=8)
    with pytest.raises(ValueError):
        reader.buffer_updated(9)


@pytest.mark.parametrize("delimiter", [b"*", b"\r\n"])
def test_random_splits_seeded(delimiter: bytes) -> None:
    rng = random.Random(1234)
    for _ in range(300):
        frames = [
            bytes(rng.choice(b"ab,.*\r\n0") for _ in range(rng.randrange(0, 30))).replace(
                delimiter[:1], b"_"
            )
            for _ in range(rng.randrange(0, 50))
        ]
        stream = b"".join(f + delimiter for f in frames)
        reader, out = make(max_frame=32, capacity=64, delimiter=delimiter)
        cuts = [rng.randrange(1, 70) for _ in range(len(stream))]
        assert split_feed(reader, stream, cuts) == len(stream)
        assert out.frames == [f for f in frames if f]
        assert reader.empty_frames == sum(1 for f in frames if not f)
        assert reader.pending == 0


if given is not None:
    frame_bytes = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"*", b"_"))

    @settings(max_examples=300, deadline=None)
    @given(
        frames=st.lists(frame_bytes, max_size=60),
        cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=200),
    )
    def test_any_split_yields_same_frames(frames: list[bytes], cuts: list[int]) -> None:
        stream = b"".join(f + b"*" for f in frames)
        reader, out = make(max_frame=40, capacity=80)
        assert split_feed(reader, stream, cuts) == len(stream)
        assert out.frames == frames
        assert reader.pending == 0

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"")), max_size=40),
        cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=100),
    )
    def test_any_split_multibyte_delimiter(frames: list[bytes], cuts: list[int]) -> None:
        stream = b"".join(f + b"\r\n" for f in frames)
        reader, out = make(max_frame=24, capacity=48, delimiter=b"\r\n")
        assert split_feed(reader, stream, cuts) == len(stream)
        assert out.frames == [f for f in frames if f]
        assert reader.empty_frames == sum(1 for f in frames if not f)
else:

    @pytest.mark.skip(reason="hypothesis not installed")
    def test_any_split_yields_same_frames() -> None:
        pass


# --- bulk consumers (FrameReader.bulk_updated): a native decoder takes the whole region ---------

def _split_consumer(out: list[bytes]) -> Callable[[bytearray, int, int], int]:
    """A pure-Python stand-in for ext.PriceFeedDecoder.feed: consumes complete frames only."""

    def consume(buf: bytearray, start: int, end: int) -> int:
        last = buf.rfind(b"*", start, end)
        if last < 0:
            return start
        out.extend(f for f in bytes(buf[start:last]).split(b"*") if f)
        return last + 1

    return consume


def _feed(reader: FrameReader, data: bytes, consume) -> None:
    buf = reader.get_buffer()
    buf[: len(data)] = data
    reader.bulk_updated(len(data), consume)


def test_bulk_consumer_keeps_the_partial_frame_for_the_next_read() -> None:
    out: list[bytes] = []
    consume = _split_consumer(out)
    reader = FrameReader(None, max_frame=16, capacity=64)
    _feed(reader, b"A,1*B,2*C,", consume)
    assert out == [b"A,1", b"B,2"] and reader.pending == 2
    _feed(reader, b"3*", consume)
    assert out == [b"A,1", b"B,2", b"C,3"] and reader.pending == 0
    for k in range(50):  # many reads: compaction keeps working with a bulk consumer
        _feed(reader, b"D,%d*E," % k, consume)
    assert len(out) == 53 and reader.pending == 2


def test_bulk_partial_over_max_frame_raises() -> None:
    reader = FrameReader(None, max_frame=8, capacity=64)
    with pytest.raises(FrameTooLarge):
        _feed(reader, b"X" * 20, _split_consumer([]))
    assert reader.pending == 0  # reset: reusable after the caller drops the stream


def test_bulk_consumer_value_error_becomes_frame_too_large() -> None:
    def refuse(buf: bytearray, start: int, end: int) -> int:
        raise ValueError("frame of 999 bytes > max_frame 8")

    reader = FrameReader(None, max_frame=8, capacity=64)
    with pytest.raises(FrameTooLarge, match="999 bytes"):
        _feed(reader, b"A*", refuse)
    with pytest.raises(ValueError, match="outside"):
        _feed(reader, b"A*", lambda buf, start, end: end + 5)


def test_connection_with_bulk_consumer_closes_on_oversize() -> None:
    from reactor import Connection, Reactor

    reactor = Reactor()
    a, b = socket.socketpair()
    out: list[bytes] = []
    closed: list[str | None] = []
    conn = Connection(reactor, a, on_data=_split_consumer(out), max_frame=8,
                      read_capacity=64, on_close=lambda c, why: closed.append(why))
    conn.start()
    try:
        b.sendall(b"A,1*B,2*")
        reactor.run_for(0.05)
        assert out == [b"A,1", b"B,2"]
        b.sendall(b"Y" * 30)
        reactor.run_for(0.05)
        assert conn.closed and closed and "frame too large" in closed[0]
    finally:
        conn.close()
        b.close()
        reactor.close()
