"""Pure-Python twin of ext._wire: the price-feed decoder and the tick encoder.

Same API, same behaviour and byte-identical output; it is the test oracle and the fallback
when the extension is not built. Two things here are shared with the compiled module on
purpose, so they have exactly one source: ``FrameTooLong``, and ``parse_price_frame``, whose
reject reasons the compiled decoder asks for on its (cold) reject path. The compiled decoder
decides acceptance and values with its own C parser; tests check both agree on every input.

Price frame grammar (the wire protocol's price frame, exactly as the native decoder reads it):
``SYM,PRICE`` or ``SYM,PRICE,SEQ,SENT_NS``; any other count of fields (3, or 5 and more) is
``SYM,PRICE`` followed by fields we do not use (a feed's ``SYM,PRICE,YYYY-MM-DD HH:MM:SS``), read
as SEQ 0 and SENT_NS 0, unchecked. Four fields always mean SEQ and SENT_NS, checked as below, so
our own frames never change meaning. SYM is any non-empty bytes; PRICE is
``digits[.digits]`` with at most 15 digits once leading zeros of the integer part are dropped,
so the mantissa is < 2**53 and 10**decimals is exact: mantissa / 10**decimals as one IEEE
division is then correctly rounded, i.e. equal to float(text), in C and in Python alike;
0 < PRICE <= 1e9. SEQ is digits up to 2**64-1, SENT_NS digits up to 2**63-1.

Random walk of the encoder: splitmix64 expands the seed into xoshiro256** state
(Blackman & Vigna); uniforms are the top 53 bits / 2**53; normal deviates come from
Box-Muller, both deviates used (cos first, then sin). math.log/sqrt/cos/sin call the same
libm as the C code, and every expression is evaluated in the same order (the extension is
built with -ffp-contract=off), so both produce the same doubles.
"""

from __future__ import annotations

import array
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ext.layout import validate_symbols

__all__ = [
    "FrameTooLong",
    "PriceFeedDecoder",
    "TickEncoder",
    "parse_price_frame",
    "unknown_symbol_reason",
    "MAX_PRICE",
    "MAX_PRICE_DIGITS",
    "MAX_U64",
    "MAX_I64",
]

MAX_PRICE = 1e9          # as processes.shared.protocol.MAX_PRICE (ext must not import processes)
MIN_PRICE = 0.01         # the walk's floor: one cent
MAX_PRICE_DIGITS = 15    # keeps the mantissa exact in a double (< 2**53)
MAX_U64 = (1 << 64) - 1
MAX_I64 = (1 << 63) - 1
MAX_BATCH = 1 << 24      # ticks per TickEncoder.batch(); bounds the worst-case buffer (~1 GiB)
_POW10 = tuple(float(10**k) for k in range(MAX_PRICE_DIGITS + 1))  # all exact doubles
_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0


class FrameTooLong(ValueError):
    """A frame (or the unterminated tail) exceeds max_frame: the stream is not trustworthy any
    more, close the connection. ``consumed`` is the buffer offset just past the last frame
    processed before it, ``length`` the offending frame's length."""

    def __init__(self, length: int, max_frame: int, consumed: int, partial: bool = False):
        what = "unterminated frame" if partial else "frame"
        super().__init__(f"{what} of {length} bytes > max_frame {max_frame}")
        self.length = length
        self.max_frame = max_frame
        self.consumed = consumed
        self.partial = partial


def parse_price_frame(frame: bytes) -> tuple[bytes, float, int, int] | str:
    """(symbol, price, seq, sent_ns), or the reason the frame is malformed (a str).

    The checks run in this order and the first failure is the reason; the symbol is not
    looked up here (see unknown_symbol_reason)."""
    parts = frame.split(b",")
    n = len(parts)
    if n == 1:
        return "price frame needs SYMBOL,PRICE (then SEQ,SENT_NS or fields we ignore), got 1 field"
    sym = parts[0]
    if not sym:
        return "empty symbol"
    text = parts[1]
    ip, dot, fp = text.partition(b".")
    # bytes.isdigit is ASCII-only and False for b"": no sign, space, '_', exponent, inf/nan.
    if not ip.isdigit() or (dot and not fp.isdigit()):
        return f"bad price {text[:64]!r}"
    digits = ip.lstrip(b"0") + fp
    if len(digits) > MAX_PRICE_DIGITS:
        return f"price {text[:64]!r} has more than {MAX_PRICE_DIGITS} digits"
    price = (int(digits) if digits else 0) / _POW10[len(fp)]
    if not 0.0 < price <= MAX_PRICE:
        return "price must be > 0 and <= 1e9"
    if n != 4:
        return sym, price, 0, 0
    seq_text, ns_text = parts[2], parts[3]
    if not seq_text.isdigit():
        return f"bad sequence {seq_text[:64]!r}"
    if not ns_text.isdigit():
        return f"bad timestamp {ns_text[:64]!r}"
    # Length first: int() of a long digit string is slow, and refused past 4300 digits.
    seq_text, ns_text = seq_text.lstrip(b"0") or b"0", ns_text.lstrip(b"0") or b"0"
    if len(seq_text) > 20 or len(ns_text) > 19:
        return "sequence or timestamp out of range"
    seq, sent_ns = int(seq_text), int(ns_text)
    if seq > MAX_U64 or sent_ns > MAX_I64:
        return "sequence or timestamp out of range"
    return sym, price, seq, sent_ns


def unknown_symbol_reason(symbol: bytes) -> str:
    return f"unknown symbol {symbol[:64].decode(errors='replace')!r}"


def check_delimiter(delimiter: bytes, symbols: Sequence[str]) -> int:
    if not isinstance(delimiter, bytes) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be one byte, got {delimiter!r}")
    if delimiter == b",":
        raise ValueError("delimiter must not be the field separator b','")
    for s in symbols:
        if delimiter in s.encode("ascii"):
            raise ValueError(f"symbol {s!r} contains the delimiter {delimiter!r}")
    return delimiter[0]


def check_clock_offset(ns: int) -> int:
    """A PriceFeedDecoder.clock_offset: an int of at most 2**63-1 either way."""
    if isinstance(ns, bool) or not isinstance(ns, int):
        raise TypeError(f"clock_offset must be an int (ns), got {type(ns).__name__}")
    if not -MAX_I64 <= ns <= MAX_I64:
        raise ValueError(f"clock_offset must be within +-(2**63-1) ns, got {ns}")
    return ns


def shift_sent_ns(sent_ns: int, offset: int) -> int:
    """A send stamp (1..2**63-1) moved by offset, kept in 1..2**63-1: a stamp from before this
    clock's zero becomes 1, the oldest there is (so its price is stale, never "from the future"),
    and one past the end saturates."""
    return min(max(sent_ns + offset, 1), MAX_I64)


def _wrap64(x: int) -> int:
    return ((x + (1 << 63)) & MAX_U64) - (1 << 63)


def _readonly(name: str) -> property:
    return property(lambda self: getattr(self, name))


class PriceFeedDecoder:
    """Frames, parses and writes price ticks into a price book (either implementation).

    feed() processes every complete frame of buf[start:end] and returns the offset just past
    the last delimiter consumed; the caller keeps the unterminated rest for the next call.
    Each valid tick is written and published at once, so the first tick of a batch reaches
    readers without waiting for the rest of it. A tick with sent_ns != 0 records
    CLOCK_MONOTONIC right after its write minus sent_ns (the compiled decoder reads back the
    write's own write_ns stamp instead, a few ns earlier and one clock read cheaper).

    clock_offset (ns, 0 by default) is added to every non-zero sent_ns before the write, so the
    book holds the Gateway's send times on this host's clock when the Gateway's is another
    host's (processes.orderbook.clock decides the offset; on the hot path it is one add). The
    recorded latencies are then on this host's clock too: write - sent_ns - clock_offset, from
    the stamp as sent (shift_sent_ns may clamp the one written), so a latency plus the offset
    is always the raw write - send.
    """

    frames = _readonly("_frames")          # non-empty frames seen == ticks + malformed + unknown
    ticks = _readonly("_ticks")
    malformed = _readonly("_malformed")
    unknown = _readonly("_unknown")
    empty = _readonly("_empty")
    gaps = _readonly("_gaps")              # saturates at 2**64-1 (hostile sequence numbers)
    seq_resets = _readonly("_seq_resets")
    latency_dropped = _readonly("_latency_dropped")
    book = _readonly("_book")
    max_frame = _readonly("_max_frame")
    latency_capacity = _readonly("_latency_capacity")
    delimiter = _readonly("_delimiter")

    def __init__(
        self,
        book: Any,
        max_frame: int = 256,
        latency_capacity: int = 65536,
        on_reject: Callable[[bytes, str], Any] | None = None,
        delimiter: bytes = b"*",
    ) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1")
        if latency_capacity < 0:
            raise ValueError("latency_capacity must be >= 0")
        symbols = tuple(book.symbols)
        check_delimiter(delimiter, symbols)
        self._book = book
        self._index = {s.encode("ascii"): i for i, s in enumerate(symbols)}
        self._last_seq = [0] * len(symbols)
        self._sym_gaps = [0] * len(symbols)
        self._max_frame = max_frame
        self._delimiter = delimiter
        self._latency_capacity = latency_capacity
        self._lat = array.array("q", bytes(8 * latency_capacity))
        self._nlat = 0
        self.on_reject = on_reject
        self._frames = self._ticks = self._malformed = self._unknown = self._empty = 0
        self._gaps = self._seq_resets = self._latency_dropped = 0
        self._clock_offset = 0

    @property
    def clock_offset(self) -> int:
        """ns added to every tick's sent_ns (not to a 0, which means "no stamp") before it is
        written: the Gateway's clock onto this host's."""
        return self._clock_offset

    @clock_offset.setter
    def clock_offset(self, ns: int) -> None:
        self._clock_offset = check_clock_offset(ns)

    def rebind(self, book: Any) -> None:
        """Write into `book` from now on (a re-created segment with the same symbols); the
        gap accounting and counters carry on."""
        if tuple(book.symbols) != tuple(self._book.symbols):
            raise ValueError("rebind: the new book has other symbols")
        self._book = book

    def feed(self, buf: bytes | bytearray | memoryview, start: int, end: int) -> int:
        """Process the complete frames in buf[start:end]; return the offset past the last one.

        Raises FrameTooLong (after processing the frames before it) for a frame, or an
        unterminated tail, longer than max_frame."""
        mv = memoryview(buf)
        if not 0 <= start <= end <= mv.nbytes:
            raise ValueError(f"bad range [{start}, {end}) of a {mv.nbytes}-byte buffer")
        data = mv[start:end].tobytes()
        delim = self._delimiter
        last = data.rfind(delim)
        pos = start
        if last >= 0:
            max_frame = self._max_frame
            for frame in data[:last].split(delim):
                flen = len(frame)
                if not flen:
                    self._empty += 1
                elif flen > max_frame:
                    raise FrameTooLong(flen, max_frame, pos)
                else:
                    self._tick(frame)
                pos += flen + 1
        if end - pos > self._max_frame:
            raise FrameTooLong(end - pos, self._max_frame, pos, partial=True)
        return pos

    def _tick(self, frame: bytes) -> None:
        parsed = parse_price_frame(frame)
        if isinstance(parsed, str):
            self._frames += 1
            self._malformed += 1
            if self.on_reject is not None:
                self.on_reject(frame, parsed)
            return
        sym, price, seq, sent_ns = parsed
        i = self._index.get(sym)
        if i is None:
            self._frames += 1
            self._unknown += 1
            if self.on_reject is not None:
                self.on_reject(frame, unknown_symbol_reason(sym))
            return
        if seq:  # seq == prev is the snapshot sent on reconnect
            prev = self._last_seq[i]
            if seq > prev + 1 and prev:
                self._gaps = min(self._gaps + seq - prev - 1, MAX_U64)
                self._sym_gaps[i] = min(self._sym_gaps[i] + seq - prev - 1, MAX_U64)
            elif seq < prev:
                self._seq_resets += 1
            self._last_seq[i] = seq
        written = sent_ns
        if sent_ns and self._clock_offset:
            written = shift_sent_ns(sent_ns, self._clock_offset)
        self._book.write(i, price, written, seq)
        now = time.monotonic_ns()
        self._book.publish()
        if sent_ns:
            if self._nlat < self._latency_capacity:
                # From the stamp as sent, not as clamped, so sample + clock_offset is always
                # the raw write - send; wrapped to int64 as the compiled decoder's is.
                self._lat[self._nlat] = _wrap64(now - sent_ns - self._clock_offset)
                self._nlat += 1
            else:
                self._latency_dropped += 1
        self._frames += 1
        self._ticks += 1

    def take_latencies(self) -> Any:
        """Recorded write-time minus sent_ns (ns) as a new int64 numpy array; empties the
        buffer, so recording resumes if it was full."""
        import numpy as np  # lazily: importing ext must not pay for numpy

        out = np.frombuffer(self._lat, dtype=np.int64, count=self._nlat).copy()
        self._nlat = 0
        return out

    def last_seqs(self) -> list[int]:
        return list(self._last_seq)

    def gaps_by_symbol(self) -> list[int]:
        """Missing sequence numbers per symbol (book order); they sum to gaps, saturating."""
        return list(self._sym_gaps)

    def __repr__(self) -> str:
        return f"<PriceFeedDecoder {self._ticks} ticks into {self._book!r} (python)>"


# --------------------------------------------------------------------------- encoder
def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MAX_U64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MAX_U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MAX_U64
    return state, z ^ (z >> 31)


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MAX_U64


def random_seed() -> int:
    """A non-zero 64-bit seed from os.urandom (0 means "pick one")."""
    seed = 0
    while not seed:
        seed = int.from_bytes(os.urandom(8), "little")
    return seed


def check_encoder_args(symbols: Sequence[str], volatility: float, seed: int) -> tuple[str, ...]:
    syms = validate_symbols(symbols)
    if not (math.isfinite(volatility) and volatility >= 0):
        raise ValueError(f"volatility must be a finite number >= 0, got {volatility!r}")
    if not 0 <= seed <= MAX_U64:
        raise ValueError(f"seed must be 0..2**64-1, got {seed}")
    return syms


def check_batch_args(n: int, sent_ns: int) -> None:
    if not 0 <= n <= MAX_BATCH:
        raise ValueError(f"n must be 0..{MAX_BATCH}, got {n}")
    if not 0 <= sent_ns <= MAX_I64:
        raise ValueError(f"sent_ns must be 0..2**63-1, got {sent_ns}")


class TickEncoder:
    """The Gateway's per-symbol geometric random walk and price-frame formatter.

    Deterministic for a given seed (seed 0 draws one from os.urandom; ``seed`` tells which).
    Each tick: p *= 1 + volatility * z, clamped to [0.01, 1e9] so every frame stays
    parseable; sent as cents = floor(p * 100 + 0.5).
    """

    seed = _readonly("_seed")
    volatility = _readonly("_volatility")

    def __init__(self, symbols: list[str], volatility: float, seed: int) -> None:
        syms = check_encoder_args(symbols, volatility, seed)
        self._seed: int = seed or random_seed()
        self._volatility = float(volatility)
        self._syms = [s.encode("ascii") for s in syms]
        state = self._seed
        words = []
        for _ in range(4):
            state, z = _splitmix64(state)
            words.append(z)
        self._s = words
        self._spare = 0.0
        self._has_spare = False
        self._p = [20.0 + 480.0 * self._uniform() for _ in syms]
        self._seq = [0] * len(syms)
        self._next = 0

    def _next_u64(self) -> int:
        s0, s1, s2, s3 = self._s
        result = (_rotl((s1 * 5) & MAX_U64, 7) * 9) & MAX_U64
        t = (s1 << 17) & MAX_U64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        self._s = [s0, s1, s2, _rotl(s3, 45)]
        return result

    def _uniform(self) -> float:
        """[0, 1) from the top 53 bits."""
        return (self._next_u64() >> 11) * _INV_2_53

    def _gauss(self) -> float:
        if self._has_spare:
            self._has_spare = False
            return self._spare
        u1 = 1.0 - self._uniform()  # (0, 1]: log() never sees 0
        u2 = self._uniform()
        r = math.sqrt(-2.0 * math.log(u1))
        theta = _TWO_PI * u2
        self._spare = r * math.sin(theta)
        self._has_spare = True
        return r * math.cos(theta)

    @staticmethod
    def _cents(p: float) -> int:
        return max(math.floor(p * 100.0 + 0.5), 1)

    def _frame(self, i: int, sent_ns: int, plain: bool) -> bytes:
        c = self._cents(self._p[i])
        if plain:
            return b"%s,%d.%02d*" % (self._syms[i], c // 100, c % 100)
        return b"%s,%d.%02d,%d,%d*" % (self._syms[i], c // 100, c % 100, self._seq[i], sent_ns)

    def batch(self, n: int, sent_ns: int, plain: bool = False) -> bytes:
        """n ticks, round-robin over symbols from where the last batch stopped, as one buffer."""
        check_batch_args(n, sent_ns)
        vol, prices, seqs, count = self._volatility, self._p, self._seq, len(self._syms)
        i = self._next
        out = []
        for _ in range(n):
            p = prices[i] * (1.0 + vol * self._gauss())
            if p < MIN_PRICE:
                p = MIN_PRICE
            elif p > MAX_PRICE:
                p = MAX_PRICE
            prices[i] = p
            seqs[i] += 1
            out.append(self._frame(i, sent_ns, plain))
            i += 1
            if i == count:
                i = 0
        self._next = i
        return b"".join(out)

    def snapshot(self, sent_ns: int, plain: bool = False) -> bytes:
        """Every symbol's current price and seq (no walk step), for a client that just
        connected."""
        check_batch_args(0, sent_ns)
        return b"".join(self._frame(i, sent_ns, plain) for i in range(len(self._syms)))

    @property
    def prices(self) -> list[float]:
        """Current prices as sent: cents / 100."""
        return [self._cents(p) / 100 for p in self._p]

    @property
    def seqs(self) -> list[int]:
        return list(self._seq)

    @property
    def symbols(self) -> list[bytes]:
        return list(self._syms)

    def __repr__(self) -> str:
        return f"<TickEncoder {len(self._syms)} symbols seed={self._seed} (python)>"
