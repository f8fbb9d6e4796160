"""Framing cost on a 64 KiB read of realistic price frames, and tick encoding cost.

(a) FrameReader.buffer_updated handing memoryview frames to a symbol+price parser, including
the copy into the receive buffer that recv_into would do; (b) the naive baseline
``data.split(b"*")`` then ``split(b",")``; (c) FrameReader with a handler that does nothing,
which is the framing overhead alone; (d) PriceFeedDecoder, compiled and twin, which frames,
parses all four fields, counts gaps, writes and publishes every tick in a shared-memory
SharedPriceBook and records its latency: more work than (b), which only fills a dict.
frames/s goes to extra_info.

Group "encoding": TickEncoder.batch(4096), compiled and twin, against the Gateway's Python
loop (random.gauss + ``%``-formatting). A group of its own, because bench/report.py compares
each row with the group's baseline row.
"""

from __future__ import annotations

import importlib
import random
import time
from types import ModuleType
from uuid import uuid4

import pytest

from ext import pricebook_py, wire_py
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
ENCODE_BATCH = 4096
VOLATILITY = 0.0005

try:
    cpb: ModuleType | None = importlib.import_module("ext._pricebook")
    cwire: ModuleType | None = importlib.import_module("ext._wire")
except ImportError:
    cpb = cwire = None


def _record(benchmark, frames: int, nbytes: int = len(DATA)) -> None:
    benchmark.extra_info["calls_per_round"] = frames
    benchmark.extra_info["bytes_per_call"] = nbytes
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


# --------------------------------------------------------------------------- decoder
@pytest.fixture(scope="module")
def price_book():
    """The book both decoder rows write into: compiled when built (the twin decoder works
    with either book, so its row then measures the decoder, not the book)."""
    mod = cpb if cpb is not None else pricebook_py
    book = mod.SharedPriceBook([s.decode() for s in SYMBOLS], name=f"tsbench_{uuid4().hex[:12]}")
    try:
        yield book
    finally:
        book.close()
        book.unlink()


def _bench_decoder(benchmark, wire: ModuleType, book) -> None:
    dec = wire.PriceFeedDecoder(book)
    buf = bytearray(DATA)  # a receive buffer, as the OrderBook would hand over
    size = len(buf)

    def run() -> int:
        n = dec.feed(buf, 0, size)
        dec.take_latencies()  # keeps latency recording on, as the OrderBook's drain would
        return n

    assert benchmark(run) == size
    assert dec.malformed == dec.unknown == dec.latency_dropped == 0
    assert dec.frames == dec.ticks and dec.ticks % NFRAMES == 0
    benchmark.extra_info["book"] = type(book).__module__
    _record(benchmark, NFRAMES)


@pytest.mark.benchmark(group="framing")
def test_decoder_compiled(benchmark, price_book) -> None:
    if cwire is None:
        pytest.skip("ext._wire is not built")
    _bench_decoder(benchmark, cwire, price_book)


@pytest.mark.benchmark(group="framing")
def test_decoder_twin(benchmark, price_book) -> None:
    _bench_decoder(benchmark, wire_py, price_book)


def test_decoder_agrees_with_split() -> None:
    """The decoder sees the frames the split baseline sees, with the same prices."""
    last: dict[bytes, float] = {}
    for frame in DATA.split(b"*")[:-1]:
        parts = frame.split(b",")
        last[parts[0]] = float(parts[1])
    name = f"tsbench_{uuid4().hex[:12]}"
    with pricebook_py.SharedPriceBook([s.decode() for s in SYMBOLS], name=name) as book:
        dec = wire_py.PriceFeedDecoder(book)
        assert dec.feed(DATA, 0, len(DATA)) == len(DATA) and dec.ticks == NFRAMES
        assert {s: book.read(s.decode()) for s in last} == last


# --------------------------------------------------------------------------- encoder
def _symbols() -> list[str]:
    return [s.decode() for s in SYMBOLS]


@pytest.mark.benchmark(group="encoding")
def test_encoder_python_baseline(benchmark) -> None:
    """The Gateway's per-tick loop in plain Python (what TickEncoder does natively), the
    baseline of the encoding rows."""
    rng = random.Random(1)
    symbols = list(SYMBOLS)
    prices = [round(rng.uniform(20.0, 500.0), 2) for _ in symbols]
    seqs = [0] * len(symbols)
    gauss, vol, count = rng.gauss, VOLATILITY, len(symbols)

    def batch(n: int, sent_ns: int) -> bytes:
        i = 0
        out = []
        append = out.append
        for _ in range(n):
            p = prices[i] * (1.0 + vol * gauss(0.0, 1.0))
            if p < 0.01:
                p = 0.01
            prices[i] = p
            seq = seqs[i] + 1
            seqs[i] = seq
            append(b"%s,%.2f,%d,%d*" % (symbols[i], p, seq, sent_ns))
            i += 1
            if i == count:
                i = 0
        return b"".join(out)

    data = benchmark(batch, ENCODE_BATCH, time.monotonic_ns())
    assert data.count(b"*") == ENCODE_BATCH
    _record(benchmark, ENCODE_BATCH, len(data))


def _bench_encoder(benchmark, wire: ModuleType) -> None:
    enc = wire.TickEncoder(_symbols(), VOLATILITY, 1)
    data = benchmark(enc.batch, ENCODE_BATCH, time.monotonic_ns())
    assert data.count(b"*") == ENCODE_BATCH
    _record(benchmark, ENCODE_BATCH, len(data))


@pytest.mark.benchmark(group="encoding")
def test_encoder_compiled(benchmark) -> None:
    if cwire is None:
        pytest.skip("ext._wire is not built")
    _bench_encoder(benchmark, cwire)


@pytest.mark.benchmark(group="encoding")
def test_encoder_twin(benchmark) -> None:
    _bench_encoder(benchmark, wire_py)
