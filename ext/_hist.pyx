# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Latency histogram with HdrHistogram's buckets (3 significant digits), recorded in O(1).

Why native: folding raw samples into buckets from Python (numpy unique, dict updates) costs a few
hundred microseconds of cold-cache time per fold, and a real-time process that folds on a timer
holds every tick behind it: that was the p99 of tick -> decision. Here a record is a bit length,
a shift and an increment; there is nothing to fold, and a snapshot is one scan of the counts.

Bucket of a value v (1 <= v <= HIGHEST): below 2048 every value has its own bucket; above, v keeps
its 11 leading bits (shift = bit_length(v) - 11), exactly the value HdrHistogram(1, HIGHEST, 3)
reports for it (get_lowest_equivalent_value). ext/hist_py.py is the pure-Python twin.
"""

from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

cdef enum:
    SUB_BITS = 11                  # 2048 sub-buckets: 3 significant digits
    HALF = 1024
    MAX_SHIFT = 25                 # bit_length(HIGHEST) - SUB_BITS
    NBUCKETS = 2048 + MAX_SHIFT * HALF

cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil

cdef int64_t C_HIGHEST = 60_000_000_000   # ns; beyond is a clock or feed bug, clamped
HIGHEST = C_HIGHEST
NUM_BUCKETS = NBUCKETS


cdef inline Py_ssize_t _index(int64_t v) noexcept nogil:
    cdef int shift
    if v < 2048:
        return <Py_ssize_t>v
    shift = (64 - __builtin_clzll(<unsigned long long>v)) - SUB_BITS
    return 2048 + (shift - 1) * HALF + <Py_ssize_t>((v >> shift) - HALF)


cdef inline int64_t _value(Py_ssize_t i) noexcept nogil:
    cdef int shift
    if i < 2048:
        return <int64_t>i
    shift = <int>((i - 2048) // HALF) + 1
    return (<int64_t>((i - 2048) % HALF + HALF)) << shift




cdef inline Py_ssize_t _varint(unsigned char *p, Py_ssize_t pos, uint64_t x) noexcept nogil:
    """LEB128: 7 bits a byte, low first, high bit = more follows; returns the new end."""
    while x >= 0x80:
        p[pos] = <unsigned char>(x | 0x80)
        x >>= 7
        pos += 1
    p[pos] = <unsigned char>x
    return pos + 1


cdef class LatencyHistogram:
    """Counts per HdrHistogram bucket, since start and since the last window()."""

    cdef uint64_t *_counts
    cdef uint64_t *_seen          # counts at the last window() call
    cdef Py_ssize_t _lo, _hi      # non-empty buckets lie in [_lo, _hi]: scans stop there
    cdef readonly uint64_t count
    cdef readonly int64_t max

    def __cinit__(self):
        self._counts = <uint64_t *>calloc(NBUCKETS, sizeof(uint64_t))
        self._seen = <uint64_t *>calloc(NBUCKETS, sizeof(uint64_t))
        if self._counts == NULL or self._seen == NULL:
            raise MemoryError()
        self.count = 0
        self.max = 0
        self._lo = NBUCKETS
        self._hi = -1

    def __dealloc__(self):
        free(self._counts)
        free(self._seen)

    cpdef void record(self, int64_t v):
        """One sample in ns (an int64; OverflowError beyond), clamped to [1, HIGHEST]."""
        cdef Py_ssize_t i
        if v < 1:
            v = 1
        elif v > C_HIGHEST:
            v = C_HIGHEST
        i = _index(v)
        self._counts[i] += 1
        if i < self._lo:
            self._lo = i
        if i > self._hi:
            self._hi = i
        self.count += 1
        if v > self.max:
            self.max = v

    def record_many(self, const int64_t[:] values):
        """Samples recorded elsewhere (e.g. the price decoder's own buffer)."""
        cdef Py_ssize_t k
        for k in range(values.shape[0]):
            self.record(values[k])

    def encode(self, bint window=False):
        """The non-empty buckets as bytes: LEB128 varints (index - previous index, count), since
        start, or since the previous encode(window=True) / window() call. Much cheaper to
        publish than a JSON list of pairs; hist_py.decode() reads it back."""
        cdef Py_ssize_t i, prev = -1, n = 0, pos = 0
        cdef uint64_t c
        cdef bytearray out
        cdef unsigned char *p
        for i in range(self._lo, self._hi + 1):
            if self._counts[i] != (self._seen[i] if window else 0):
                n += 1
        out = bytearray(n * 20)
        p = out
        for i in range(self._lo, self._hi + 1):
            c = self._counts[i] - (self._seen[i] if window else 0)
            if c == 0:
                continue
            pos = _varint(p, pos, <uint64_t>(i - prev))
            pos = _varint(p, pos, c)
            prev = i
        if window and self._hi >= self._lo:
            memcpy(&self._seen[self._lo], &self._counts[self._lo],
                   (self._hi - self._lo + 1) * sizeof(uint64_t))
        return bytes(out[:pos])

    def encode_both(self):
        """(encode(), encode(window=True)) in two passes over the buckets instead of four: what
        a stats snapshot publishes, once a second, on the core the ticks need."""
        cdef Py_ssize_t i, prev = -1, wprev = -1, n = 0, wn = 0, pos = 0, wpos = 0
        cdef uint64_t c, w
        cdef bytearray out, wout
        cdef unsigned char *p
        cdef unsigned char *q
        for i in range(self._lo, self._hi + 1):
            c = self._counts[i]
            if c:
                n += 1
                if c != self._seen[i]:
                    wn += 1
        out = bytearray(n * 20)
        wout = bytearray(wn * 20)
        p = out
        q = wout
        for i in range(self._lo, self._hi + 1):
            c = self._counts[i]
            if c == 0:
                continue
            pos = _varint(p, pos, <uint64_t>(i - prev))
            pos = _varint(p, pos, c)
            prev = i
            w = c - self._seen[i]
            if w:
                wpos = _varint(q, wpos, <uint64_t>(i - wprev))
                wpos = _varint(q, wpos, w)
                wprev = i
        if self._hi >= self._lo:
            memcpy(&self._seen[self._lo], &self._counts[self._lo],
                   (self._hi - self._lo + 1) * sizeof(uint64_t))
        return bytes(out[:pos]), bytes(wout[:wpos])

    def pairs(self):
        """[(bucket value, count)] of every non-empty bucket, since start."""
        cdef Py_ssize_t i
        return [(_value(i), self._counts[i]) for i in range(self._lo, self._hi + 1)
                if self._counts[i]]

    def window(self):
        """[(bucket value, count)] recorded since the previous window() call."""
        cdef Py_ssize_t i
        cdef list out = []
        for i in range(self._lo, self._hi + 1):
            if self._counts[i] != self._seen[i]:
                out.append((_value(i), self._counts[i] - self._seen[i]))
        if self._hi >= self._lo:
            memcpy(&self._seen[self._lo], &self._counts[self._lo],
                   (self._hi - self._lo + 1) * sizeof(uint64_t))
        return out


def bucket_value(int64_t v):
    """The bucket (lowest equivalent value) a sample lands in."""
    if v < 1:
        v = 1
    elif v > C_HIGHEST:
        v = C_HIGHEST
    return _value(_index(v))
