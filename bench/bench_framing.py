"""Framing cost on a 64 KiB read of realistic price frames.

(a) FrameReader.buffer_updated handing memoryview frames to a symbol+price parser, including
the copy into the receive buffer that recv_into would do; (b) the naive baseline
``data.split(b"*")`` then ``split(b",")``; (c) FrameReader with a handler that does nothing,
which is the framing overhead alone. frames/s goes to extra_info.
"""

from __future__ import annotations

import random

import pytest

from reactor import FrameReader

pytestmark = pytest.mark.timeout(120)

CAPACITY = 64 * 1024
SYMBOLS = [b"AAPL", b"MSFT", b"GOOGL", b"AMZN", b"NVDA", b"META", b"TSLA", b"BRK.B", b"JPM", b"V"]


def make_stream(capacity: int = CAPACITY, seed: int = 7) -> tuple[bytes, int]:
    """Whole frames like b"AAPL,172.53,123456,987654321012*" filling up to ``capacity``."""
    rng = random.Random(seed)
    out = bytearray()
    n = 0
    while True:
        frame = b"%s,%.2f,%d,%d*" % (
            rng.choice(SYMBOLS),
            rng.uniform(10, 900),
            rng.randrange(1, 1_000_000),
            rng.randrange(10**11, 10**12),
        )
        if len(out) + len(frame) > capacity:
            return bytes(out), n
        out += frame
        n += 1


DATA, NFRAMES = make_stream()


def _record(benchmark, frames: int) -> None:
    benchmark.extra_info["calls_per_round"] = frames
    benchmark.extra_info["bytes_per_call"] = len(DATA)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        mean = stats.stats.mean
        benchmark.extra_info["frames_per_s"] = round(frames / mean)
        benchmark.extra_info["ns_per_frame"] = round(mean / frames * 1e9, 1)


@pytest.mark.benchmark(group="framing")
def test_frame_reader_parse(benchmark) -> None:
    last: dict[bytes, bytes] = {}

    def on_frame(mv: memoryview) -> None:
        parts = mv.tobytes().split(b",")  # tobytes(): ~40 ns cheaper than bytes(mv)
        last[parts[0]] = parts[1]

    reader = FrameReader(on_frame, max_frame=4096, capacity=CAPACITY)
    data, size = DATA, len(DATA)

    def run() -> int:
        reader.get_buffer()[:size] = data  # what recv_into would do
        return reader.buffer_updated(size)

    assert benchmark(run) == NFRAMES
    assert reader.pending == 0 and set(last) <= set(SYMBOLS)
    _record(benchmark, NFRAMES)


@pytest.mark.benchmark(group="framing")
def test_split_baseline(benchmark) -> None:
    last: dict[bytes, bytes] = {}
    data = DATA

    def run() -> int:
        n = 0
        for frame in data.split(b"*"):
            if frame:
                parts = frame.split(b",")
                last[parts[0]] = parts[1]
                n += 1
        return n

    assert benchmark(run) == NFRAMES
    _record(benchmark, NFRAMES)


@pytest.mark.benchmark(group="framing")
def test_frame_reader_framing_only(benchmark) -> None:
    def on_frame(mv: memoryview) -> None:
        pass

    reader = FrameReader(on_frame, max_frame=4096, capacity=CAPACITY)
    data, size = DATA, len(DATA)

    def run() -> int:
        reader.get_buffer()[:size] = data
        return reader.buffer_updated(size)

    assert benchmark(run) == NFRAMES
    _record(benchmark, NFRAMES)


def test_parsers_agree() -> None:
    """Both paths must see the same frames, also when the stream arrives in odd-sized reads."""
    seen: list[tuple[bytes, bytes]] = []
    reader = FrameReader(lambda mv: seen.append(tuple(bytes(mv).split(b",")[:2])), max_frame=64)
    for i in range(0, len(DATA), 1000):
        chunk = DATA[i : i + 1000]
        reader.get_buffer()[: len(chunk)] = chunk
        reader.buffer_updated(len(chunk))
    expected = [tuple(f.split(b",")[:2]) for f in DATA.split(b"*") if f]
    assert seen == expected and len(seen) == NFRAMES
