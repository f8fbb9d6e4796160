# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True, binding=False, embedsignature=True
"""Price-feed codec (compiled): PriceFeedDecoder and TickEncoder.

The decoder frames, parses and writes every tick of a receive buffer into the shared price
book in one C loop: no Python object and no Python call per valid frame. The encoder is the
Gateway's random walk and formatter. ext/wire_py.py is the pure-Python twin; it documents
the frame grammar and the RNG, and it is the single source of FrameTooLong and of the reject
reasons (asked for only when a frame is rejected and on_reject is set: the cold path).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF
from libc.math cimport cos, floor, log, sin, sqrt
from libc.stdint cimport INT64_MAX, UINT64_MAX, int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memchr, memcpy, memset

from ext._pricebook cimport SharedPriceBook, tsb_payload

from ext.wire_py import (
    MAX_PRICE_DIGITS,
    FrameTooLong,
    check_batch_args,
    check_clock_offset,
    check_delimiter,
    check_encoder_args,
    parse_price_frame,
    random_seed,
    unknown_symbol_reason,
)

__all__ = ["FrameTooLong", "PriceFeedDecoder", "TickEncoder"]

cdef enum:
    COMMA = 44
    DOT = 46
    ZERO = 48
    MAX_DIGITS = 15              # == wire_py.MAX_PRICE_DIGITS (checked below)
    KEY_BYTES = 16               # symbols are <= 15 ASCII bytes (ext.layout), keyed as 2 words
    TICK_BOUND = 72              # max bytes per formatted tick: 15+1 + 13 + 1+20 + 1+19+1 + pad
    BATCH_SLACK = 32             # lets the formatter copy fixed-size blocks past the end

cdef extern from "Python.h":
    # The same function, declared to return a raw reference: _PyBytes_Resize needs the
    # only reference in a PyObject * it may move.
    PyObject *_new_bytes "PyBytes_FromStringAndSize" (const char *v, Py_ssize_t n) except NULL

cdef double MAX_PRICE = 1e9
cdef double MIN_PRICE = 0.01
cdef double TWO_PI = 6.283185307179586            # == 2.0 * math.pi
cdef double INV_2_53 = 1.0 / 9007199254740992.0
cdef double POW10[MAX_DIGITS + 1]                  # exact doubles 1e0..1e15
cdef uint64_t POW10_U[20]                          # 1..1e19, for digit counting
cdef char PAIRS[200]                               # "00".."99": two digits per division
cdef uint64_t KEEP[9]                              # KEEP[n] keeps a word's first n bytes

for _k in range(MAX_DIGITS + 1):
    POW10[_k] = float(10 ** _k)
for _k in range(20):
    POW10_U[_k] = 10 ** _k
cdef bytes _pairs = b"".join(b"%02d" % _k for _k in range(100))
memcpy(PAIRS, <char *>_pairs, 200)
cdef bytes _keep
for _k in range(9):
    _keep = b"\xff" * _k + b"\0" * (8 - _k)      # through memory: right on any endianness
    memcpy(&KEEP[_k], <char *>_keep, 8)
if MAX_PRICE_DIGITS != MAX_DIGITS:
    raise ImportError("ext._wire is out of step with ext.wire_py (MAX_PRICE_DIGITS)")


# ------------------------------------------------------------------ parsing
cdef struct Tick:
    const unsigned char *sym
    Py_ssize_t symlen
    double price
    uint64_t seq
    int64_t sent_ns


cdef inline unsigned int _digit(unsigned char c) noexcept nogil:
    return <unsigned int>c - <unsigned int>ZERO       # > 9 unless c is '0'..'9'


cdef inline const unsigned char *_uint(const unsigned char *q, const unsigned char *e,
                                       uint64_t limit, uint64_t *out) noexcept nogil:
    """Digits at q (at least one) as an integer <= limit (>= 10**18); returns the end of
    the digits, or NULL."""
    cdef const unsigned char *s = q
    cdef uint64_t v = 0
    cdef unsigned int d
    while q < e:
        d = _digit(q[0])
        if d > 9:
            break
        v = v * 10 + d                    # may wrap past 18 digits: checked below, not here
        q += 1
    if q == s:
        return NULL
    if q - s > 18:                        # rare (huge, or many leading zeros): check exactly
        v = 0
        while s < q:
            d = _digit(s[0])
            if v > (limit - d) // 10:
                return NULL
            v = v * 10 + d
            s += 1
    out[0] = v
    return q


cdef inline bint _parse(const unsigned char *p, const unsigned char *e, Tick *t) noexcept nogil:
    """True with the fields in *t iff p..e is a valid frame, exactly as
    wire_py.parse_price_frame decides (which also says why when it is not)."""
    cdef const unsigned char *q = p
    cdef const unsigned char *s
    cdef uint64_t m = 0, v = 0
    cdef unsigned int d
    cdef Py_ssize_t nd, k = 0
    while q < e and q[0] != COMMA:
        q += 1
    if q == p or q == e:                  # empty symbol, or one field
        return False
    t.sym = p
    t.symlen = q - p
    q += 1
    # PRICE: digits[.digits]; leading zeros of the integer part are not significant.
    if q == e or _digit(q[0]) > 9:
        return False
    while q < e and q[0] == ZERO:
        q += 1
    s = q
    while q < e:
        d = _digit(q[0])
        if d > 9:
            break
        m = m * 10 + d                    # may wrap past 19 digits: rejected below anyway
        q += 1
    nd = q - s
    if q < e and q[0] == DOT:
        s = q + 1
        q = s
        while q < e:
            d = _digit(q[0])
            if d > 9:
                break
            m = m * 10 + d
            q += 1
        k = q - s
        if k == 0:
            return False
    if nd + k > MAX_DIGITS:
        return False
    # Both operands exact (m < 10**15 < 2**53): one correctly rounded division == float(text).
    t.price = <double>m / POW10[k]
    if not (t.price > 0.0 and t.price <= MAX_PRICE):
        return False
    if q == e:
        t.seq = 0
        t.sent_ns = 0
        return True
    if q[0] != COMMA:
        return False
    # Exactly four fields are SEQ,SENT_NS; any other count is fields we do not use.
    s = q + 1
    nd = 0
    while s < e:
        if s[0] == COMMA:
            nd += 1
        s += 1
    if nd != 1:
        t.seq = 0
        t.sent_ns = 0
        return True
    q = _uint(q + 1, e, UINT64_MAX, &t.seq)
    if q == NULL or q == e or q[0] != COMMA:
        return False
    q = _uint(q + 1, e, <uint64_t>INT64_MAX, &v)
    if q != e:                            # NULL, or anything after SENT_NS
        return False
    t.sent_ns = <int64_t>v
    return True


cdef inline int64_t _shift(int64_t sent, int64_t offset) noexcept nogil:
    """sent (1..2**63-1) + offset (|offset| <= 2**63-1), kept in 1..2**63-1 as
    wire_py.shift_sent_ns keeps it."""
    if offset > 0:
        return INT64_MAX if sent > INT64_MAX - offset else sent + offset
    sent += offset                        # >= 1 - INT64_MAX: no overflow
    return sent if sent > 0 else 1


# ------------------------------------------------------------------ symbol table
cdef struct SymKey:
    uint64_t w[2]                 # the symbol's bytes, zero padded
    Py_ssize_t length             # 0: empty bucket (symbols are never empty)
    Py_ssize_t slot


cdef inline void _key(const unsigned char *s, Py_ssize_t n, const unsigned char *e,
                      uint64_t *w) noexcept nogil:
    """Symbol s[:n] (n <= 15, s + n <= e) as two zero-padded words."""
    if e - s >= KEY_BYTES:
        # Two word loads, masked: a byte-wise copy reloaded as words would stall on store
        # forwarding (it was the single hottest instruction of the decoder).
        memcpy(&w[0], s, 8)
        memcpy(&w[1], s + 8, 8)
        if n <= 8:
            w[0] &= KEEP[n]
            w[1] = 0
        else:
            w[1] &= KEEP[n - 8]
    else:
        w[0] = 0
        w[1] = 0
        memcpy(w, s, n)


cdef inline uint64_t _hash(const uint64_t *w) noexcept nogil:
    cdef uint64_t h = (w[0] * 0x9E3779B97F4A7C15ULL + w[1]) * 0xBF58476D1CE4E5B9ULL
    return h ^ (h >> 31)


# ------------------------------------------------------------------ decoder
cdef class PriceFeedDecoder:
    """Frames, parses and writes price ticks into a compiled SharedPriceBook.

    feed() processes every complete frame of buf[start:end] and returns the offset just past
    the last delimiter consumed; the caller keeps the unterminated rest for the next call.
    Each valid tick is written and published at once (publish is one atomic add unless a
    reader sleeps), so the first tick of a batch reaches readers before the rest is parsed.
    clock_offset is added to every non-zero sent_ns before the write (ext.wire_py's decoder
    says why).
    """

    cdef readonly SharedPriceBook book
    cdef readonly Py_ssize_t max_frame
    cdef readonly Py_ssize_t latency_capacity
    cdef readonly bytes delimiter
    cdef public object on_reject
    cdef readonly uint64_t frames           # non-empty frames == ticks + malformed + unknown
    cdef readonly uint64_t ticks
    cdef readonly uint64_t malformed
    cdef readonly uint64_t unknown
    cdef readonly uint64_t empty
    cdef readonly uint64_t gaps             # saturates at 2**64-1 (hostile sequence numbers)
    cdef readonly uint64_t seq_resets
    cdef readonly uint64_t latency_dropped
    cdef int64_t _clock_offset
    cdef unsigned char _delim
    cdef SymKey *_table
    cdef uint64_t _mask
    cdef Py_ssize_t _nslots
    cdef uint64_t *_last_seq
    cdef uint64_t *_sym_gaps              # per symbol; touched only when a gap occurs
    cdef int64_t *_lat
    cdef Py_ssize_t _nlat

    def __init__(self, book, Py_ssize_t max_frame=256, Py_ssize_t latency_capacity=65536,
                 on_reject=None, delimiter=b"*"):
        cdef Py_ssize_t n, size, slot
        cdef uint64_t w[2]
        cdef SymKey *b
        cdef bytes key
        if not isinstance(book, SharedPriceBook):
            raise TypeError(
                f"the compiled PriceFeedDecoder needs an ext._pricebook.SharedPriceBook, got "
                f"{type(book).__module__}.{type(book).__qualname__}; use ext.wire_py with the "
                "pure-Python book")
        if self._table != NULL:
            raise RuntimeError("PriceFeedDecoder.__init__ called twice")
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1")
        if latency_capacity < 0:
            raise ValueError("latency_capacity must be >= 0")
        symbols = tuple(book.symbols)
        self._delim = check_delimiter(delimiter, symbols)
        n = len(symbols)
        size = 8
        while size < 2 * n:              # load <= 1/2: short probes, and always an empty bucket
            size *= 2
        self._table = <SymKey *>calloc(size, sizeof(SymKey))
        self._last_seq = <uint64_t *>calloc(n if n else 1, sizeof(uint64_t))
        self._sym_gaps = <uint64_t *>calloc(n if n else 1, sizeof(uint64_t))
        self._lat = <int64_t *>malloc((latency_capacity or 1) * sizeof(int64_t))
        if (self._table == NULL or self._last_seq == NULL or self._sym_gaps == NULL
                or self._lat == NULL):
            raise MemoryError()
        self._mask = size - 1
        for slot in range(n):
            key = symbols[slot].encode("ascii")
            if not 0 < len(key) < KEY_BYTES:
                raise ValueError(f"symbol {symbols[slot]!r} is not 1..{KEY_BYTES - 1} bytes")
            _key(<const unsigned char *>(<char *>key), len(key),
                 <const unsigned char *>(<char *>key) + len(key), w)
            b = self._bucket(w, len(key))
            if b.length:
                raise ValueError(f"duplicate symbol {symbols[slot]!r}")
            b.w[0] = w[0]
            b.w[1] = w[1]
            b.length = len(key)
            b.slot = slot
        self._nslots = n
        self.book = book
        self.max_frame = max_frame
        self.latency_capacity = latency_capacity
        self.delimiter = delimiter
        self.on_reject = on_reject

    @property
    def clock_offset(self):
        """ns added to every tick's sent_ns (not to a 0, which means "no stamp") before it is
        written: the Gateway's clock onto this host's (ext.wire_py.check_clock_offset)."""
        return self._clock_offset

    @clock_offset.setter
    def clock_offset(self, ns):
        self._clock_offset = check_clock_offset(ns)

    def rebind(self, SharedPriceBook book not None):
        """Write into `book` from now on (a re-created segment with the same symbols); the
        gap accounting and counters carry on."""
        if tuple(book.symbols) != tuple(self.book.symbols):
            raise ValueError("rebind: the new book has other symbols")
        self.book = book

    def __dealloc__(self):
        free(self._table)
        free(self._last_seq)
        free(self._sym_gaps)
        free(self._lat)

    cdef inline SymKey *_bucket(self, const uint64_t *w, Py_ssize_t n) noexcept:
        """The bucket holding key (w, n), or the empty bucket where it would go."""
        cdef uint64_t h = _hash(w)
        cdef SymKey *b
        while True:                       # linear probing; the table is never full
            b = &self._table[h & self._mask]
            if b.length == 0 or (b.w[0] == w[0] and b.w[1] == w[1] and b.length == n):
                return b
            h += 1

    cdef inline Py_ssize_t _lookup(self, const unsigned char *s, Py_ssize_t n,
                                   const unsigned char *e) noexcept:
        """Slot of symbol s[:n] (s + n < e), -1 if unknown."""
        cdef uint64_t w[2]
        cdef SymKey *b
        if n >= KEY_BYTES:
            return -1
        _key(s, n, e, w)
        b = self._bucket(w, n)
        return b.slot if b.length else -1

    def feed(self, const unsigned char[:] buf not None, Py_ssize_t start, Py_ssize_t end):
        """Process the complete frames in buf[start:end]; return the offset past the last one.

        Raises FrameTooLong (after processing the frames before it) for a frame, or an
        unterminated tail, longer than max_frame."""
        cdef const unsigned char *base
        cdef const unsigned char *p
        cdef const unsigned char *e
        cdef const unsigned char *d
        cdef Py_ssize_t flen, i
        cdef Tick t
        if self._table == NULL:
            raise ValueError("PriceFeedDecoder.__init__ was not called")
        if not 0 <= start <= end <= buf.shape[0]:
            raise ValueError(f"bad range [{start}, {end}) of a {buf.shape[0]}-byte buffer")
        if start == end:
            return start                  # &buf[0] does not exist for an empty buffer
        base = &buf[0]
        p = base + start
        e = base + end
        while True:
            d = <const unsigned char *>memchr(p, self._delim, e - p)
            if d == NULL:
                break
            flen = d - p
            if flen == 0:
                self.empty += 1
            elif flen > self.max_frame:
                raise FrameTooLong(flen, self.max_frame, p - base)
            elif not _parse(p, d, &t):
                self._reject(p, flen, 0)
            else:
                i = self._lookup(t.sym, t.symlen, e)
                if i < 0:
                    self._reject(p, flen, t.symlen)
                else:
                    self._tick(i, &t)
            p = d + 1
        if e - p > self.max_frame:
            raise FrameTooLong(e - p, self.max_frame, p - base, True)
        return p - base

    cdef inline int _tick(self, Py_ssize_t i, Tick *t) except -1:
        # Gap/reset accounting (seq == prev is the snapshot sent on reconnect), written so that
        # nothing overflows at 2**64-1.
        cdef uint64_t seq = t.seq, prev, g
        cdef int64_t wns, sent = t.sent_ns
        if seq:
            prev = self._last_seq[i]
            if prev and seq > prev and seq - prev > 1:
                g = self.gaps + (seq - prev - 1)
                self.gaps = g if g >= self.gaps else UINT64_MAX
                g = self._sym_gaps[i] + (seq - prev - 1)
                self._sym_gaps[i] = g if g >= self._sym_gaps[i] else UINT64_MAX
            elif seq < prev:
                self.seq_resets += 1
            self._last_seq[i] = seq
        if sent and self._clock_offset:
            sent = _shift(sent, self._clock_offset)
        # The write returns its own CLOCK_MONOTONIC stamp (write_ns, taken inside the write),
        # or 0 when it was skipped (the lock stayed held): no read-back of our own slot, which a
        # foreign process could hold odd, and no second clock read.
        wns = self.book.write_c(i, t.price, sent, seq)
        self.book.publish_c()
        if sent and wns:
            if self._nlat < self.latency_capacity:
                # From the stamp as sent, not as clamped, so sample + clock_offset is always
                # the raw write - send the clock check needs; unsigned: wraps, never UB.
                self._lat[self._nlat] = <int64_t>(<uint64_t>wns - <uint64_t>t.sent_ns
                                                  - <uint64_t>self._clock_offset)
                self._nlat += 1
            else:
                self.latency_dropped += 1
        self.frames += 1
        self.ticks += 1
        return 0

    cdef int _reject(self, const unsigned char *p, Py_ssize_t n, Py_ssize_t symlen) except -1:
        """Count a rejected frame (symlen > 0: valid but unknown symbol) and report it."""
        self.frames += 1
        if symlen:
            self.unknown += 1
        else:
            self.malformed += 1
        if self.on_reject is None:
            return 0
        frame = PyBytes_FromStringAndSize(<const char *>p, n)
        if symlen:
            reason = unknown_symbol_reason(frame[:symlen])
        else:
            reason = parse_price_frame(frame)
            if not isinstance(reason, str):   # the two parsers disagree: a bug, make it loud
                reason = f"internal error: compiled parser rejected a valid frame {frame[:64]!r}"
        self.on_reject(frame, reason)
        return 0

    def take_latencies(self):
        """Recorded write-time minus sent_ns (ns) as a new int64 numpy array; empties the
        buffer, so recording resumes if it was full."""
        import numpy as np  # lazily: importing ext must not pay for numpy
        cdef int64_t[::1] view
        out = np.empty(self._nlat, dtype=np.int64)
        if self._nlat:
            view = out
            memcpy(&view[0], self._lat, self._nlat * sizeof(int64_t))
        self._nlat = 0
        return out

    def last_seqs(self):
        return [self._last_seq[i] for i in range(self._nslots)]

    def gaps_by_symbol(self):
        """Missing sequence numbers per symbol (book order); they sum to gaps, saturating."""
        return [self._sym_gaps[i] for i in range(self._nslots)]

    def __repr__(self):
        return f"<PriceFeedDecoder {self.ticks} ticks into {self.book!r} (cython)>"


# ------------------------------------------------------------------ encoder
cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _splitmix64(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline char *_put_u64(char *w, uint64_t v) noexcept nogil:
    """Decimal digits of v at w; returns the end."""
    cdef int n = 1
    cdef char *q
    cdef uint64_t r
    while n < 20 and v >= POW10_U[n]:
        n += 1
    q = w + n
    while v >= 100:
        r = (v % 100) * 2
        v //= 100
        q -= 2
        q[0] = PAIRS[r]
        q[1] = PAIRS[r + 1]
    if v >= 10:
        q -= 2
        q[0] = PAIRS[v * 2]
        q[1] = PAIRS[v * 2 + 1]
    else:
        q -= 1
        q[0] = <char>(ZERO + v)
    return w + n


cdef struct Prefix:
    char text[KEY_BYTES]          # "SYM," zero padded
    Py_ssize_t length


cdef inline int64_t _cents(double p) noexcept nogil:
    cdef int64_t c = <int64_t>floor(p * 100.0 + 0.5)    # p <= 1e9: no overflow
    return c if c > 1 else 1


cdef class TickEncoder:
    """The Gateway's per-symbol geometric random walk and price-frame formatter.

    Deterministic for a given seed (seed 0 draws one from os.urandom; ``seed`` tells which),
    byte for byte the same as ext.wire_py.TickEncoder. Each tick: p *= 1 + volatility * z,
    clamped to [0.01, 1e9] so every frame stays parseable; sent as floor(p * 100 + 0.5) cents.
    """

    cdef readonly uint64_t seed
    cdef readonly double volatility
    cdef uint64_t _s[4]
    cdef double _spare
    cdef bint _has_spare
    cdef Py_ssize_t _n
    cdef Py_ssize_t _next
    cdef double *_p
    cdef uint64_t *_seq
    cdef Prefix *_prefix
    cdef tuple _syms

    def __init__(self, symbols, double volatility, seed):
        cdef Py_ssize_t i, n
        cdef uint64_t state
        cdef bytes b
        syms = check_encoder_args(symbols, volatility, seed)
        if self._p != NULL:
            raise RuntimeError("TickEncoder.__init__ called twice")
        n = len(syms)
        self._p = <double *>malloc(n * sizeof(double))
        self._seq = <uint64_t *>calloc(n, sizeof(uint64_t))
        self._prefix = <Prefix *>calloc(n, sizeof(Prefix))
        if self._p == NULL or self._seq == NULL or self._prefix == NULL:
            raise MemoryError()
        self.seed = seed or random_seed()
        self.volatility = volatility
        state = self.seed
        for i in range(4):
            self._s[i] = _splitmix64(&state)
        self._syms = tuple(s.encode("ascii") for s in syms)
        for i in range(n):
            b = self._syms[i]
            memcpy(self._prefix[i].text, <char *>b, len(b))
            self._prefix[i].text[len(b)] = COMMA
            self._prefix[i].length = len(b) + 1
            self._p[i] = 20.0 + 480.0 * self._uniform()
        self._n = n

    def __dealloc__(self):
        free(self._p)
        free(self._seq)
        free(self._prefix)

    cdef inline uint64_t _next_u64(self) noexcept:      # xoshiro256**
        cdef uint64_t *s = self._s
        cdef uint64_t result = _rotl(s[1] * 5, 7) * 9
        cdef uint64_t t = s[1] << 17
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    cdef inline double _uniform(self) noexcept:
        return <double>(self._next_u64() >> 11) * INV_2_53

    cdef inline double _gauss(self) noexcept:
        cdef double u1, u2, r, theta
        if self._has_spare:
            self._has_spare = False
            return self._spare
        u1 = 1.0 - self._uniform()        # (0, 1]: log() never sees 0
        u2 = self._uniform()
        r = sqrt(-2.0 * log(u1))
        theta = TWO_PI * u2
        self._spare = r * sin(theta)
        self._has_spare = True
        return r * cos(theta)

    cdef inline char *_put_tick(self, char *w, Py_ssize_t i, const char *suffix,
                                Py_ssize_t slen, bint plain) noexcept:
        cdef int64_t c = _cents(self._p[i])
        memcpy(w, self._prefix[i].text, KEY_BYTES)   # fixed size: 2 stores; tail overwritten
        w += self._prefix[i].length
        w = _put_u64(w, <uint64_t>(c // 100))
        w[0] = DOT
        w[1] = PAIRS[(c % 100) * 2]
        w[2] = PAIRS[(c % 100) * 2 + 1]
        w += 3
        if not plain:
            w[0] = COMMA
            w = _put_u64(w + 1, self._seq[i])
        memcpy(w, suffix, 24)             # fixed size; BATCH_SLACK covers the overrun
        return w + slen

    cdef bytes _frames(self, Py_ssize_t n, sent_ns, bint plain, bint step):
        cdef char suffix[24]
        cdef Py_ssize_t slen, k, i = self._next if step else 0
        cdef char *w
        cdef char *w0
        cdef double p
        cdef PyObject *raw
        if self._p == NULL:
            raise ValueError("TickEncoder.__init__ was not called")
        check_batch_args(n, sent_ns)
        # ",SENT_NS*" is the same for the whole batch: format it once.
        memset(suffix, 0, sizeof(suffix))
        if plain:
            suffix[0] = b"*"
            slen = 1
        else:
            suffix[0] = COMMA
            w = _put_u64(suffix + 1, <uint64_t><int64_t>sent_ns)
            w[0] = b"*"
            slen = w + 1 - suffix
        # Sized for the worst case and shrunk at the end (in place): no second copy.
        raw = _new_bytes(NULL, n * TICK_BOUND + BATCH_SLACK)
        w0 = w = PyBytes_AS_STRING(<object>raw)
        for k in range(n):
            if step:
                p = self._p[i] * (1.0 + self.volatility * self._gauss())
                if p < MIN_PRICE:
                    p = MIN_PRICE
                elif p > MAX_PRICE:
                    p = MAX_PRICE
                self._p[i] = p
                self._seq[i] += 1
            w = self._put_tick(w, i, suffix, slen, plain)
            i += 1
            if i == self._n:
                i = 0
        if step:
            self._next = i
        _PyBytes_Resize(&raw, w - w0)     # on failure it frees raw itself
        out = <bytes>raw                  # a new reference: drop the raw one
        Py_DECREF(out)
        return out

    def batch(self, Py_ssize_t n, sent_ns, bint plain=False):
        """n ticks, round-robin over symbols from where the last batch stopped, as one buffer."""
        return self._frames(n, sent_ns, plain, True)

    def snapshot(self, sent_ns, bint plain=False):
        """Every symbol's current price and seq (no walk step), for a client that just
        connected."""
        return self._frames(self._n, sent_ns, plain, False)

    @property
    def prices(self):
        """Current prices as sent: cents / 100."""
        return [<double>_cents(self._p[i]) / 100.0 for i in range(self._n)]

    @property
    def seqs(self):
        return [self._seq[i] for i in range(self._n)]

    @property
    def symbols(self):
        return list(self._syms)

    def __repr__(self):
        return f"<TickEncoder {self._n} symbols seed={self.seed} (cython)>"
