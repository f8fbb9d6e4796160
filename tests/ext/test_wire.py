"""Price-feed codec: PriceFeedDecoder and TickEncoder, compiled (ext._wire) and twin (ext.wire_py).

Every behavioural test runs against both implementations, each decoder writing into a real
shared-memory book of its own kind (the compiled decoder needs the compiled book). Segments are
named ``tstest_<uuid>`` and the ``book_name`` fixture fails a test that leaves one behind.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twinutil import compiled

from ext import layout, pricebook_py, wire_py
from ext.wire_py import FrameTooLong

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
cpb = compiled("_pricebook")
cwire = compiled("_wire")   # it cimports _pricebook: built without it, it fails to load loudly

SYMS = ("AAPL", "MSFT", "BRK.B", "V")
NOW = 1_700_000_000_000  # a plausible sent_ns
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Impl(NamedTuple):
    name: str
    wire: ModuleType  # ext._wire or ext.wire_py
    pb: ModuleType    # the price book the decoder writes into


IMPLS = {"cython": Impl("cython", cwire, cpb), "python": Impl("python", wire_py, pricebook_py)}


def _need_compiled() -> None:
    if cwire is None:
        pytest.skip("ext._wire is not built")


@pytest.fixture(params=["cython", "python"])
def impl(request) -> Impl:
    if request.param == "cython":
        _need_compiled()
    return IMPLS[request.param]


@pytest.fixture
def book_name():
    """Unique segment name prefix; fails the test if anything named name* is left behind."""
    name = f"tstest_{uuid4().hex[:12]}"
    yield name
    leaked = sorted(glob.glob(f"/dev/shm/{name}*"))
    for path in leaked:
        with contextlib.suppress(FileNotFoundError):
            layout.unlink_untracked(os.path.basename(path))
    assert not leaked, f"test left shared memory behind: {leaked}"


@contextlib.contextmanager
def new_book(pb: ModuleType, name: str, symbols=SYMS) -> Iterator:
    book = pb.SharedPriceBook(list(symbols), name=name, create=True)
    try:
        yield book
    finally:
        book.close()
        book.unlink()


@pytest.fixture
def book(impl, book_name):
    with new_book(impl.pb, book_name) as b:
        yield b


class Rejects(list):
    """on_reject callback that records (frame, reason)."""

    def __call__(self, frame: bytes, reason: str) -> None:
        assert type(frame) is bytes and type(reason) is str
        self.append((frame, reason))


COUNTERS = ("frames", "ticks", "malformed", "unknown", "empty", "gaps", "seq_resets",
            "latency_dropped")


def counters(dec) -> dict[str, int]:
    return {k: getattr(dec, k) for k in COUNTERS}


def slots(book) -> list[tuple]:
    """(price, sent_ns, tick_seq) of every slot, price None if never written (NaN != NaN);
    write_ns is a clock reading, not compared."""
    out = []
    for i in range(book.nsymbols):
        price, sent_ns, tick_seq, _ = book.read_slot(i)
        out.append((None if math.isnan(price) else price, sent_ns, tick_seq))
    return out


def feed_stream(dec, data: bytes, sizes) -> bytes:
    """Feed data in chunks through a carry-over buffer, as a connection does; checks every
    returned offset and returns what is left unconsumed."""
    buf = bytearray()
    pos = 0
    for size in [*sizes, len(data)]:
        chunk = data[pos : pos + size]
        pos += len(chunk)
        buf += chunk
        off = dec.feed(buf, 0, len(buf))
        assert off == buf.rfind(dec.delimiter) + 1
        del buf[:off]
    return bytes(buf)


def cents(price: float) -> int:
    return round(price * 100)


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("plain", [False, True], ids=["4-field", "plain"])
def test_encoder_to_decoder_round_trip(impl, book, plain) -> None:
    enc = impl.wire.TickEncoder(list(SYMS), 0.01, 11)
    dec = impl.wire.PriceFeedDecoder(book)
    data = enc.batch(1001, NOW, plain=plain)
    assert dec.feed(data, 0, len(data)) == len(data)
    assert dec.ticks == dec.frames == 1001 and dec.malformed == dec.unknown == dec.empty == 0
    assert book.publish_seq() == 1001  # one publish per tick, not per batch
    want_seqs = enc.seqs if not plain else [0] * len(SYMS)
    assert enc.seqs == [251, 250, 250, 250]  # round robin continues where it stopped
    assert dec.last_seqs() == want_seqs and dec.gaps == dec.seq_resets == 0
    sent = 0 if plain else NOW
    assert slots(book) == [(p, sent, s) for p, s in zip(enc.prices, want_seqs)]
    reader = book.reader()
    try:  # a reader sees every slot changed, with the same prices
        n = reader.poll()
        assert n == len(SYMS)
        assert {reader.indices[k]: reader.prices[k] for k in range(n)} == dict(
            enumerate(enc.prices))
    finally:
        reader.close()
    # A snapshot repeats the current seqs: neither a gap nor a reset.
    snap = enc.snapshot(NOW + 1, plain=plain)
    assert dec.feed(snap, 0, len(snap)) == len(snap)
    assert dec.gaps == dec.seq_resets == 0 and dec.ticks == 1001 + len(SYMS)
    assert enc.seqs == [251, 250, 250, 250]


def test_twin_decoder_writes_compiled_book(book_name) -> None:
    _need_compiled()
    with new_book(cpb, book_name) as book:
        dec = wire_py.PriceFeedDecoder(book)
        assert dec.feed(b"MSFT,325.20,7,99*", 0, 17) == 17
        assert book.read_slot(1)[:3] == (325.2, 99, 7)


def test_compiled_decoder_refuses_twin_book(book_name) -> None:
    _need_compiled()
    with new_book(pricebook_py, book_name) as book, pytest.raises(TypeError, match="compiled"):
        cwire.PriceFeedDecoder(book)


def test_encoder_text_parses_back_to_the_same_cents(impl, book) -> None:
    enc = impl.wire.TickEncoder(list(SYMS), 0.02, 5)
    dec = impl.wire.PriceFeedDecoder(book)
    last: dict[bytes, float] = {}
    for plain in (False, True):
        data = enc.batch(3000, NOW, plain=plain)
        for frame in data.split(b"*")[:-1]:
            sym, price, _seq, _ns = wire_py.parse_price_frame(frame)
            assert b"%.2f" % price == frame.split(b",")[1]  # exactly two decimals, no rounding
            last[sym] = price
        dec.feed(data, 0, len(data))
        assert dec.malformed == dec.unknown == 0
    assert [last[s] for s in enc.symbols] == enc.prices == [p for p, _, _ in slots(book)]


# --------------------------------------------------------------------------- framing
def test_partial_frame_across_feeds(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    buf = bytearray(b"AAPL,1.5,1,2*MSFT,2.")
    assert dec.feed(buf, 0, len(buf)) == 13  # just past the last delimiter
    assert dec.ticks == 1 and book.read_slot(0)[0] == 1.5
    assert dec.feed(buf, 13, len(buf)) == 13  # nothing complete: returns start
    buf += b"25,1,2*V,3*"
    assert dec.feed(buf, 13, len(buf)) == len(buf)
    assert dec.ticks == 3 and book.read_slot(1)[0] == 2.25 and book.read_slot(3)[0] == 3.0
    # A window inside a bigger buffer: offsets stay absolute.
    buf = bytearray(b"junk,*BRK.B,7.5*tail")
    assert dec.feed(buf, 6, 16) == 16 and book.read_slot(2)[0] == 7.5 and dec.malformed == 0


def test_any_split_gives_the_same_result(impl, book_name) -> None:
    """Whatever the read boundaries, the same ticks, counters and book."""
    data = (b"AAPL,1.5,1,2**MSFT,2.25,2,3*XYZ,1*AAPL,x*V,3*" * 4) + b"BRK.B,9"
    with new_book(impl.pb, book_name) as b1, new_book(impl.pb, book_name + "b") as b2:
        whole = impl.wire.PriceFeedDecoder(b1)
        feed_stream(whole, data, [])

        @settings(max_examples=50, deadline=None)
        @given(cuts=st.lists(st.integers(0, 60), max_size=40))
        def check(cuts: list[int]) -> None:
            split = impl.wire.PriceFeedDecoder(b2)
            assert feed_stream(split, data, cuts) == b"BRK.B,9"
            assert counters(whole) == counters(split) and slots(b1) == slots(b2)

        check()


def test_empty_frames(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    data = b"**AAPL,1*****V,2***"
    assert dec.feed(data, 0, len(data)) == len(data)
    assert (dec.empty, dec.frames, dec.ticks) == (8, 2, 2)


def test_read_only_buffers(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    assert dec.feed(b"AAPL,1*", 0, 7) == 7
    assert dec.feed(memoryview(b"MSFT,2*V"), 0, 8) == 7
    assert dec.feed(memoryview(bytearray(b"V,3*"))[1:], 0, 3) == 3  # b",3*": empty symbol
    assert dec.ticks == 2 and dec.malformed == 1
    assert dec.feed(bytearray(), 0, 0) == 0
    for start, end in ((-1, 3), (0, 9), (5, 4)):
        with pytest.raises(ValueError, match="range"):
            dec.feed(b"AAPL,1*", start, end)


def test_custom_delimiter(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book, delimiter=b"\n")
    assert dec.feed(b"AAPL,1.25\n\nV,2*\n", 0, 16) == 16
    assert dec.ticks == 1 and dec.empty == 1 and dec.malformed == 1  # '*' is just a byte here


# --------------------------------------------------------------------------- rejects
MALFORMED = [
    (b"AAPL", "price frame needs SYMBOL,PRICE (then SEQ,SENT_NS or fields we ignore), got 1 "
              "field"),
    (b",,,,,,,", "empty symbol"),
    (b"AAPL,x,2024-01-02 10:00:00", "bad price b'x'"),
    (b",1.5", "empty symbol"),
    (b",x,y,z", "empty symbol"),
    (b"AAPL,", "bad price b''"),
    (b"AAPL,12x", "bad price b'12x'"),
    (b"AAPL,-1", "bad price b'-1'"),
    (b"AAPL,+1", "bad price b'+1'"),
    (b"AAPL,1e5", "bad price b'1e5'"),
    (b"AAPL,1_0", "bad price b'1_0'"),
    (b"AAPL, 1", "bad price b' 1'"),
    (b"AAPL,1 ", "bad price b'1 '"),
    (b"AAPL,inf", "bad price b'inf'"),
    (b"AAPL,nan", "bad price b'nan'"),
    (b"AAPL,1.", "bad price b'1.'"),
    (b"AAPL,.5", "bad price b'.5'"),
    (b"AAPL,1.2.3", "bad price b'1.2.3'"),
    (b"AAPL,0x1f", "bad price b'0x1f'"),
    (b"AAPL,\xd9\xa1", "bad price b'\\xd9\\xa1'"),  # a non-ASCII digit
    (b"AAPL,1.5x,1,2", "bad price b'1.5x'"),
    (b"AAPL,1234567890.123456", "price b'1234567890.123456' has more than 15 digits"),
    (b"AAPL,0.0000000000000001", "price b'0.0000000000000001' has more than 15 digits"),
    (b"AAPL,0", "price must be > 0 and <= 1e9"),
    (b"AAPL,000.000", "price must be > 0 and <= 1e9"),
    (b"AAPL,1000000000.00001", "price must be > 0 and <= 1e9"),
    (b"AAPL,1000000001", "price must be > 0 and <= 1e9"),
    (b"AAPL,1,,2", "bad sequence b''"),
    (b"AAPL,1,-1,2", "bad sequence b'-1'"),
    (b"AAPL,1,1x,2", "bad sequence b'1x'"),
    (b"AAPL,1,1,", "bad timestamp b''"),
    (b"AAPL,1,1,2 ", "bad timestamp b'2 '"),
    (b"AAPL,1,1,1e9", "bad timestamp b'1e9'"),
    (b"AAPL,1,18446744073709551616,2", "sequence or timestamp out of range"),
    (b"AAPL,1,1,9223372036854775808", "sequence or timestamp out of range"),
    (b"AAPL,1,1," + b"9" * 200, "sequence or timestamp out of range"),
    (b"AAPL,1," + b"1" * 21 + b",1", "sequence or timestamp out of range"),
]


@pytest.mark.parametrize("frame,reason", MALFORMED, ids=[r for _, r in MALFORMED])
def test_malformed_reasons(impl, book, frame, reason) -> None:
    rejects = Rejects()
    dec = impl.wire.PriceFeedDecoder(book, on_reject=rejects)
    data = b"V,1*" + frame + b"*V,2*"
    assert dec.feed(data, 0, len(data)) == len(data)
    assert rejects == [(frame, reason)]
    assert (dec.frames, dec.ticks, dec.malformed, dec.unknown) == (3, 2, 1, 0)
    assert book.read_slot(3)[0] == 2.0 and math.isnan(book.read_slot(0)[0])
    assert wire_py.parse_price_frame(frame) == reason


VALID = [  # edge cases that must be accepted: (frame, price, seq, sent_ns)
    (b"AAPL,1000000000", 1e9, 0, 0),
    (b"AAPL,1000000000.00000", 1e9, 0, 0),
    (b"AAPL,0000000000000000000000172.53", 172.53, 0, 0),
    (b"AAPL,0.000000000000001", 1e-15, 0, 0),
    (b"AAPL,123456789.123456", 123456789.123456, 0, 0),
    (b"AAPL,0.1,18446744073709551615,9223372036854775807", 0.1, 2**64 - 1, 2**63 - 1),
    (b"AAPL,5,0000000000000000000000000001,00000000000000000000000002", 5.0, 1, 2),
    (b"AAPL,7,0,0", 7.0, 0, 0),
    # Another feed's SYMBOL,PRICE,...: the fields after the price are not ours (4 always are).
    (b"AAPL,173.25,2024-01-02 10:00:00", 173.25, 0, 0),
    (b"AAPL,1,2", 1.0, 0, 0),
    (b"AAPL,1,", 1.0, 0, 0),
    (b"AAPL,1,x,y,z", 1.0, 0, 0),
    (b"AAPL,1,2,3,4", 1.0, 0, 0),
]


@pytest.mark.parametrize("frame,price,seq,sent_ns", VALID)
def test_valid_edge_cases(impl, book, frame, price, seq, sent_ns) -> None:
    rejects = Rejects()
    dec = impl.wire.PriceFeedDecoder(book, on_reject=rejects)
    assert dec.feed(frame + b"*", 0, len(frame) + 1) == len(frame) + 1
    assert rejects == [] and dec.ticks == 1
    assert book.read_slot(0)[:3] == (price, sent_ns, seq) == (float(frame.split(b",")[1]),
                                                              sent_ns, seq)


@pytest.mark.parametrize("sym", [b"XYZ", b"AAP", b"AAPLX", b"aapl", b"AAPL\0", b"BRK", b"VV",
                                 b"BRK.BB", b"A" * 15, b"LONGER_THAN_16_BYTES", b"\xff\xfe"])
def test_unknown_symbol(impl, book, sym) -> None:
    rejects = Rejects()
    dec = impl.wire.PriceFeedDecoder(book, on_reject=rejects)
    frame = sym + b",1.5,1,2"
    dec.feed(frame + b"*", 0, len(frame) + 1)
    assert (dec.frames, dec.ticks, dec.malformed, dec.unknown) == (1, 0, 0, 1)
    assert rejects == [(frame, f"unknown symbol {sym.decode(errors='replace')!r}")]
    assert dec.last_seqs() == [0] * len(SYMS)


def test_every_symbol_finds_its_slot(impl, book_name) -> None:
    """Many symbols of every length: the hash table maps each to its own slot."""
    syms = [f"S{i}" for i in range(200)] + ["X" * n for n in range(1, 16)] + ["BRK.B", "V"]
    with new_book(impl.pb, book_name, syms) as book:
        dec = impl.wire.PriceFeedDecoder(book)
        data = b"".join(b"%s,%d.5,%d,1*" % (s.encode(), i + 1, i + 1) for i, s in enumerate(syms))
        dec.feed(data, 0, len(data))
        assert dec.ticks == len(syms) and dec.unknown == 0
        assert slots(book) == [(i + 1.5, 1, i + 1) for i in range(len(syms))]


def test_rejects_without_callback_are_counted(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    data = b"XYZ,1*AAPL,x*AAPL,1*"
    dec.feed(data, 0, len(data))
    assert (dec.frames, dec.ticks, dec.malformed, dec.unknown) == (3, 1, 1, 1)


# --------------------------------------------------------------------------- oversize
def test_oversize_frame_raises_after_earlier_frames(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book, max_frame=64)
    long_frame = b"AAPL," + b"1" * 297
    max_sized = b"V,2,1," + b"0" * 57 + b"1"  # 64 bytes, valid (sent_ns 1)
    data = b"AAPL,1*" + max_sized + b"*" + long_frame + b"*MSFT,3*"
    with pytest.raises(FrameTooLong, match="frame of 302 bytes > max_frame 64") as info:
        dec.feed(data, 0, len(data))
    assert isinstance(info.value, ValueError)
    assert (info.value.length, info.value.consumed, info.value.partial) == (302, 72, False)
    assert dec.ticks == 2 and book.read_slot(0)[0] == 1.0  # a 64-byte frame is still fine
    assert math.isnan(book.read_slot(1)[0])  # nothing after the oversize frame


def test_oversize_unterminated_tail_raises(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book, max_frame=64)
    assert dec.feed(b"AAPL,1*" + b"x" * 64, 0, 71) == 7  # may still end within max_frame
    with pytest.raises(FrameTooLong, match="unterminated frame of 65 bytes") as info:
        dec.feed(b"AAPL,1*" + b"x" * 65, 0, 72)
    assert (info.value.consumed, info.value.partial) == (7, True)
    assert dec.ticks == 2


# --------------------------------------------------------------------------- sequences
def test_gaps_and_resets_like_the_orderbook(impl, book) -> None:
    seqs = [(0, 1), (0, 2), (0, 5), (0, 5), (0, 3), (0, 4), (1, 10), (1, 0), (1, 11), (1, 20),
            (0, 1), (2, 0), (3, 2**64 - 1), (3, 1)]
    dec = impl.wire.PriceFeedDecoder(book)
    data = b"".join(b"%s,1,%d,5*" % (SYMS[i].encode(), s) for i, s in seqs)
    dec.feed(data, 0, len(data))
    # The OrderBook's logic, verbatim.
    last, gaps, resets = [0] * len(SYMS), 0, 0
    for i, seq in seqs:
        if seq:
            prev = last[i]
            if seq > prev + 1 and prev:
                gaps += seq - prev - 1
            elif seq < prev:
                resets += 1
            last[i] = seq
    assert (dec.gaps, dec.seq_resets, dec.last_seqs()) == (gaps, resets, last)
    assert (gaps, resets, last) == (2 + 8, 3, [1, 20, 0, 1])
    assert dec.gaps_by_symbol() == [2, 8, 0, 0]   # what the OrderBook's gap line names
    assert book.read_slot(3)[2] == 1


def test_gap_counter_saturates(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    data = b"AAPL,1,1,0*AAPL,1,%d,0*V,1,1,0*V,1,%d,0*" % (2**64 - 1, 2**64 - 1)
    dec.feed(data, 0, len(data))
    assert dec.gaps == 2**64 - 1
    assert dec.gaps_by_symbol()[SYMS.index("AAPL")] == 2**64 - 3
    assert dec.gaps_by_symbol()[SYMS.index("V")] == 2**64 - 3


# --------------------------------------------------------------------------- latency
def test_latency_recording(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book, latency_capacity=3)
    sent = time.monotonic_ns() - 1_000_000  # sent 1 ms ago
    data = b"".join(b"AAPL,1,%d,%d*" % (k + 1, sent) for k in range(5)) + b"V,2*V,3,9,0*"
    before = time.monotonic_ns()
    dec.feed(data, 0, len(data))
    after = time.monotonic_ns()
    assert dec.latency_dropped == 2  # full after 3; sent_ns == 0 is never recorded
    lat = dec.take_latencies()
    assert lat.dtype.name == "int64" and len(lat) == 3
    assert all(before - sent <= x <= after - sent for x in lat.tolist())
    assert len(dec.take_latencies()) == 0  # taken: the buffer is empty again
    dec.feed(b"AAPL,1,9,%d*" % sent, 0, len(b"AAPL,1,9,%d*" % sent))
    assert len(dec.take_latencies()) == 1 and dec.latency_dropped == 2


# --------------------------------------------------------------------------- clock offset
DAY_NS = 86_400 * 10**9


def test_clock_offset_moves_send_times_onto_this_hosts_clock(impl, book) -> None:
    """A Gateway a day ahead of this host: with the offset its send stamps are written as this
    host's, and the recorded latency is this host's write time minus that."""
    dec = impl.wire.PriceFeedDecoder(book)
    assert dec.clock_offset == 0
    far = time.monotonic_ns() + DAY_NS - 1_000_000   # sent 1 ms ago on a clock a day ahead
    frame = b"AAPL,1.5,1,%d*" % far
    dec.feed(frame, 0, len(frame))
    assert book.read_slot(0)[1] == far                # no offset: written as it came
    assert dec.take_latencies().tolist()[0] < -DAY_NS + 10**9
    dec.clock_offset = -DAY_NS
    frame = b"AAPL,1.5,2,%d*V,2*" % far               # V: plain, no stamp
    before = time.monotonic_ns()
    dec.feed(frame, 0, len(frame))
    after = time.monotonic_ns()
    assert slots(book)[0] == (1.5, far - DAY_NS, 2)
    assert slots(book)[SYMS.index("V")] == (2.0, 0, 0)   # 0 means "no stamp": never shifted
    (lat,) = dec.take_latencies().tolist()
    assert before - (far - DAY_NS) <= lat <= after - (far - DAY_NS)
    assert dec.ticks == 3 and dec.seq_resets == 0 and dec.gaps == 0
    dec.clock_offset = 0
    frame = b"MSFT,3,1,%d*" % far
    dec.feed(frame, 0, len(frame))
    assert book.read_slot(SYMS.index("MSFT"))[1] == far


@pytest.mark.parametrize("sent,offset,written", [
    (5, -10, 1),                                  # before this clock's zero: the oldest stamp
    (10, -10, 1),
    (11, -10, 1),
    (2**63 - 1, 1, 2**63 - 1),                    # past the end: saturates
    (2**63 - 11, 10, 2**63 - 1),
    (2**63 - 12, 10, 2**63 - 2),
    (1, 2**63 - 1, 2**63 - 1),
    (2**63 - 1, -(2**63 - 1), 1),
    (7, 3, 10),
])
def test_clock_offset_keeps_stamps_in_range(impl, book, sent, offset, written) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    dec.clock_offset = offset
    frame = b"AAPL,1,1,%d*" % sent
    before = time.monotonic_ns()
    dec.feed(frame, 0, len(frame))
    after = time.monotonic_ns()
    assert book.read_slot(0)[1] == written == wire_py.shift_sent_ns(sent, offset)
    # The latency is from the stamp as sent, not as clamped: plus the offset, it is always
    # the raw write - send the OrderBook's clock check estimates the offset from.
    (lat,) = dec.take_latencies().tolist()
    assert before - sent <= lat + offset <= after - sent


@pytest.mark.parametrize("bad,error", [(2**63, ValueError), (-(2**63), ValueError),
                                       (1.5, TypeError), ("1", TypeError), (None, TypeError),
                                       (True, TypeError)])
def test_clock_offset_refuses_what_is_not_an_int64_ns(impl, book, bad, error) -> None:
    dec = impl.wire.PriceFeedDecoder(book)
    dec.clock_offset = 7
    with pytest.raises(error):
        dec.clock_offset = bad
    assert dec.clock_offset == 7                       # a refused value changes nothing


def test_latency_capacity_zero_records_nothing(impl, book) -> None:
    dec = impl.wire.PriceFeedDecoder(book, latency_capacity=0)
    dec.feed(b"AAPL,1,1,5*V,2*", 0, 15)
    assert dec.latency_dropped == 1 and len(dec.take_latencies()) == 0 and dec.ticks == 2


# --------------------------------------------------------------------------- API checks
def test_decoder_arguments(impl, book) -> None:
    for bad in (b"", b"**", b",", "*"):
        with pytest.raises(ValueError, match="delimiter"):
            impl.wire.PriceFeedDecoder(book, delimiter=bad)
    with pytest.raises(ValueError, match="contains the delimiter"):
        impl.wire.PriceFeedDecoder(book, delimiter=b".")  # BRK.B
    with pytest.raises(ValueError, match="max_frame"):
        impl.wire.PriceFeedDecoder(book, max_frame=0)
    with pytest.raises(ValueError, match="latency_capacity"):
        impl.wire.PriceFeedDecoder(book, latency_capacity=-1)
    dec = impl.wire.PriceFeedDecoder(book, max_frame=100, latency_capacity=7)
    assert (dec.book, dec.max_frame, dec.latency_capacity, dec.delimiter) == (book, 100, 7, b"*")
    for name in (*COUNTERS, "book", "max_frame"):
        with pytest.raises(AttributeError):
            setattr(dec, name, 1)
    rejects = Rejects()
    dec.on_reject = rejects  # settable after construction
    dec.feed(b"x*", 0, 2)
    assert rejects == [(b"x", "price frame needs SYMBOL,PRICE (then SEQ,SENT_NS or fields we "
                                "ignore), got 1 field")]


def test_on_reject_exception_propagates(impl, book) -> None:
    def boom(frame: bytes, reason: str) -> None:
        raise RuntimeError(reason)

    dec = impl.wire.PriceFeedDecoder(book, on_reject=boom)
    with pytest.raises(RuntimeError, match="unknown symbol"):
        dec.feed(b"AAPL,1*XYZ,1*V,2*", 0, 17)
    assert (dec.ticks, dec.unknown) == (1, 1)  # counted before the callback


def test_decoder_on_closed_book(impl, book_name) -> None:
    with new_book(impl.pb, book_name) as book:
        dec = impl.wire.PriceFeedDecoder(book)
    with pytest.raises(ValueError, match="closed"):
        dec.feed(b"AAPL,1*", 0, 7)


def test_encoder_arguments(impl) -> None:
    enc_cls = impl.wire.TickEncoder
    for syms, vol, seed in ((["A"], float("nan"), 1), (["A"], -0.1, 1), (["A"], math.inf, 1),
                            (["A"], 0.1, -1), (["A"], 0.1, 2**64), ([], 0.1, 1),
                            (["A,B"], 0.1, 1), (["A" * 16], 0.1, 1), (["A", "A"], 0.1, 1)):
        with pytest.raises(ValueError):
            enc_cls(syms, vol, seed)
    enc = enc_cls(["A"], 0.1, 1)
    for n, sent in ((-1, 0), (2**24 + 1, 0), (1, -1), (1, 2**63)):
        with pytest.raises(ValueError):
            enc.batch(n, sent)
    with pytest.raises(ValueError):
        enc.snapshot(-1)
    assert enc.batch(0, 0) == b"" and enc.seqs == [0] and enc.symbols == [b"A"]
    assert (enc.seed, enc.volatility) == (1, 0.1)
    for name in ("seed", "volatility", "prices", "seqs", "symbols"):
        with pytest.raises(AttributeError):
            setattr(enc, name, 1)


# --------------------------------------------------------------------------- encoder
def test_encoder_format(impl) -> None:
    enc = impl.wire.TickEncoder(["AAPL", "V"], 0.0, 3)  # no volatility: prices stay put
    p0, p1 = enc.prices
    assert 20 <= p0 < 500 and 20 <= p1 < 500 and enc.seqs == [0, 0]
    assert enc.snapshot(12) == b"AAPL,%.2f,0,12*V,%.2f,0,12*" % (p0, p1)
    assert enc.batch(3, 2**63 - 1) == (b"AAPL,%.2f,1,9223372036854775807*V,%.2f,1,"
                                       b"9223372036854775807*AAPL,%.2f,2,9223372036854775807*"
                                       % (p0, p1, p0))
    assert enc.batch(1, 0, plain=True) == b"V,%.2f*" % p1
    assert enc.snapshot(0, plain=True) == b"AAPL,%.2f*V,%.2f*" % (p0, p1)
    assert enc.seqs == [2, 2]


def test_encoder_clamps_keep_frames_parseable(impl, book) -> None:
    enc = impl.wire.TickEncoder(list(SYMS), 1e6, 9)  # wild: hits both clamps
    dec = impl.wire.PriceFeedDecoder(book)
    data = enc.batch(2000, NOW)
    dec.feed(data, 0, len(data))
    prices = [wire_py.parse_price_frame(f)[1] for f in data.split(b"*")[:-1]]
    assert dec.ticks == 2000 and min(prices) == 0.01 and max(prices) == 1e9


def test_seed_zero_draws_a_reproducible_seed(impl) -> None:
    a = impl.wire.TickEncoder(list(SYMS), 0.001, 0)
    b = impl.wire.TickEncoder(list(SYMS), 0.001, 0)
    assert a.seed and b.seed and a.seed != b.seed
    again = impl.wire.TickEncoder(list(SYMS), 0.001, a.seed)
    assert a.batch(500, NOW) == again.batch(500, NOW)


@pytest.mark.parametrize("seed,vol", [(1, 0.0005), (42, 0.01), (2**64 - 1, 0.3), (7, 5.0)])
def test_encoder_twin_is_byte_identical(seed, vol) -> None:
    _need_compiled()
    syms = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "BRK.B", "JPM", "V"]
    c, p = cwire.TickEncoder(syms, vol, seed), wire_py.TickEncoder(syms, vol, seed)
    rng = random.Random(seed)
    for _ in range(12):  # uneven batches: the round robin and the spare deviate carry over
        n, plain, sent = rng.randrange(0, 700), rng.random() < 0.3, rng.randrange(2**63)
        assert c.batch(n, sent, plain) == p.batch(n, sent, plain)
    assert c.snapshot(5) == p.snapshot(5) and c.snapshot(0, True) == p.snapshot(0, True)
    assert (c.prices, c.seqs, c.symbols, c.seed) == (p.prices, p.seqs, p.symbols, p.seed)


# --------------------------------------------------------------------------- twin == compiled
def _mixed_stream(seed: int) -> bytes:
    """Encoder output interleaved with empties, garbage, unknown symbols, gaps and resets."""
    rng = random.Random(seed)
    enc = wire_py.TickEncoder(list(SYMS), 0.01, seed)
    noise = [b"", b"XYZ,1,1,1", b"AAPL,1e3", b"AAPL", b",1", b"MSFT,5,3", b"V,1,99,1",
             b"V,1,1,1", b"AAPL,0", b"BRK.B,1,1,9223372036854775808", b"AAPL,1,5,\xff"]
    parts = []
    for _ in range(40):
        parts.append(enc.batch(rng.randrange(1, 30), rng.randrange(1, 2**40), rng.random() < .2))
        parts.append(b"".join(rng.choice(noise) + b"*" for _ in range(rng.randrange(4))))
    return b"".join(parts)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_twin_and_compiled_decoders_agree(book_name, seed) -> None:
    _need_compiled()
    data = _mixed_stream(seed)
    cuts = random.Random(seed).choices(range(1, 200), k=200)
    with new_book(cpb, book_name) as cbook, new_book(pricebook_py, book_name + "p") as pbook:
        c_rej, p_rej = Rejects(), Rejects()
        c = cwire.PriceFeedDecoder(cbook, on_reject=c_rej)
        p = wire_py.PriceFeedDecoder(pbook, on_reject=p_rej)
        assert feed_stream(c, data, cuts) == feed_stream(p, data, cuts[::-1]) == b""
        assert counters(c) == counters(p) and c.malformed and c.unknown and c.gaps
        assert c.last_seqs() == p.last_seqs() and slots(cbook) == slots(pbook)
        assert c_rej == p_rej and len(c_rej) == c.malformed + c.unknown
        assert len(c.take_latencies()) == len(p.take_latencies()) > 0


FRAME_BYTES = st.sampled_from([b"A", b"V", b"AAPL", b"MSFT", b"BRK.B", b",", b".", b"*", b"0",
                               b"1", b"9", b"12", b"007", b"18446744073709551616", b"-", b" ",
                               b"e", b"\x00", b"\xff", b"9" * 16])


@st.composite
def streams(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    return b"".join(draw(st.lists(FRAME_BYTES, max_size=120)))


def test_random_bytes_property(book_name) -> None:
    """Random bytes never crash either decoder, the counters add up, and the compiled decoder
    does exactly what the twin does (counters, book, reasons, FrameTooLong)."""
    _need_compiled()
    with new_book(cpb, book_name) as cbook, new_book(pricebook_py, book_name + "p") as pbook:

        @SETTINGS
        @given(data=streams(), max_frame=st.sampled_from([8, 40, 256]))
        def check(data: bytes, max_frame: int) -> None:
            results = []
            for dec_mod, book in ((cwire, cbook), (wire_py, pbook)):
                rejects = Rejects()
                dec = dec_mod.PriceFeedDecoder(book, max_frame=max_frame, on_reject=rejects)
                try:
                    off = dec.feed(data, 0, len(data))
                    err = None
                except FrameTooLong as exc:
                    off, err = None, (str(exc), exc.length, exc.consumed, exc.partial)
                assert dec.frames == dec.ticks + dec.malformed + dec.unknown
                assert len(rejects) == dec.malformed + dec.unknown
                if err is None:
                    assert off == data.rfind(b"*") + 1
                results.append((off, err, counters(dec), dec.last_seqs(), rejects))
            assert results[0] == results[1]
            assert slots(cbook) == slots(pbook)

        check()


PRICE_TEXT = st.builds(
    lambda lead, ip, fp: lead + ip + (b"." + fp if fp is not None else b""),
    st.sampled_from([b"", b"0", b"000"]),
    st.text("0123456789", min_size=1, max_size=10).map(str.encode),
    st.none() | st.text("0123456789", min_size=1, max_size=15).map(str.encode),
)


def test_valid_prices_parse_like_float(impl, book) -> None:
    """Every price the grammar accepts is float(text), correctly rounded, in both decoders."""
    dec = impl.wire.PriceFeedDecoder(book)

    @SETTINGS
    @given(text=PRICE_TEXT)
    def check(text: bytes) -> None:
        parsed = wire_py.parse_price_frame(b"AAPL," + text)
        value = float(text)
        digits = text.partition(b".")[0].lstrip(b"0") + text.partition(b".")[2]
        if len(digits) > 15 or not 0 < value <= 1e9:
            assert isinstance(parsed, str)
            return
        assert parsed == (b"AAPL", value, 0, 0)
        frame = b"AAPL," + text + b",1,1*"
        ticks = dec.ticks
        dec.feed(frame, 0, len(frame))
        assert dec.ticks == ticks + 1 and book.read_slot(0)[0] == value

    check()


# --------------------------------------------------------------------------- packaging
def test_package_picks_the_codec_with_the_book() -> None:
    code = ("import sys, ext; print(ext.IMPLEMENTATION, ext.WIRE_IMPLEMENTATION, "
            "ext.FrameTooLong is ext.wire_py.FrameTooLong, "
            "ext.PriceFeedDecoder.__module__, ext.TickEncoder.__module__, "
            "any(m.split('.')[0] in ('processes', 'reactor', 'numpy') for m in sys.modules))")
    expected = {"1": "python python True ext.wire_py ext.wire_py False"}
    if cwire is not None:
        expected["0"] = "cython cython True ext._wire ext._wire False"
    for flag, want in expected.items():
        env = {**os.environ, "TRADESTACK_PURE_PYTHON": flag}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True, timeout=30).stdout.strip()
        assert out == want, (flag, out)
